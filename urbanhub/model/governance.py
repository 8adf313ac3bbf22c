"""Governance vocabulary: who may do what with which data, for which purpose.

Pure types only. The policy decision point (urbanhub.governance.policy) evaluates them;
the enforcement point (the query service) carries out the obligations of a Decision.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import isodate
import orjson
from shapely import geometry as shapes
from shapely.validation import explain_validity

from urbanhub.model.errors import BadRequestData


class Role(StrEnum):
    CDO = "cdo"
    STEWARD = "steward"
    ANALYST = "analyst"
    OPERATOR = "operator"
    PRIVACY_BOARD = "privacy_board"
    PUBLIC = "public"


class OrganisationKind(StrEnum):
    """City departments get internal data by default; everyone else needs a grant."""

    DEPARTMENT = "department"
    PARTNER = "partner"
    UNIVERSITY = "university"
    CIVIL_SOCIETY = "civil_society"


class Classification(StrEnum):
    """Ordered from least to most restricted; compare with <, <= (not alphabetically)."""

    OPEN = "open"
    INTERNAL = "internal"
    PERSONAL = "personal"
    SENSITIVE = "sensitive"

    @property
    def rank(self) -> int:
        return _CLASSIFICATION_RANK[self]

    def __lt__(self, other: str) -> bool:
        return self.rank < Classification(other).rank

    def __le__(self, other: str) -> bool:
        return self.rank <= Classification(other).rank

    def __gt__(self, other: str) -> bool:
        return self.rank > Classification(other).rank

    def __ge__(self, other: str) -> bool:
        return self.rank >= Classification(other).rank


_CLASSIFICATION_RANK = {c: i for i, c in enumerate(Classification)}


class Action(StrEnum):
    READ = "read"
    READ_PSEUDONYMISED = "read_pseudonymised"
    READ_AGGREGATE = "read_aggregate"
    EXPORT = "export"
    SHARE = "share"

    def covers(self, requested: Action) -> bool:
        """A grant for this action also allows the weaker forms of reading it implies."""
        return requested in _COVERS[self]


_COVERS: dict[Action, frozenset[Action]] = {
    Action.READ: frozenset({Action.READ, Action.READ_PSEUDONYMISED, Action.READ_AGGREGATE}),
    Action.READ_PSEUDONYMISED: frozenset({Action.READ_PSEUDONYMISED, Action.READ_AGGREGATE}),
    Action.READ_AGGREGATE: frozenset({Action.READ_AGGREGATE}),
    Action.EXPORT: frozenset({Action.EXPORT}),
    Action.SHARE: frozenset({Action.SHARE}),
}


class PurposeKind(StrEnum):
    """What a purpose is for; policies treat running a service and governing data apart."""

    OPERATIONS = "operations"  # running the city service the data comes from
    GOVERNANCE = "governance"  # catalog, quality, audit, retention: oversight of the data
    ANALYSIS = "analysis"  # planning, statistics, research


class LegalBasis(StrEnum):
    """GDPR Art. 6 bases; `consent` makes every use filter out subjects without consent."""

    PUBLIC_TASK = "public_task"
    LEGAL_OBLIGATION = "legal_obligation"
    CONSENT = "consent"
    CONTRACT = "contract"
    VITAL_INTERESTS = "vital_interests"
    LEGITIMATE_INTERESTS = "legitimate_interests"


@dataclass(frozen=True)
class Purpose:
    """A registered purpose; data is only used for purposes the city has declared."""

    id: str
    description: str
    kind: PurposeKind = PurposeKind.ANALYSIS


class DataTheme(StrEnum):
    """The EU data theme vocabulary that DCAT-AP requires for ``dcat:theme``.

    A closed list rather than free text, so the catalog can be published as DCAT-AP
    without a mapping step and portals group the city's datasets with everyone else's.
    """

    AGRICULTURE = "AGRI"
    ECONOMY = "ECON"
    EDUCATION = "EDUC"
    ENERGY = "ENER"
    ENVIRONMENT = "ENVI"
    GOVERNMENT = "GOVE"
    HEALTH = "HEAL"
    INTERNATIONAL = "INTR"
    JUSTICE = "JUST"
    PROVISIONAL = "OP_DATPRO"
    REGIONS = "REGI"
    SOCIETY = "SOCI"
    TECHNOLOGY = "TECH"
    TRANSPORT = "TRAN"


_ABSOLUTE_IRI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:\S+")
#: Longest id pattern accepted: patterns run on every entity creation and reassignment.
MAX_PATTERN_LENGTH = 500


def _is_iri(text: object) -> bool:
    return isinstance(text, str) and _ABSOLUTE_IRI.fullmatch(text) is not None


@dataclass(frozen=True)
class AssignmentRule:
    """Which entities belong to a dataset: by expanded entity type, by id pattern, or both.

    The pattern must match the whole entity id (``re.fullmatch``), so a pattern written for
    one city's ids cannot catch another's by a partial match. When several rules of the
    catalog match, ``urbanhub.model.catalog.RuleSet`` decides which one wins.
    """

    entity_type: str | None = None
    id_pattern: str | None = None
    priority: int = 0
    _regex: re.Pattern[str] | None = field(default=None, init=False, repr=False,
                                           compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.entity_type is None and self.id_pattern is None:
            raise BadRequestData("An assignment rule needs an entity type, an id pattern or "
                                 "both; a rule matching every entity is not allowed.")
        if self.entity_type is not None and not _is_iri(self.entity_type):
            raise BadRequestData(f"Assignment rule entity type {self.entity_type!r} is not an "
                                 "expanded IRI.")
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise BadRequestData(f"Assignment rule priority {self.priority!r} is not an "
                                 "integer.")
        if self.id_pattern is not None:
            object.__setattr__(self, "_regex", _compile_pattern(self.id_pattern))

    def matches(self, entity_id: str, types: Collection[str]) -> bool:
        if self.entity_type is not None and self.entity_type not in types:
            return False
        return self._regex is None or self._regex.fullmatch(entity_id) is not None


def _compile_pattern(pattern: str) -> re.Pattern[str]:
    if not isinstance(pattern, str) or not pattern:
        raise BadRequestData("An assignment rule id pattern must be a non-empty string.")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise BadRequestData(f"Assignment rule id pattern is longer than {MAX_PATTERN_LENGTH} "
                             "characters.")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise BadRequestData(f"Assignment rule id pattern {pattern!r} is not a valid regular "
                             f"expression: {exc}.") from exc


def parse_duration(text: str, what: str) -> timedelta | isodate.Duration:
    """A positive ISO 8601 duration (``PT15M``, ``P1D``, ``P1Y``); 400 naming ``what``."""
    try:
        duration = isodate.parse_duration(text) if isinstance(text, str) else None
    except (isodate.ISO8601Error, ValueError):
        duration = None
    if duration is None:
        raise BadRequestData(f"{what} {text!r} is not an ISO 8601 duration such as PT15M, "
                             "P1D or P1Y.")
    parts = ([duration.years, duration.months, duration.tdelta.total_seconds()]
             if isinstance(duration, isodate.Duration) else [duration.total_seconds()])
    if any(part < 0 for part in parts) or not any(part > 0 for part in parts):
        raise BadRequestData(f"{what} {text!r} must be a positive duration.")
    return duration


def parse_retention(text: str) -> timedelta:
    """A retention period: a positive ISO 8601 duration of exact length.

    Years and months are refused because their length varies and disposal must know exactly
    which day data expires: write ``P1826D`` rather than ``P5Y``.
    """
    return parse_exact_duration(text, "Retention", "P1826D for five years")


def parse_exact_duration(text: str, what: str, example: str) -> timedelta:
    """A positive ISO 8601 duration without years or months, whose length varies; 400
    naming ``what`` and suggesting ``example`` otherwise."""
    duration = parse_duration(text, what)
    if isinstance(duration, isodate.Duration):
        raise BadRequestData(f"{what} {text!r} uses years or months, whose length varies; "
                             f"give it in weeks, days or hours (e.g. {example}).")
    return duration


def format_duration(duration: timedelta) -> str:
    return str(isodate.duration_isoformat(duration))


def parse_coverage(value: object) -> dict[str, Any]:
    """Spatial coverage as a GeoJSON Polygon or MultiPolygon, from GeoJSON or a bbox.

    A bbox is ``[min_lon, min_lat, max_lon, max_lat]`` (the GeoJSON ``bbox`` order) and
    becomes its rectangle. The result is plain JSON (lists, floats), so a dataset read
    back from the store equals the one that was written.
    """
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != 4 or not all(isinstance(v, int | float) and not isinstance(v, bool)
                                      for v in value):
            raise BadRequestData("A spatial coverage bbox must be four numbers: min_lon, "
                                 "min_lat, max_lon, max_lat.")
        min_lon, min_lat, max_lon, max_lat = (float(v) for v in value)
        if not (min_lon < max_lon and min_lat < max_lat):
            raise BadRequestData("A spatial coverage bbox needs min_lon < max_lon and "
                                 "min_lat < max_lat.")
        shape = shapes.box(min_lon, min_lat, max_lon, max_lat)
    elif isinstance(value, Mapping):
        if value.get("type") not in ("Polygon", "MultiPolygon"):
            raise BadRequestData("Spatial coverage must be a GeoJSON Polygon or MultiPolygon "
                                 f"geometry (or a bbox), not {value.get('type')!r}.")
        try:
            shape = shapes.shape(value)
        except (ValueError, TypeError, IndexError, AttributeError, KeyError) as exc:
            raise BadRequestData(f"Spatial coverage is not valid GeoJSON: {exc}.") from exc
    else:
        raise BadRequestData("Spatial coverage must be a GeoJSON Polygon or MultiPolygon, or "
                             "a bbox of four numbers.")
    if shape.is_empty or not shape.is_valid or shape.area <= 0:
        reason = "it is empty" if shape.is_empty else explain_validity(shape)
        raise BadRequestData(f"Spatial coverage is not a valid area: {reason}.")
    min_lon, min_lat, max_lon, max_lat = shape.bounds
    if min_lon < -180 or max_lon > 180 or min_lat < -90 or max_lat > 90:
        raise BadRequestData("Spatial coverage must be in longitude/latitude (WGS 84): "
                             "longitudes within ±180, latitudes within ±90.")
    normalised: dict[str, Any] = orjson.loads(orjson.dumps(shapes.mapping(shape)))
    return normalised


@dataclass(frozen=True)
class Dataset:
    """A catalogued dataset: the unit that ownership, classification and grants refer to.

    Entity types and attribute names are expanded IRIs, so one dataset means the same
    thing whatever @context a client used to declare it.
    """

    id: str
    owner: str  # organisation id
    steward: str  # subject id of the accountable steward
    classification: Classification
    licence: str
    purposes: frozenset[str]  # purposes of collection
    legal_basis: LegalBasis
    retention: timedelta
    # Attributes classified more strictly than the dataset (a parking sensor's plate number).
    attribute_classes: Mapping[str, Classification] = field(
        default_factory=lambda: MappingProxyType({}), hash=False)
    # Attributes that identify a data subject: what pseudonymisation replaces.
    identifiers: frozenset[str] = frozenset()
    # The attribute whose value (a Property's value, a Relationship's object) is the data
    # subject's pseudonymous id: what consent filtering and erasure look records up by.
    subject_attribute: str | None = None
    title: str = ""
    description: str = ""
    theme: DataTheme | None = None
    entity_types: frozenset[str] = frozenset()  # the Smart Data Model types it holds
    update_frequency: str | None = None  # ISO 8601 duration (PT15M); years and months allowed
    # GeoJSON Polygon or MultiPolygon; None means the coverage was not declared.
    spatial_coverage: Mapping[str, Any] | None = field(default=None, hash=False)
    rules: tuple[AssignmentRule, ...] = ()

    def __post_init__(self) -> None:
        if not self.id or not self.owner or not self.steward:
            raise BadRequestData("A dataset needs an id, an owner organisation and a steward.")
        looser = sorted(name for name, cls in self.attribute_classes.items()
                        if Classification(cls) <= self.classification)
        if looser:
            raise BadRequestData(
                f"Dataset {self.id}: attribute classifications must be stricter than the "
                f"dataset's ({self.classification}); not so for: {', '.join(looser)}.")
        if self.classification is Classification.OPEN and (
                self.legal_basis is LegalBasis.CONSENT):
            raise BadRequestData(f"Dataset {self.id}: consent-based data cannot be open, "
                                 "because consent is given per purpose.")
        if self.legal_basis is LegalBasis.CONSENT and self.subject_attribute is None:
            raise BadRequestData(f"Dataset {self.id}: consent-based data needs a subject "
                                 "attribute (the attribute holding each data subject's "
                                 "pseudonymous id), or uses could not leave out the subjects "
                                 "without consent.")
        if self.subject_attribute is not None and not _is_iri(self.subject_attribute):
            raise BadRequestData(f"Dataset {self.id}: subject attribute "
                                 f"{self.subject_attribute!r} is not an expanded IRI.")
        if self.classification is Classification.OPEN and not self.licence.strip():
            raise BadRequestData(f"Dataset {self.id}: open data needs a licence.")
        if self.retention <= timedelta(0):
            raise BadRequestData(f"Dataset {self.id}: retention must be positive.")
        if self.update_frequency is not None:
            parse_duration(self.update_frequency, f"Dataset {self.id}: update frequency")
        not_iris = sorted(t for t in self.entity_types if not _is_iri(t))
        if not_iris:
            raise BadRequestData(f"Dataset {self.id}: entity types must be expanded IRIs; "
                                 f"not so for: {', '.join(not_iris)}.")
        undeclared = sorted({r.entity_type for r in self.rules
                             if r.entity_type is not None} - self.entity_types)
        if undeclared:
            raise BadRequestData(f"Dataset {self.id}: assignment rules name entity types the "
                                 f"dataset does not declare: {', '.join(undeclared)}.")
        object.__setattr__(self, "attribute_classes", MappingProxyType(
            {name: Classification(cls) for name, cls in self.attribute_classes.items()}))
        if self.spatial_coverage is not None:
            object.__setattr__(self, "spatial_coverage", parse_coverage(self.spatial_coverage))

    def classification_of(self, attribute: str) -> Classification:
        return self.attribute_classes.get(attribute, self.classification)


@dataclass(frozen=True)
class Grant:
    """Permission from an approved data-use request: who, what, which data, why, until when.

    The grantee is an organisation, a role, or both (then the caller must match both).
    A grant covers its dataset at the dataset's classification plus the stricter
    attributes it names. Conditions turn the permit it gives into a permit with obligations.
    """

    id: str
    action: Action
    dataset: str
    purpose: str
    valid_from: datetime
    valid_until: datetime
    grantee_organisation: str | None = None
    grantee_role: Role | None = None
    attributes: frozenset[str] = frozenset()
    pseudonymised: bool = False
    min_group_size: int | None = None  # aggregate-only with at least k subjects per group
    dp_epsilon: float | None = None  # differential-privacy budget per query

    def __post_init__(self) -> None:
        if self.grantee_organisation is None and self.grantee_role is None:
            raise BadRequestData(f"Grant {self.id} names no grantee (organisation or role).")
        if self.valid_from.tzinfo is None or self.valid_until.tzinfo is None:
            raise BadRequestData(f"Grant {self.id}: validity times must be timezone-aware.")
        if self.valid_until <= self.valid_from:
            raise BadRequestData(f"Grant {self.id}: valid_until must be after valid_from.")
        if self.min_group_size is not None and self.min_group_size < 2:
            raise BadRequestData(f"Grant {self.id}: minimum group size must be at least 2.")
        if self.dp_epsilon is not None and self.dp_epsilon <= 0:
            raise BadRequestData(f"Grant {self.id}: the DP epsilon budget must be positive.")
        if self.action is Action.READ_AGGREGATE and self.min_group_size is None:
            raise BadRequestData(f"Grant {self.id}: an aggregate grant needs a minimum "
                                 "group size.")

    @property
    def requires_pseudonymisation(self) -> bool:
        return self.pseudonymised or self.action is Action.READ_PSEUDONYMISED

    @property
    def condition_count(self) -> int:
        """How restrictive the grant is; the least restrictive covering grant is used."""
        return (int(self.requires_pseudonymisation) + int(self.min_group_size is not None)
                + int(self.dp_epsilon is not None))

    def active(self, now: datetime) -> bool:
        return self.valid_from <= now < self.valid_until


# Obligations: what the enforcement point must do to the data before it leaves.


@dataclass(frozen=True)
class DropAttributes:
    attributes: frozenset[str]


@dataclass(frozen=True)
class PseudonymiseAttributes:
    """Replace the values with a keyed HMAC; key_id names the (rotatable) key to use."""

    attributes: frozenset[str]
    key_id: str


@dataclass(frozen=True)
class Aggregate:
    """Return only aggregates whose groups hold at least min_group_size subjects."""

    min_group_size: int


@dataclass(frozen=True)
class DpNoise:
    epsilon: float


@dataclass(frozen=True)
class Watermark:
    """Mark the export so a leaked copy can be traced to its recipient."""

    recipient: str


@dataclass(frozen=True)
class ExcludeWithoutConsent:
    """The dataset rests on consent: leave out subjects without consent for this purpose."""

    purpose: str


Obligation = (DropAttributes | PseudonymiseAttributes | Aggregate | DpNoise | Watermark
              | ExcludeWithoutConsent)


class Effect(StrEnum):
    PERMIT = "permit"
    DENY = "deny"


# One text for "forbidden" and "does not exist", so a denial reveals nothing.
NOT_AVAILABLE = "The requested data does not exist or is not available to you."


@dataclass(frozen=True)
class Decision:
    """The PDP's answer. `reason` is for the audit trail; show callers `public_reason`."""

    effect: Effect
    reason: str
    policy_ids: tuple[str, ...] = ()
    obligations: tuple[Obligation, ...] = ()
    grant_id: str | None = None

    @property
    def permitted(self) -> bool:
        return self.effect is Effect.PERMIT

    @property
    def public_reason(self) -> str:
        return "Permitted." if self.permitted else NOT_AVAILABLE

    @classmethod
    def not_found(cls, what: str) -> Decision:
        """The decision for something that does not exist: same public face as a denial."""
        return cls(Effect.DENY, f"{what} does not exist")
