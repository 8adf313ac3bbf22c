"""Governance vocabulary: who may do what with which data, for which purpose.

Pure types only. The policy decision point (urbanhub.governance.policy) evaluates them;
the enforcement point (the query service) carries out the obligations of a Decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from types import MappingProxyType

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


@dataclass(frozen=True)
class Dataset:
    """A catalogued dataset: the unit that ownership, classification and grants refer to."""

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
        if self.retention <= timedelta(0):
            raise BadRequestData(f"Dataset {self.id}: retention must be positive.")
        object.__setattr__(self, "attribute_classes", MappingProxyType(
            {name: Classification(cls) for name, cls in self.attribute_classes.items()}))

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
