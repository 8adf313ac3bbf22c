"""Disposal API under ``/governance/v1``: run disposal now (or a dry run), list past runs.

A run is synchronous: the answer says what was removed. Large first disposals of a big
database are better run with ``urbanhub dispose``, which no HTTP timeout cuts short.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from starlette.concurrency import run_in_threadpool

from urbanhub.api.jsonld import hub_of
from urbanhub.api.problems import problem_responses
from urbanhub.api.security import CallerDep
from urbanhub.governance.retention import DatasetDisposal, DisposalRun
from urbanhub.model.governance import format_duration
from urbanhub.ngsild.timeutil import format_datetime

router = APIRouter(prefix="/governance/v1", tags=["Retention"],
                   responses=problem_responses(400, 401, 403, 409))


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class DatasetDisposalOut(_Camel):
    dataset: str
    retention: str = Field(description="The dataset's retention period (ISO 8601).")
    cutoff: str = Field(description="Data observed before this time was removed.")
    history_rows: int
    removed_from: str | None = Field(description="Oldest observation time removed.")
    removed_until: str | None = Field(description="Newest observation time removed.")
    rollup_hours: int
    quality_flags: int
    attribute_values: int = Field(description="Expired current values of entities kept.")
    entities: int = Field(description="Entities deleted whole.")
    partitions_dropped: list[str]


class DisposalRunOut(_Camel):
    run_id: str
    at: str
    actor: str
    dry_run: bool
    complete: bool = Field(description="False when the run was stopped before the end.")
    totals: dict[str, int]
    partitions_dropped: list[str]
    datasets: list[DatasetDisposalOut]


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else format_datetime(moment)


def _dataset_out(figures: DatasetDisposal) -> DatasetDisposalOut:
    return DatasetDisposalOut(
        dataset=figures.dataset_id, retention=format_duration(figures.retention),
        cutoff=format_datetime(figures.cutoff), history_rows=figures.history.rows,
        removed_from=_time(figures.history.first), removed_until=_time(figures.history.last),
        rollup_hours=figures.rollup_hours, quality_flags=figures.quality_flags,
        attribute_values=figures.attribute_values, entities=figures.entities,
        partitions_dropped=figures.partitions)


def run_out(run: DisposalRun) -> DisposalRunOut:
    return DisposalRunOut(run_id=run.run_id, at=format_datetime(run.at), actor=run.actor,
                          dry_run=run.dry_run, complete=run.complete, totals=run.totals,
                          partitions_dropped=list(run.partitions_dropped),
                          datasets=[_dataset_out(d) for d in run.datasets])


@router.post("/disposals", response_model=DisposalRunOut, response_model_by_alias=True)
async def run_disposal(request: Request, caller: CallerDep,
                       dry_run: bool = Query(False, alias="dryRun", description=(
                           "Count what would be removed; remove and record nothing."))
                       ) -> DisposalRunOut:
    """Enforce every dataset's retention now (CDO): expired history, rollups, quality
    flags and entities are removed, and the run is recorded in the audit trail."""
    run = await run_in_threadpool(hub_of(request).disposal.dispose, caller, dry_run=dry_run)
    return run_out(run)


@router.get("/disposals", response_model=list[DisposalRunOut], response_model_by_alias=True)
def past_disposals(request: Request, caller: CallerDep,
                   limit: int = Query(20, ge=1, le=1000)) -> list[DisposalRunOut]:
    """Past runs, newest first, read from the audit trail (CDO, privacy board)."""
    return [run_out(run) for run in hub_of(request).disposal.past_runs(caller, limit)]
