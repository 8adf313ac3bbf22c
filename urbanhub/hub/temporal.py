"""The temporal API's service (ETSI GS CIM 009 §5.6.11, §5.7.3/5.7.4): history of entities.

Time semantics, as stored and as queried:
- ``history.observed_at`` holds each instance's observedAt, or its modifiedAt when the
  instance had none (an API write without observedAt), so ``timeproperty=observedAt`` (the
  default) always has a time to work with; ``timeproperty=modifiedAt`` uses the time
  history first recorded the instance.
- Intervals are half-open: ``before`` is t < timeAt, ``after`` is t >= timeAt, ``between``
  is timeAt <= t < endTimeAt. Aggregation periods are half-open too and aligned to timeAt
  when it is given, to the Unix epoch (whole hours, UTC midnights) otherwise.
- Entity selection (type, id, idPattern, attrs, q, geo) goes through the query service and
  looks at the current state; the time filters then apply to the history of those entities.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import isodate
from sqlalchemy import Connection

from urbanhub.governance.enforcement import DatasetView, check_write, pseudonymise_instance
from urbanhub.governance.pseudonymise import Pseudonymiser
from urbanhub.hub.query import EntityQuery, QueryService
from urbanhub.model.caller import SYSTEM_ROLE, Caller
from urbanhub.model.errors import BadRequestData, OperationNotSupported
from urbanhub.ngsild.entity import Entity, Instance
from urbanhub.ngsild.timeutil import format_datetime, parse_datetime, utcnow
from urbanhub.store import history
from urbanhub.store.entities import LOCATION, EntityStore, HistoryRow, numeric_value
from urbanhub.store.history import HistoryInstance, PeriodSeries

AGGREGATE_METHODS = ("totalCount", "distinctCount", "sum", "sumsq", "avg", "min", "max",
                     "stddev")
#: The rollup columns (beside the count) each method reads; the rollups can answer every
#: method but distinctCount, which needs values.
ROLLUP_FIGURES = {"totalCount": (), "sum": ("total",), "sumsq": ("total_sq",),
                  "avg": ("total",), "min": ("minimum",), "max": ("maximum",),
                  "stddev": ("total", "total_sq")}
ROLLUP_METHODS = frozenset(ROLLUP_FIGURES)
TIMERELS = ("before", "after", "between")
_HOUR_US = 3_600_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

EntityValidator = Callable[[Entity], None]


@dataclass(frozen=True)
class TimeQuery:
    """A validated temporal query (timerel, timeAt, endTimeAt, timeproperty)."""

    timerel: str | None = None
    time_at: datetime | None = None
    end_time_at: datetime | None = None
    timeproperty: str = "observedAt"

    @classmethod
    def parse(cls, timerel: str | None, time_at: str | None, end_time_at: str | None,
              timeproperty: str | None) -> TimeQuery:
        """Check the parameters together; every error names the parameter at fault."""
        prop = timeproperty or "observedAt"
        if prop not in history.TIME_COLUMNS:
            raise BadRequestData(
                f"timeproperty must be one of {', '.join(history.TIME_COLUMNS)}, got {prop!r}.")
        if timerel is None:
            if time_at is not None or end_time_at is not None:
                raise BadRequestData("timeAt and endTimeAt need timerel (before, after or "
                                     "between).")
            return cls(timeproperty=prop)
        if timerel not in TIMERELS:
            raise BadRequestData(f"timerel must be before, after or between, got {timerel!r}.")
        if time_at is None:
            raise BadRequestData(f"timerel={timerel} needs timeAt.")
        start = parse_datetime(time_at, "timeAt")
        end = None
        if timerel == "between":
            if end_time_at is None:
                raise BadRequestData("timerel=between needs endTimeAt.")
            end = parse_datetime(end_time_at, "endTimeAt")
            if end <= start:
                raise BadRequestData("endTimeAt must be later than timeAt.")
        elif end_time_at is not None:
            raise BadRequestData(f"endTimeAt is only allowed with timerel=between, not "
                                 f"{timerel}.")
        return cls(timerel, start, end, prop)

    @property
    def start(self) -> datetime | None:
        return self.time_at if self.timerel in ("after", "between") else None

    @property
    def end(self) -> datetime | None:
        if self.timerel == "before":
            return self.time_at
        return self.end_time_at if self.timerel == "between" else None


@dataclass(frozen=True)
class Aggregation:
    methods: tuple[str, ...]
    period: timedelta | None = None  # None: one period over the whole requested range

    @classmethod
    def parse(cls, methods: list[str] | None, duration: str | None) -> Aggregation:
        if not methods:
            raise BadRequestData("options=aggregatedValues needs aggrMethods (one or more of "
                                 f"{', '.join(AGGREGATE_METHODS)}).")
        unknown = [m for m in methods if m not in AGGREGATE_METHODS]
        if unknown:
            raise BadRequestData(f"Unknown aggrMethods {', '.join(unknown)}; use "
                                 f"{', '.join(AGGREGATE_METHODS)}.")
        return cls(tuple(dict.fromkeys(methods)), parse_period(duration) if duration else None)


def parse_period(text: str) -> timedelta:
    """An ISO 8601 duration of fixed length (weeks, days, hours, minutes, seconds)."""
    try:
        parsed = isodate.parse_duration(text)
    except (isodate.ISO8601Error, ValueError) as exc:
        raise BadRequestData(f"aggrPeriodDuration {text!r} is not an ISO 8601 duration "
                             "(for example PT1H or P1D).") from exc
    if isinstance(parsed, isodate.Duration):
        if parsed.years or parsed.months:
            raise OperationNotSupported(
                f"aggrPeriodDuration {text!r} has months or years, whose length varies; "
                "use days or weeks (for example P30D or P1W).")
        parsed = parsed.tdelta
    if parsed <= timedelta(0):
        raise BadRequestData(f"aggrPeriodDuration {text!r} must be longer than zero.")
    if parsed.microseconds % 1000:
        raise BadRequestData(f"aggrPeriodDuration {text!r} is finer than a millisecond.")
    return parsed


@dataclass(frozen=True)
class TemporalQuery:
    time: TimeQuery = field(default_factory=TimeQuery)
    attrs: list[str] | None = None  # expanded attribute names; None: all
    last_n: int | None = None
    aggregation: Aggregation | None = None


#: One method's figure for each period of a series.
Figures = Sequence[float | int | None]


@dataclass(frozen=True)
class AggregatedSeries:
    """One attribute's (and datasetId's) periods, oldest first, as columns.

    Period i runs from ``starts[i]`` to ``ends[i]`` and has ``values[method][i]``; columns
    rather than an object per period, which a page of 24,000 periods cannot afford.
    """

    starts: Sequence[datetime]
    ends: Sequence[datetime]
    values: dict[str, Figures]


@dataclass
class TemporalEntity:
    """An entity's history; ``current`` is its present state (None once it was deleted),
    ``former_types`` a deleted entity's types, from its tombstone."""

    id: str
    current: Entity | None
    former_types: list[str] = field(default_factory=list)
    instances: dict[str, list[HistoryInstance]] = field(default_factory=dict)
    aggregates: dict[str, dict[str, AggregatedSeries]] = field(default_factory=dict)

    @property
    def types(self) -> list[str]:
        """The entity's types; none for history deleted before tombstones were kept."""
        return self.current["type"] if self.current is not None else self.former_types


@dataclass
class TemporalResult:
    entities: list[TemporalEntity]
    total: int | None


def method_values(method: str, stats: PeriodSeries) -> Figures:
    """One method's figure for each period; numeric methods are None without numbers.

    stddev is the population standard deviation sqrt(sumsq/n - mean²), computed from n, sum
    and sumsq so that raw history and the hourly rollups give identical numbers.
    """
    if method == "totalCount":
        return stats.instances
    if method == "distinctCount":
        return stats.distinct
    if method == "avg":
        return [total / n if n and total is not None else None
                for n, total in zip(stats.n, stats.total, strict=True)]
    if method == "stddev":
        return [_stddev(n, total, total_sq)
                for n, total, total_sq in zip(stats.n, stats.total, stats.total_sq, strict=True)]
    column = {"sum": stats.total, "sumsq": stats.total_sq, "min": stats.minimum,
              "max": stats.maximum}[method]
    return [value if n else None for n, value in zip(stats.n, column, strict=True)]


def _stddev(n: int, total: float | None, total_sq: float | None) -> float | None:
    if not n or total is None or total_sq is None:
        return None
    mean = total / n
    return math.sqrt(max(0.0, total_sq / n - mean * mean))


def _origin(query: TemporalQuery) -> datetime:
    """Where the first aggregation period starts: timeAt, else the epoch."""
    return query.time.time_at or _EPOCH


def _step_us(aggregation: Aggregation) -> int | None:
    """The aggregation period in microseconds; None for one period over the whole range."""
    return history.micros(_EPOCH + aggregation.period) if aggregation.period else None


def _whole_hours(moment: datetime | None) -> bool:
    return moment is None or history.micros(moment) % _HOUR_US == 0


def _is_numeric(instances: dict[str, Instance]) -> bool:
    return all(numeric_value(i) is not None for i in instances.values())


class TemporalService:
    """Temporal retrieval and provision; every read takes the caller, like QueryService.

    ``use_rollups`` switches the hourly-rollup fast path off (for comparisons and tests).
    """

    def __init__(self, store: EntityStore, queries: QueryService,
                 validator: EntityValidator | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.queries = queries
        self.validator = validator
        self.clock = clock
        self.use_rollups = True
        self._prefetch = ThreadPoolExecutor(max_workers=4, thread_name_prefix="urbanhub-rollups")

    def close(self) -> None:
        self._prefetch.shutdown(wait=True)

    # --- retrieval -------------------------------------------------------------------

    def get_entity(self, caller: Caller, entity_id: str, query: TemporalQuery) -> TemporalEntity:
        """One entity's history; 404 when it neither exists nor ever had history, and
        when the caller may not see it. A deleted entity's history is read as its dataset
        (kept in its tombstone) allows; history with no dataset known (entities deleted
        before tombstones existed) only by the hub's own components."""
        scope = self.queries.guard.scope(caller)
        found = self.queries.lookup_in(scope, [entity_id])
        if found.entities:
            entity = TemporalEntity(entity_id, found.entities[0])
            return self._fill(caller, [entity], query, found.views)[0]
        with self.store.read() as conn:
            tombstone = self.store.tombstone(conn, entity_id)
            kept = (tombstone is not None
                    or (SYSTEM_ROLE in caller.roles and history.has_history(conn, entity_id)))
        if not kept:
            raise self.queries.guard.entity_not_found(entity_id)
        views: dict[str, DatasetView] = {}
        if tombstone is not None:
            view = scope.views.get(tombstone.dataset_id)
            if not scope.unrestricted:
                # Consent is checked on an entity's current subject, which is gone: a
                # consent-based dataset's deleted entities are not shown.
                if view is None or view.consent_purpose is not None:
                    raise self.queries.guard.entity_not_found(entity_id)
                if view.reshapes:
                    views[entity_id] = view
        entity = TemporalEntity(entity_id, None, tombstone.types if tombstone else [])
        return self._fill(caller, [entity], query, views)[0]

    def query(self, caller: Caller, selection: EntityQuery,
              query: TemporalQuery) -> TemporalResult:
        """Entities chosen on their current state, each with its history.

        With the attributes named, their rollups are read on a second connection while
        the entities load: the database works on one while Python parses the other.
        """
        early: list[Future[list[PeriodSeries]]] = []
        attrs = query.attrs

        def read_rollups(ids: list[str]) -> None:
            assert attrs is not None
            early.append(self._prefetch.submit(self._read_rollups, ids, attrs, query))

        eager = attrs is not None and self.rollup_eligible(query)
        found = self.queries.query(caller, selection, selected=read_rollups if eager else None)
        entities = [TemporalEntity(e["id"], e) for e in found.entities]
        return TemporalResult(self._fill(caller, entities, query, found.views,
                                         early[0] if early else None), found.total)

    def rollup_eligible(self, query: TemporalQuery) -> bool:
        """Whether the hourly rollups give exactly what raw history would for this query."""
        aggregation = query.aggregation
        if aggregation is None or not self.use_rollups:
            return False
        time = query.time
        step = aggregation.period
        return (set(aggregation.methods) <= ROLLUP_METHODS
                and time.timeproperty == "observedAt"
                and all(_whole_hours(t) for t in (time.start, time.end, time.time_at))
                and ((step is None and time.start is not None and time.end is not None)
                     or (step is not None and history.micros(_EPOCH + step) % _HOUR_US == 0)))

    def _fill(self, caller: Caller, entities: list[TemporalEntity], query: TemporalQuery,
              views: Mapping[str, DatasetView],
              early: Future[list[PeriodSeries]] | None = None) -> list[TemporalEntity]:
        if not entities:
            return entities
        try:
            return self._read_history(entities, query, early)
        finally:
            by_id = {entity.id: entity for entity in entities}
            for entity_id, view in views.items():
                if entity_id in by_id:
                    _apply_view(by_id[entity_id], view, self.queries.guard.pseudonymiser)

    def _read_rollups(self, ids: list[str], names: list[str],
                      query: TemporalQuery) -> list[PeriodSeries]:
        with self.store.read() as conn:
            return self._rollups(conn, ids, names, query)

    def _rollups(self, conn: Connection, ids: list[str], names: list[str],
                 query: TemporalQuery) -> list[PeriodSeries]:
        aggregation = query.aggregation
        assert aggregation is not None
        figures = {f for method in aggregation.methods for f in ROLLUP_FIGURES[method]}
        return history.rollup_aggregates(conn, ids, names, query.time.start, query.time.end,
                                         origin=_origin(query), step_us=_step_us(aggregation),
                                         figures=figures)

    def _read_history(self, entities: list[TemporalEntity], query: TemporalQuery,
                      early: Future[list[PeriodSeries]] | None) -> list[TemporalEntity]:
        """``early``: the rollups of query.attrs, read while the entities loaded."""
        ids = [e.id for e in entities]
        by_id = {e.id: e for e in entities}
        time = query.time
        aggregation = query.aggregation
        if aggregation is None:
            with self.store.read() as conn:
                found = history.instances(conn, ids, query.attrs, time.start, time.end,
                                          timeproperty=time.timeproperty, last_n=query.last_n)
            for item in found:
                by_id[item.entity_id].instances.setdefault(item.name, []).append(item)
            return entities
        names = self._aggregated_names(entities, query)
        fast = self._rollup_names(entities, names) if self.rollup_eligible(query) else []
        slow = None if names is None else [n for n in names if n not in fast]
        read_fast = bool(fast) and early is None
        read_slow = slow is None or bool(slow)
        stats: list[PeriodSeries] = []
        if early is not None:  # kept: attributes numeric now, entities the caller sees
            wanted = set(fast)
            stats += [s for s in early.result() if s.name in wanted and s.entity_id in by_id]
        if read_fast or read_slow:
            with self.store.read() as conn:
                if read_fast:
                    stats += self._rollups(conn, ids, fast, query)
                if read_slow:
                    stats += history.raw_aggregates(
                        conn, ids, slow, time.start, time.end, origin=_origin(query),
                        step_us=_step_us(aggregation),
                        distinct="distinctCount" in aggregation.methods,
                        timeproperty=time.timeproperty)
        self._collect(by_id, stats, query, _origin(query))
        return entities

    def _collect(self, by_id: dict[str, TemporalEntity], stats: list[PeriodSeries],
                 query: TemporalQuery, origin: datetime) -> None:
        """File each series under its entity, attribute and datasetId, with period bounds.

        Series come oldest period first, so lastN is a slice; the bounds of a period are
        computed once and shared by every entity.
        """
        assert query.aggregation is not None
        step = query.aggregation.period
        time = query.time
        bounds: dict[int, tuple[datetime, datetime]] = {}
        spans: dict[tuple[int, ...], tuple[tuple[datetime, ...], ...]] = {}
        keep = slice(-query.last_n if query.last_n else None, None)
        for series in stats:
            if step is None:
                pairs = [self._whole_range(time, first, last)
                         for first, last in zip(series.first, series.last, strict=True)]
                starts, ends = zip(*pairs[keep], strict=True)
            elif series.periods in spans:  # most series of a page cover the same periods
                starts, ends = spans[series.periods]
            else:
                for period in series.periods:
                    if period not in bounds:
                        bounds[period] = self._bounds(period, time, origin, step)
                pairs = [bounds[period] for period in series.periods]
                starts, ends = spans[series.periods] = tuple(zip(*pairs[keep], strict=True))
            values = {method: method_values(method, series)[keep]
                      for method in query.aggregation.methods}
            by_id[series.entity_id].aggregates.setdefault(series.name, {})[
                series.dataset_id] = AggregatedSeries(starts, ends, values)

    @staticmethod
    def _aggregated_names(entities: list[TemporalEntity],
                          query: TemporalQuery) -> list[str] | None:
        """The attributes to aggregate: those asked for, else the current ones.

        Without attrs, an attribute since deleted from an entity is left out (it would
        cost a scan of all history to find); None means every name, for entities that
        exist only in history.
        """
        if query.attrs is not None:
            return query.attrs
        names: dict[str, None] = {}
        for entity in entities:
            if entity.current is None:
                return None
            names.update(dict.fromkeys(entity.current["attrs"]))
        return list(names)

    @staticmethod
    def _rollup_names(entities: list[TemporalEntity], names: list[str] | None) -> list[str]:
        """Attributes whose every current instance, in every selected entity, is a number.

        The rollups hold numeric readings only, so a number now is taken to mean numbers
        throughout history; an attribute that once held text would be miscounted in
        totalCount, which is why anything non-numeric now goes to raw history.
        """
        if names is None:
            return []
        numeric: dict[str, bool] = {}
        for entity in entities:
            assert entity.current is not None  # names is None for history-only entities
            for name, instances in entity.current["attrs"].items():
                numeric[name] = numeric.get(name, True) and _is_numeric(instances)
        return [name for name in names if numeric.get(name)]

    @staticmethod
    def _whole_range(time: TimeQuery, first: datetime | None,
                     last: datetime | None) -> tuple[datetime, datetime]:
        """The one period without aggrPeriodDuration: the range asked for, else the data's."""
        start = time.start or first
        end = time.end or last
        assert start is not None and end is not None  # raw series carry first/last
        return start, end

    @staticmethod
    def _bounds(number: int, time: TimeQuery, origin: datetime,
                period: timedelta) -> tuple[datetime, datetime]:
        start = origin + period * number
        end = start + period
        if time.start is not None:
            start = max(start, time.start)
        if time.end is not None:
            end = min(end, time.end)
        return start, end

    # --- provision -------------------------------------------------------------------

    def provide(self, caller: Caller, entity: Entity,
                attrs: dict[str, list[Instance]]) -> bool:
        """POST /temporal/entities: create the entity or add instances to its history.

        Every instance carries observedAt; replays store nothing twice (the history key is
        entity, attribute, datasetId, observedAt). Returns True when the entity was created.
        """
        now = self.clock()
        stamp = format_datetime(now)
        rows: list[HistoryRow] = []
        for name, instances in attrs.items():
            for instance in instances:
                instance["createdAt"] = instance["modifiedAt"] = stamp
                rows.append(HistoryRow(entity["id"], name, instance.get("datasetId", ""),
                                       parse_datetime(instance["observedAt"]), instance,
                                       numeric_value(instance)))
        check_write(caller, None)
        guard = self.queries.guard
        with self.store.write() as conn:
            if not guard.check_entity_write(conn, caller, entity["id"]):
                if not entity.get("type"):
                    raise BadRequestData(f"Entity {entity['id']} does not exist; give its type "
                                         "to create it.")
                newest: dict[str, dict[str, Instance]] = {}
                latest: dict[tuple[str, str], datetime] = {}
                for row in rows:
                    key = (row.name, row.dataset_id)
                    if key not in latest or latest[key] < row.observed_at:
                        latest[key] = row.observed_at
                        newest.setdefault(row.name, {})[row.dataset_id] = row.instance
                created = {**entity, "attrs": newest}
                if self.validator is not None:
                    self.validator(created)
                self.store.insert_entity(conn, created, now)
                guard.check_entity_write(conn, caller, entity["id"])  # where it landed
                self.store.apply_readings(conn, rows, now)
                return True
            self.store.apply_readings(conn, rows, now)
            after = self.store.load(conn, [entity["id"]])[entity["id"]]
            types = list(dict.fromkeys(after["type"] + entity.get("type", [])))
            changed = types != after["type"] or LOCATION in attrs or "scope" in entity
            after["type"] = types
            if "scope" in entity:
                after["scope"] = entity["scope"]
            if self.validator is not None:
                self.validator(after)
            if changed:
                self.store.update_entity_header(conn, after, now)
            return False


def _apply_view(entity: TemporalEntity, view: DatasetView,
                pseudonymiser: Pseudonymiser) -> None:
    """History as the view allows: dropped attributes gone, pseudonymised ones with their
    instances pseudonymised and no aggregates (figures of an identifier mean nothing)."""
    for name in view.hidden | view.pseudonymised:
        entity.aggregates.pop(name, None)
    for name in view.hidden:
        entity.instances.pop(name, None)
    for name in view.pseudonymised & entity.instances.keys():
        entity.instances[name] = [
            replace(item, instance=pseudonymise_instance(item.instance, pseudonymiser,
                                                         view.key_id))
            for item in entity.instances[name]]
