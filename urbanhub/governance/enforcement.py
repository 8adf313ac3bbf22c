"""The enforcement point: every read of entity data asks the policy decision point here.

The query service (and through it the temporal API, types, attributes and exports) calls
``AccessGuard.scope`` once per request. The scope lists the catalog datasets the caller
may read for the stated purpose, each with what must be done to its entities before they
leave (attributes dropped or pseudonymised, subjects without consent left out). Datasets
the caller may not read are simply not in it, so their entities are absent from results,
counts and type listings alike, and asking for one by id gets the same 404 as an id that
does not exist.

Decisions depend on the caller, action, purpose, catalog and grants; they are cached until
one of those changes or a grant starts or ends, and every use is still written to the audit
trail (batched by ``DecisionRecorder``, so recording costs a read nothing measurable).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Connection, Select, false, select

from urbanhub.governance.audit import AuditEvent
from urbanhub.governance.catalog import CatalogService, GovernedCatalog
from urbanhub.governance.policy import PolicyDecisionPoint
from urbanhub.governance.pseudonymise import Pseudonymiser
from urbanhub.model.caller import SYSTEM_ROLE, Caller
from urbanhub.model.catalog import UNCATALOGUED_ID
from urbanhub.model.errors import Forbidden, ResourceNotFound
from urbanhub.model.governance import (
    Action,
    Aggregate,
    Dataset,
    Decision,
    DpNoise,
    DropAttributes,
    ExcludeWithoutConsent,
    Grant,
    PseudonymiseAttributes,
    Role,
)
from urbanhub.model.identity import Scope, authorise
from urbanhub.ngsild.entity import Entity, Instance
from urbanhub.ngsild.timeutil import utcnow
from urbanhub.store.audit import AuditLog
from urbanhub.store.tables import entities

log = logging.getLogger(__name__)

#: Roles that may write entity data through the NGSI-LD API.
WRITER_ROLES = frozenset({Role.OPERATOR, Role.STEWARD, Role.CDO})
#: The longest a cached decision is reused before it is taken again.
DECISION_TTL = timedelta(minutes=5)


class GrantSource(Protocol):
    """Where the grants that might cover a caller come from (approved data-use requests)."""

    def grants_for(self, caller: Caller) -> Sequence[Grant]: ...


class NoGrants:
    """A hub without data-use requests: nothing is granted."""

    def grants_for(self, caller: Caller) -> Sequence[Grant]:
        return ()


class ConsentSource(Protocol):
    """Which entities' data subjects consented to a purpose, as SQL over entity ids."""

    def consenting_entities(self, purpose: str, subject_attribute: str,
                            now: datetime) -> Select[Any]: ...


class NoConsents:
    """A hub that records no consent: consent-based data is used for nothing."""

    def consenting_entities(self, purpose: str, subject_attribute: str,
                            now: datetime) -> Select[Any]:
        return select(entities.c.id).where(false())


@dataclass(frozen=True)
class DatasetView:
    """How the entities of one permitted dataset may be seen."""

    dataset: Dataset
    hidden: frozenset[str] = frozenset()  # attribute IRIs dropped
    pseudonymised: frozenset[str] = frozenset()  # attribute IRIs replaced by pseudonyms
    key_id: str | None = None
    consent_purpose: str | None = None  # leave out subjects without consent for this

    @property
    def reshapes(self) -> bool:
        return bool(self.hidden or self.pseudonymised)


@dataclass(frozen=True)
class ReadScope:
    """What one caller may read, for one action and purpose.

    ``views`` holds the permitted datasets; ``unrestricted`` is for the hub's own components
    (importer, demo, disposal), which act for the city and are not subject to grants.
    """

    caller: Caller
    action: Action
    views: Mapping[str, DatasetView] = field(default_factory=dict)
    unrestricted: bool = False

    @property
    def dataset_ids(self) -> list[str] | None:
        """The datasets to read from, for SQL; None when every dataset is readable."""
        return None if self.unrestricted else sorted(self.views)

    @property
    def reshapes(self) -> bool:
        return any(view.reshapes for view in self.views.values())

    def hidden(self, dataset_id: str) -> frozenset[str]:
        view = self.views.get(dataset_id)
        return view.hidden if view is not None else frozenset()

    def consent_filters(self) -> list[tuple[str, str, str]]:
        """(dataset id, subject attribute IRI, purpose) of datasets that need consent."""
        return [(ident, view.dataset.subject_attribute or "",
                 view.consent_purpose) for ident, view in sorted(self.views.items())
                if view.consent_purpose is not None]


def reshape(entity: Entity, view: DatasetView, pseudonymiser: Pseudonymiser) -> Entity:
    """The entity as the view allows it to be seen (a new object when anything changes)."""
    if not view.reshapes:
        return entity
    attrs = {}
    for name, instances in entity["attrs"].items():
        if name in view.hidden:
            continue
        if name in view.pseudonymised:
            instances = {dataset_id: pseudonymise_instance(instance, pseudonymiser, view.key_id)
                         for dataset_id, instance in instances.items()}
        attrs[name] = instances
    return {**entity, "attrs": attrs}


def pseudonymise_instance(instance: Instance, pseudonymiser: Pseudonymiser,
                          key_id: str | None) -> Instance:
    """The instance with its content replaced by the pseudonym of that content."""
    out = dict(instance)
    for member in ("value", "object", "languageMap", "vocab", "json", "valueList",
                   "objectList"):
        if member in out:
            out[member] = pseudonymiser.pseudonym(out[member], key_id)
    if out.get("type") == "GeoProperty":  # a location cannot be pseudonymised: drop it
        out["type"], out["value"] = "Property", pseudonymiser.pseudonym(instance["value"],
                                                                         key_id)
    out.pop("unitCode", None)
    return out


def check_write(caller: Caller, dataset: Dataset | None) -> None:
    """Writing entity data needs a member with the write scope in a writing role; an
    existing entity must be of a dataset the caller's organisation owns (the CDO, any)."""
    if SYSTEM_ROLE in caller.roles:
        return
    authorise(caller, "Writing entity data", Scope.WRITE, WRITER_ROLES)
    if dataset is None or Role.CDO in caller.roles:
        return
    if dataset.owner != caller.organisation and not _city_staff_on_uncatalogued(caller,
                                                                                 dataset):
        raise Forbidden(f"Dataset {dataset.id} belongs to {dataset.owner}; "
                        f"{caller.subject} of {caller.organisation} may not write to it.")


def _city_staff_on_uncatalogued(caller: Caller, dataset: Dataset) -> bool:
    """Entities no rule claims yet may be maintained by city departments until catalogued."""
    return dataset.id == UNCATALOGUED_ID and caller.organisation_kind == "department"


class DecisionRecorder:
    """Appends decisions to the audit trail in batches, off the request path.

    One append per request would cost a read about a millisecond on PostgreSQL; events
    queue here and a background thread appends them every ``interval_s`` (and on
    ``flush``/``close``). A crash can lose at most the last interval's decision records,
    never a governance change (those are appended in their own transaction).
    """

    def __init__(self, audit: AuditLog, interval_s: float = 0.5,
                 max_pending: int = 10_000) -> None:
        self.audit = audit
        self.interval_s = interval_s
        self.max_pending = max_pending
        # (actor, action, details): events are built at flush, off the request path.
        self._pending: list[tuple[str, str, Mapping[str, Any]]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    def record(self, actor: str, action: str, details: Mapping[str, Any]) -> None:
        with self._lock:
            self._pending.append((actor, action, details))
            full = len(self._pending) >= self.max_pending
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="urbanhub-decisions",
                                                daemon=True)
                self._thread.start()
        if full:
            self._wake.set()

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        if pending:
            self.audit.append([AuditEvent(actor, action, None, details)
                               for actor, action, details in pending])

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.interval_s)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # the next round retries; the events are not lost from memory
                log.exception("could not append access decisions to the audit trail")


@dataclass(frozen=True)
class _Cached:
    scope: ReadScope
    summary: Mapping[str, Any]
    until: datetime


class AccessGuard:
    """Takes the read decisions of the hub: PDP + catalog + grants, with obligations."""

    def __init__(self, catalog: CatalogService, recorder: DecisionRecorder,
                 pseudonymiser: Pseudonymiser, grants: GrantSource | None = None,
                 clock: Callable[[], datetime] = utcnow, cache_size: int = 1024) -> None:
        self.catalog = catalog
        self.recorder = recorder
        self.pseudonymiser = pseudonymiser
        self.grants = grants or NoGrants()
        self.clock = clock
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[Any, ...], _Cached] = OrderedDict()
        self._lock = threading.Lock()
        self._pdp: tuple[int, PolicyDecisionPoint] | None = None

    def scope(self, caller: Caller, action: Action = Action.READ) -> ReadScope:
        """The datasets ``caller`` may read for its purpose, each with its obligations;
        the decision is written to the audit trail."""
        if SYSTEM_ROLE in caller.roles:
            return ReadScope(caller, action, unrestricted=True)
        cached = self._scope(caller, action)
        self.recorder.record(caller.subject, f"access.{action.value}", cached.summary)
        return cached.scope

    def check_entity_write(self, conn: Connection, caller: Caller, entity_id: str) -> bool:
        """Refuse a write to an entity of a dataset the caller's organisation does not own;
        whether the entity exists."""
        dataset_id = self.catalog.store.dataset_of(conn, entity_id)
        if dataset_id is None or SYSTEM_ROLE in caller.roles:
            return dataset_id is not None
        check_write(caller, self.catalog.governed().datasets.get(dataset_id))
        return True

    def _scope(self, caller: Caller, action: Action) -> _Cached:
        now = self.clock()
        governed = self.catalog.governed()
        grants = tuple(self.grants.grants_for(caller))
        key = (caller, action, governed.revision, grants)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached.until > now:
                self._cache.move_to_end(key)
            else:
                cached = self._decide(caller, action, governed, grants, now)
                self._cache[key] = cached
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return cached

    def entity_not_found(self, entity_id: str) -> ResourceNotFound:
        """The one answer for "does not exist" and "not yours to see"."""
        return ResourceNotFound(f"Entity {entity_id} does not exist.")

    def _decide(self, caller: Caller, action: Action, governed: GovernedCatalog,
                grants: tuple[Grant, ...], now: datetime) -> _Cached:
        pdp = self._decision_point(governed)
        datasets = list(governed.datasets.values())
        decisions = pdp.decide_many(caller, action, [(d, None) for d in datasets],
                                    caller.purpose, now=now, grants=grants)
        views: dict[str, DatasetView] = {}
        permitted: dict[str, list[str]] = {}
        denied: list[str] = []
        for dataset, decision in zip(datasets, decisions, strict=True):
            view = _view(dataset, decision)
            if view is None:
                denied.append(dataset.id)
                continue
            views[dataset.id] = view
            permitted[dataset.id] = sorted(type(o).__name__ for o in decision.obligations)
        summary = {"purpose": caller.purpose, "policyVersion": pdp.policy_version,
                   "permitted": permitted, "denied": sorted(denied),
                   "grants": sorted({d.grant_id for d in decisions if d.grant_id})}
        return _Cached(ReadScope(caller, action, views), summary,
                       _next_boundary(grants, now))

    def _decision_point(self, governed: GovernedCatalog) -> PolicyDecisionPoint:
        current = self._pdp
        if current is None or current[0] != governed.revision:
            current = (governed.revision, PolicyDecisionPoint(
                governed.purposes, pseudonym_key_id=self.pseudonymiser.current))
            self._pdp = current
        return current[1]


def _view(dataset: Dataset, decision: Decision) -> DatasetView | None:
    """The view a decision allows on entity reads; None when entities may not be read.

    Aggregate-only and noisy (DP) permits do not allow reading entities one by one.
    """
    if not decision.permitted:
        return None
    hidden: set[str] = set()
    pseudonymised: set[str] = set()
    key_id = None
    consent = None
    for obligation in decision.obligations:
        match obligation:
            case Aggregate() | DpNoise():
                return None
            case DropAttributes(attributes=names):
                hidden |= names
            case PseudonymiseAttributes(attributes=names, key_id=key):
                pseudonymised |= names
                key_id = key
            case ExcludeWithoutConsent(purpose=purpose):
                consent = purpose
    return DatasetView(dataset, frozenset(hidden), frozenset(pseudonymised - hidden), key_id,
                       consent)


def _next_boundary(grants: Sequence[Grant], now: datetime) -> datetime:
    """When a grant next starts or ends: decisions taken now hold until then."""
    until = now + DECISION_TTL
    for grant in grants:
        for moment in (grant.valid_from, grant.valid_until):
            if now < moment < until:
                until = moment
    return until
