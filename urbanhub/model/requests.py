"""Data-use requests: asking for data, the privacy board's decision, the grants it creates.

Pure rules only; the request service (urbanhub.governance.requests) stores and audits them.
A request names datasets, perhaps stricter attributes, an action, a registered purpose, a
justification and how long access is needed. The privacy board approves it, possibly with
conditions and for less time, or rejects it with a reason; an approval becomes one
``Grant`` per dataset, valid from the approval for the duration granted. Nothing has to
run when a grant ends: the policy decision point compares ``valid_until`` with the time
of each read.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from urbanhub.model.caller import Caller
from urbanhub.model.errors import BadRequestData, Conflict, Forbidden
from urbanhub.model.governance import (
    Action,
    Dataset,
    Grant,
    Role,
    format_duration,
    parse_exact_duration,
)

#: Longest access a request may ask for: the board reviews every use at least this often.
MAX_GRANT_DURATION = timedelta(days=730)
#: Most datasets one request may name; a larger need is several reviewable requests.
MAX_DATASETS = 50
MAX_JUSTIFICATION = 5000
MAX_REASON = 2000
#: Largest differential-privacy budget a grant may allow per query. Beyond it the noise
#: protects next to nothing, so a larger value is far more likely a typing error.
MAX_DP_EPSILON = 10.0
#: Largest minimum group size: beyond any group a city's records could form.
MAX_MIN_GROUP_SIZE = 1_000_000
#: Roles that see every request, decision and grant: the board reviews, the CDO oversees.
OVERSIGHT = frozenset({Role.PRIVACY_BOARD, Role.CDO})


class RequestStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"


class GrantStatus(StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


def parse_access_duration(text: str, what: str = "Duration") -> timedelta:
    """How long access is asked or granted for: an exact ISO 8601 duration up to P730D.

    Years and months are refused because their length varies: a grant must say to the
    second when it ends.
    """
    duration = parse_exact_duration(text, what, "P90D")
    if duration > MAX_GRANT_DURATION:
        raise BadRequestData(f"{what} {text!r} is longer than the longest access a request "
                             f"may ask for, {format_duration(MAX_GRANT_DURATION)}; "
                             "file a new request when it ends.")
    return duration


def required_text(value: str, what: str, limit: int) -> str:
    """``value`` stripped; 400 naming ``what`` when it is blank, longer than ``limit`` or
    holds a NUL character (which PostgreSQL cannot store in text)."""
    if not isinstance(value, str) or not value.strip():
        raise BadRequestData(f"{what} must not be empty.")
    if len(value) > limit:
        raise BadRequestData(f"{what} must be at most {limit} characters.")
    if "\x00" in value:
        raise BadRequestData(f"{what} must not contain NUL characters.")
    return value.strip()


@dataclass(frozen=True)
class Conditions:
    """What the board attaches to an approval; each becomes an obligation of the grant."""

    pseudonymised: bool = False
    min_group_size: int | None = None  # aggregate-only, at least k subjects per group
    dp_epsilon: float | None = None

    def __post_init__(self) -> None:
        k = self.min_group_size
        if k is not None and (isinstance(k, bool) or not isinstance(k, int)
                              or not 2 <= k <= MAX_MIN_GROUP_SIZE):
            raise BadRequestData(f"The minimum group size must be an integer of at least 2 "
                                 f"(a group of one is a person) and at most "
                                 f"{MAX_MIN_GROUP_SIZE:,}, not {k!r}.")
        eps = self.dp_epsilon
        if eps is not None and not (isinstance(eps, int | float) and not isinstance(eps, bool)
                                    and math.isfinite(eps) and 0 < eps <= MAX_DP_EPSILON):
            raise BadRequestData(f"The DP epsilon must be a number above 0 and at most "
                                 f"{MAX_DP_EPSILON:g}, not {eps!r}.")


@dataclass(frozen=True)
class DataUseRequest:
    """A request as filed; the grantee is the requester's organisation, perhaps one role of it."""

    id: str
    requester: str
    organisation: str
    datasets: tuple[str, ...]
    action: Action
    purpose: str
    justification: str
    duration: timedelta
    filed_at: datetime
    attributes: frozenset[str] = frozenset()
    grantee_role: Role | None = None
    status: RequestStatus = RequestStatus.PENDING
    closed_at: datetime | None = None

    def __post_init__(self) -> None:
        if not self.datasets:
            raise BadRequestData("A data-use request names at least one dataset.")
        if len(self.datasets) > MAX_DATASETS:
            raise BadRequestData(f"A data-use request names at most {MAX_DATASETS} datasets.")
        repeated = sorted({d for d in self.datasets if self.datasets.count(d) > 1})
        if repeated:
            raise BadRequestData(f"Datasets named more than once: {', '.join(repeated)}.")
        object.__setattr__(self, "action", Action(self.action))
        object.__setattr__(self, "justification", required_text(
            self.justification, "The justification", MAX_JUSTIFICATION))
        if not timedelta(0) < self.duration <= MAX_GRANT_DURATION:
            raise BadRequestData(f"The duration must be positive and at most "
                                 f"{format_duration(MAX_GRANT_DURATION)}.")
        if self.grantee_role is not None:
            object.__setattr__(self, "grantee_role", Role(self.grantee_role))
            if self.grantee_role is Role.PUBLIC:
                raise BadRequestData("A grant cannot go to the public role: open data needs "
                                     "no grant, and other data never goes to everyone.")


@dataclass(frozen=True)
class RequestDecision:
    """The privacy board's answer to a request: approved with conditions, or rejected."""

    request_id: str
    outcome: RequestStatus
    decided_by: str
    decided_at: datetime
    reason: str | None = None  # why it was rejected; a note on an approval
    conditions: Conditions | None = None  # approvals only
    duration: timedelta | None = None  # approvals only: the access granted
    grant_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.outcome not in (RequestStatus.APPROVED, RequestStatus.REJECTED):
            raise BadRequestData(f"A decision approves or rejects, not {self.outcome!r}.")
        if self.outcome is RequestStatus.REJECTED:
            if self.reason is None or not self.reason.strip():
                raise BadRequestData("A rejection needs a reason: the requester needs to "
                                     "know what to change.")
            object.__setattr__(self, "reason",
                               required_text(self.reason, "The reason", MAX_REASON))
        elif self.reason is not None:
            object.__setattr__(self, "reason",
                               required_text(self.reason, "The note", MAX_REASON))


@dataclass(frozen=True)
class GrantRecord:
    """A stored grant: the permission itself, where it came from, whether it was revoked."""

    grant: Grant
    request_id: str
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    revocation_reason: str | None = None

    def status(self, now: datetime) -> GrantStatus:
        if self.revoked_at is not None:
            return GrantStatus.REVOKED
        return GrantStatus.EXPIRED if now >= self.grant.valid_until else GrantStatus.ACTIVE


def sees_everything(caller: Caller) -> bool:
    """Whether the caller sees every organisation's requests, decisions and grants."""
    return bool(caller.roles & OVERSIGHT)


def check_requested_attributes(attributes: Iterable[str], datasets: Iterable[Dataset]) -> None:
    """Only stricter attributes can be asked for: the others come with their dataset."""
    stricter = {name for d in datasets for name in d.attribute_classes}
    unknown = sorted(set(attributes) - stricter)
    if unknown:
        raise BadRequestData(
            f"Not a stricter attribute of any requested dataset: {', '.join(unknown)}. Ask "
            "only for attributes classified more strictly than their dataset; the others "
            "come with the dataset.")


def check_may_decide(caller: Caller, request: DataUseRequest, what: str) -> None:
    """The board decides pending requests, never those of the decider's own organisation."""
    if request.status is not RequestStatus.PENDING:
        raise Conflict(f"Request {request.id} is {request.status}; only a pending request "
                       f"can be {what}.")
    if caller.organisation == request.organisation or caller.subject == request.requester:
        raise Forbidden(f"{caller.subject} cannot decide request {request.id}: it comes from "
                        f"their own organisation ({request.organisation}), and nobody "
                        "approves their own access. Another member of the privacy board "
                        "must decide it.")


def check_may_withdraw(caller: Caller, request: DataUseRequest) -> None:
    if caller.subject != request.requester:
        raise Forbidden(f"Only the requester ({request.requester}) may withdraw request "
                        f"{request.id}.")
    if request.status is not RequestStatus.PENDING:
        raise Conflict(f"Request {request.id} is {request.status}; only a pending request "
                       "can be withdrawn.")


def approval_grants(request: DataUseRequest, datasets: Mapping[str, Dataset],
                    conditions: Conditions, duration: timedelta, now: datetime,
                    new_id: Callable[[], str]) -> list[Grant]:
    """The grants an approval creates: one per dataset, valid from ``now`` for ``duration``.

    Each grant covers the stricter attributes asked for that its dataset has. The board
    may shorten the access asked for, never lengthen it.
    """
    if duration > request.duration:
        raise BadRequestData(
            f"The access granted ({format_duration(duration)}) cannot be longer than "
            f"the access requested ({format_duration(request.duration)}).")
    if request.action is Action.READ_AGGREGATE and conditions.min_group_size is None:
        raise BadRequestData(f"Request {request.id} asks for read_aggregate: the approval "
                             "must set minGroupSize, the smallest group an aggregate may "
                             "cover (at least 2).")
    return [Grant(id=new_id(), action=request.action, dataset=dataset_id,
                  purpose=request.purpose, valid_from=now, valid_until=now + duration,
                  grantee_organisation=request.organisation,
                  grantee_role=request.grantee_role,
                  attributes=frozenset(request.attributes & datasets[dataset_id]
                                       .attribute_classes.keys()),
                  pseudonymised=conditions.pseudonymised,
                  min_group_size=conditions.min_group_size, dp_epsilon=conditions.dp_epsilon)
            for dataset_id in request.datasets]
