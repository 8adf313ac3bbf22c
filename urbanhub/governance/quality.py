"""Data quality: each dataset's rules, the evaluator that flags readings, the report's figures.

Pure; the quality service (``urbanhub.governance.quality_service``) stores rules and flags
and counts what the report needs.

Rules of a dataset, per attribute (expanded IRI):

* ``min`` / ``max``: a reading's value must be a number within the bounds; a value that is
  not a number fails ``numeric`` when a bound is declared;
* ``unitCode``: the reading must carry this UN/CEFACT unit code (a missing one fails);
* ``required``: every entity of the dataset must have the attribute (completeness);
* ``maxRepeats`` N: a reading is *repeated* when its value equals that of each of the N
  readings of the same entity attribute (and datasetId) before it, by observation time:
  the (N+1)-th equal value in a row and every further one in that run are flagged. This is
  how a stuck sensor shows.

and for the whole dataset ``maxStaleness``: an entity whose newest observation is older is
stale (timeliness) and listed as silent.

The other kind of duplicate, the same reading twice (entity, attribute, datasetId and
observedAt alike), is never stored twice: history is keyed on it and ingest is idempotent,
so a replay, even with another value, leaves the first reading as stored, and the flags are
those of the stored reading.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import IntFlag
from typing import Any, Protocol

from urbanhub.model.errors import BadRequestData
from urbanhub.model.governance import format_duration, parse_duration

#: A UN/CEFACT Recommendation 20 common code, as NGSI-LD's unitCode holds: CEL, GQ, 2N.
_UNIT_CODE = re.compile(r"[A-Z0-9]{2,3}")
#: Longest run a maxRepeats rule may allow: each judged reading looks back that far.
MAX_REPEATS_LIMIT = 1000
#: Members that hold an attribute's content, in the order the first present one is taken.
_CONTENT = ("value", "object", "languageMap", "vocab", "json", "valueList", "objectList")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class QualityFlag(IntFlag):
    """Why a reading failed; stored as a bit mask with the reading's key."""

    BELOW_MIN = 1
    ABOVE_MAX = 2
    NOT_NUMERIC = 4
    WRONG_UNIT = 8
    REPEATED = 16

    @property
    def rule(self) -> str:
        """The rule's name in rule documents and reports."""
        return _RULE_NAMES[self]


_RULE_NAMES = {QualityFlag.BELOW_MIN: "min", QualityFlag.ABOVE_MAX: "max",
               QualityFlag.NOT_NUMERIC: "numeric", QualityFlag.WRONG_UNIT: "unitCode",
               QualityFlag.REPEATED: "maxRepeats"}


_BELOW_MIN, _ABOVE_MAX, _NOT_NUMERIC, _WRONG_UNIT = (
    int(QualityFlag.BELOW_MIN), int(QualityFlag.ABOVE_MAX), int(QualityFlag.NOT_NUMERIC),
    int(QualityFlag.WRONG_UNIT))


class Observation(Protocol):
    """A reading as ingest stores it (``urbanhub.store.entities.HistoryRow``)."""

    @property
    def entity_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def dataset_id(self) -> str: ...
    @property
    def observed_at(self) -> datetime: ...
    @property
    def instance(self) -> Mapping[str, Any]: ...
    @property
    def value_num(self) -> float | None: ...


ReadingKey = tuple[str, str, str, datetime]  # entity, attribute, datasetId, observedAt


def reading_key(reading: Observation) -> ReadingKey:
    return reading.entity_id, reading.name, reading.dataset_id, reading.observed_at


@dataclass(frozen=True)
class AttributeRule:
    """The rules of one attribute (``name`` an expanded IRI)."""

    name: str
    minimum: float | None = None
    maximum: float | None = None
    unit_code: str | None = None
    required: bool = False
    max_repeats: int | None = None

    def __post_init__(self) -> None:
        where = f"Quality rule for {self.name}"
        for bound, value in (("min", self.minimum), ("max", self.maximum)):
            if value is not None and (isinstance(value, bool) or not isinstance(
                    value, int | float) or not math.isfinite(value)):
                raise BadRequestData(f"{where}: {bound} must be a finite number.")
        if self.minimum is not None and self.maximum is not None and (
                self.minimum > self.maximum):
            raise BadRequestData(f"{where}: min {self.minimum} is greater than max "
                                 f"{self.maximum}.")
        if self.unit_code is not None and not (
                isinstance(self.unit_code, str) and _UNIT_CODE.fullmatch(self.unit_code)):
            raise BadRequestData(f"{where}: unitCode {self.unit_code!r} is not a UN/CEFACT "
                                 "common code (2 or 3 capital letters or digits, e.g. CEL).")
        if self.max_repeats is not None and (
                isinstance(self.max_repeats, bool) or not isinstance(self.max_repeats, int)
                or not 1 <= self.max_repeats <= MAX_REPEATS_LIMIT):
            raise BadRequestData(f"{where}: maxRepeats must be a whole number from 1 to "
                                 f"{MAX_REPEATS_LIMIT}.")
        if not self.required and self.unit_code is None and self.max_repeats is None and (
                self.minimum is None and self.maximum is None):
            raise BadRequestData(f"{where} declares no rule: give min, max, unitCode, "
                                 "required or maxRepeats.")

    def judge(self, reading: Observation) -> int:
        """The QualityFlag mask of one reading by value and unit (repetition is judged
        apart); a plain int, as this runs for every reading ingested under a rule."""
        flags = 0
        if self.minimum is not None or self.maximum is not None:
            value = reading.value_num
            if value is None:
                flags |= _NOT_NUMERIC
            elif self.minimum is not None and value < self.minimum:
                flags |= _BELOW_MIN
            elif self.maximum is not None and value > self.maximum:
                flags |= _ABOVE_MAX
        if self.unit_code is not None and reading.instance.get("unitCode") != self.unit_code:
            flags |= _WRONG_UNIT
        return flags

    def limit(self, flag: QualityFlag) -> float | str | int | None:
        """What the rule behind ``flag`` demands, for the report."""
        return {QualityFlag.BELOW_MIN: self.minimum, QualityFlag.ABOVE_MAX: self.maximum,
                QualityFlag.WRONG_UNIT: self.unit_code,
                QualityFlag.REPEATED: self.max_repeats}.get(flag)

    def to_json(self) -> dict[str, Any]:
        found = {"min": self.minimum, "max": self.maximum, "unitCode": self.unit_code,
                 "required": self.required or None, "maxRepeats": self.max_repeats}
        return {key: value for key, value in found.items() if value is not None}


@dataclass(frozen=True)
class QualityRules:
    """A dataset's quality rules; empty (no attribute, no staleness) means none."""

    attributes: Mapping[str, AttributeRule] = field(default_factory=dict)
    max_staleness: timedelta | None = None

    def __post_init__(self) -> None:
        if self.max_staleness is not None and self.max_staleness <= timedelta(0):
            raise BadRequestData("maxStaleness must be a positive duration.")

    @property
    def empty(self) -> bool:
        return not self.attributes and self.max_staleness is None

    @property
    def required(self) -> list[str]:
        return sorted(name for name, rule in self.attributes.items() if rule.required)

    def to_json(self) -> dict[str, Any]:
        """The stored (and audited) form: attribute IRIs, ISO 8601 durations."""
        found: dict[str, Any] = {"attributes": {name: self.attributes[name].to_json()
                                                for name in sorted(self.attributes)}}
        if self.max_staleness is not None:
            found["maxStaleness"] = format_duration(self.max_staleness)
        return found

    @classmethod
    def from_json(cls, stored: Mapping[str, Any]) -> QualityRules:
        return cls({name: AttributeRule(name, rule.get("min"), rule.get("max"),
                                        rule.get("unitCode"), bool(rule.get("required")),
                                        rule.get("maxRepeats"))
                    for name, rule in stored.get("attributes", {}).items()},
                   exact_duration(stored["maxStaleness"], "maxStaleness")
                   if "maxStaleness" in stored
                   else None)


def exact_duration(text: str, what: str) -> timedelta:
    """A positive ISO 8601 duration of exact length: years and months, whose length
    varies, are refused (maxStaleness, a report window)."""
    duration = parse_duration(text, what)
    if not isinstance(duration, timedelta):
        raise BadRequestData(f"{what} {text!r} uses years or months, whose length varies; "
                             "give it in weeks, days, hours or minutes.")
    return duration


def frequency_length(text: str, now: datetime) -> timedelta:
    """An update frequency as a length; years and months count as the ones before ``now``."""
    duration = parse_duration(text, "Update frequency")
    return duration if isinstance(duration, timedelta) else duration.totimedelta(end=now)


# --- the evaluator ---------------------------------------------------------------------------

def judge_readings(readings: Iterable[Observation], dataset_of: Mapping[str, str],
                   rules: Mapping[str, QualityRules]) -> dict[ReadingKey, int]:
    """QualityFlag masks by value and unit of each reading an attribute rule applies to
    (failing or not); ``dataset_of`` gives each entity's catalog dataset."""
    judged: dict[ReadingKey, int] = {}
    for reading in readings:
        ruleset = rules.get(dataset_of.get(reading.entity_id, ""))
        rule = ruleset.attributes.get(reading.name) if ruleset is not None else None
        if rule is not None:
            judged[reading_key(reading)] = rule.judge(reading)
    return judged


def content(instance: Mapping[str, Any]) -> Any:
    """What an attribute instance says (its value, object, …).

    Booleans are told apart from numbers: a switch reporting True after 1 is no repeat.
    """
    for member in _CONTENT:
        if member in instance:
            value = instance[member]
            return ("bool", value) if isinstance(value, bool) else value
    return None


def comparable(value_num: float | None, instance: Mapping[str, Any] | None) -> Any:
    """What readings are compared by for repetition: the number, else the content."""
    return value_num if value_num is not None else content(instance or {})


def repeated(previous: Sequence[Any], batch: Sequence[tuple[datetime, Any]],
             max_repeats: int) -> set[datetime]:
    """Times of the ``batch`` readings whose value equals each of the ``max_repeats`` values
    before it; ``previous`` are the values stored before the batch. Both oldest first,
    values as ``comparable`` gives them."""
    found: set[datetime] = set()
    run = 0
    last: Any = object()
    series: list[tuple[datetime | None, Any]] = [(None, value) for value in previous]
    for moment, value in [*series, *batch]:
        run = run + 1 if run and value == last else 1
        if run > max_repeats and moment is not None:
            found.add(moment)
        last = value
    return found


# --- the report ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Share:
    """``part`` of ``whole`` met the rules; no score when there was nothing to judge."""

    part: int
    whole: int

    @property
    def score(self) -> float | None:
        return self.part / self.whole if self.whole else None


@dataclass(frozen=True)
class FailingRule:
    """A rule and how often it failed: readings for validity and expected readings,
    entities for required attributes and staleness."""

    rule: str
    count: int
    attribute: str | None = None
    limit: float | int | str | None = None


@dataclass(frozen=True)
class Measure:
    """One figure of the report; ``share`` None with a ``reason`` when it cannot be had."""

    share: Share | None
    failing: tuple[FailingRule, ...] = ()
    reason: str | None = None


@dataclass(frozen=True)
class ReportWindow:
    """The report's time window; with an update frequency, whole periods of it that end at
    or before the report's time (a period still running would count as missing)."""

    start: datetime
    end: datetime
    step: timedelta | None
    periods: int


def report_window(now: datetime, window: timedelta, frequency: timedelta | None) -> ReportWindow:
    if frequency is None or frequency < timedelta(seconds=1) or frequency > window:
        return ReportWindow(now - window, now, None, 0)
    step_us = _micros(frequency)
    end = _EPOCH + timedelta(microseconds=_micros(now - _EPOCH) // step_us * step_us)
    periods = _micros(window) // step_us
    return ReportWindow(end - periods * frequency, end, frequency, periods)


def _micros(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True)
class QualityReport:
    """Completeness (required attributes; expected readings), validity and timeliness of
    one dataset over a window, each with the rules that failed."""

    dataset_id: str
    generated_at: datetime
    window: ReportWindow
    entities: int
    required_attributes: Measure
    expected_readings: Measure
    validity: Measure
    timeliness: Measure


def required_measure(rules: QualityRules, entities: int,
                     present: Mapping[str, int]) -> Measure:
    """Share of (entity, required attribute) pairs present; ``present`` counts entities
    having each attribute."""
    required = rules.required
    if not required:
        return Measure(None, reason="the rules require no attribute")
    failing = tuple(FailingRule("required", entities - present.get(name, 0), name)
                    for name in required if present.get(name, 0) < entities)
    return Measure(Share(sum(min(present.get(n, 0), entities) for n in required),
                         entities * len(required)), failing)


def readings_measure(window: ReportWindow, frequency: str | None, entities: int,
                     received: int) -> Measure:
    """Share of (entity, update period) pairs with at least one reading."""
    if frequency is None:
        return Measure(None, reason="the dataset declares no update frequency")
    if window.step is None:
        return Measure(None, reason=f"the update frequency {frequency} does not fit the "
                                    "report window")
    expected = entities * window.periods
    failing = (FailingRule("updateFrequency", expected - received, limit=frequency),) if (
        received < expected) else ()
    return Measure(Share(received, expected), failing)


def validity_measure(rules: QualityRules, readings: int,
                     flagged: Iterable[tuple[str, int, int]]) -> Measure:
    """Share of readings in the window without flags; ``flagged`` holds (attribute, flag
    mask, readings) of the flagged ones."""
    per_rule: dict[tuple[str, QualityFlag], int] = {}
    failed = 0
    for name, mask, count in flagged:
        failed += count
        for flag in QualityFlag(mask):
            per_rule[(name, flag)] = per_rule.get((name, flag), 0) + count
    failing = []
    for (name, flag), count in sorted(per_rule.items()):
        rule = rules.attributes.get(name)
        failing.append(FailingRule(flag.rule, count, name,
                                   rule.limit(flag) if rule is not None else None))
    return Measure(Share(max(readings - failed, 0), readings), tuple(failing))


def timeliness_measure(rules: QualityRules, last_seen: Iterable[datetime],
                       now: datetime) -> Measure:
    """Share of entities observed within maxStaleness of ``now``."""
    if rules.max_staleness is None:
        return Measure(None, reason="the rules declare no maxStaleness")
    seen = list(last_seen)
    stale = sum(1 for moment in seen if now - moment > rules.max_staleness)
    failing = (FailingRule("maxStaleness", stale, limit=format_duration(rules.max_staleness)),
               ) if stale else ()
    return Measure(Share(len(seen) - stale, len(seen)), failing)
