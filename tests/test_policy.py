"""The policy decision point: an authorization matrix against an independent rule table.

The expectations come from RULES/FORBIDS below, written from the privacy board's rules,
never from calling the PDP, so a policy edit that changes behaviour fails here.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from urbanhub.governance.policy import (
    InvalidPolicy,
    PolicyDecisionPoint,
    shipped_policy_text,
)
from urbanhub.model.caller import Caller
from urbanhub.model.errors import BadRequestData
from urbanhub.model.governance import (
    NOT_AVAILABLE,
    Action,
    Aggregate,
    Classification,
    Dataset,
    Decision,
    DpNoise,
    DropAttributes,
    ExcludeWithoutConsent,
    Grant,
    LegalBasis,
    Obligation,
    OrganisationKind,
    PseudonymiseAttributes,
    Purpose,
    PurposeKind,
    Role,
    Watermark,
)

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
KEY = "pseudonym-key-2025"
OWNER, OTHER_DEPT, PARTNER = "transport", "parks", "acme-mobility"
OPS, PLANNING, GOVERNANCE, RESEARCH = ("traffic-operations", "mobility-planning",
                                       "data-governance", "academic-research")
PURPOSES = [Purpose(OPS, "Run traffic signals and parking enforcement", PurposeKind.OPERATIONS),
            Purpose(PLANNING, "Plan the mobility network", PurposeKind.ANALYSIS),
            Purpose(GOVERNANCE, "Catalog, quality and audit oversight", PurposeKind.GOVERNANCE),
            Purpose(RESEARCH, "University research under a data-use agreement")]
UNKNOWN = "astrology"
READS = {Action.READ, Action.READ_PSEUDONYMISED, Action.READ_AGGREGATE}


@pytest.fixture(scope="module")
def pdp() -> PolicyDecisionPoint:
    return PolicyDecisionPoint(PURPOSES, pseudonym_key_id=KEY)


def dataset(classification: Classification, **changes: object) -> Dataset:
    fields: dict[str, object] = dict(
        id=f"ds-{classification}", owner=OWNER, steward="alice", classification=classification,
        licence="CC-BY-4.0", purposes=frozenset({OPS, PLANNING}),
        legal_basis=LegalBasis.PUBLIC_TASK, retention=timedelta(days=365),
        identifiers=frozenset({"holder"}))
    fields.update(changes)
    return Dataset(**fields)  # type: ignore[arg-type]


def staff(role: Role, org: str, subject: str | None = None) -> Caller:
    kind = OrganisationKind.PARTNER if org == PARTNER else OrganisationKind.DEPARTMENT
    return Caller(subject or f"{role}@{org}", frozenset({role.value}), org,
                  organisation_kind=kind)


def grant(ds: Dataset, action: Action, *, org: str | None = OWNER, role: Role | None = None,
          purpose: str = RESEARCH, start: datetime = NOW - DAY, end: datetime = NOW + DAY,
          gid: str = "g-1", **conditions: object) -> Grant:
    return Grant(gid, action, ds.id, purpose, start, end, grantee_organisation=org,
                 grantee_role=role, **conditions)  # type: ignore[arg-type]


# ---- The rule table (what the privacy board wrote, restated independently) -------------

ANY = None
OPEN, INTERNAL, PERSONAL, SENSITIVE = list(Classification)
EVERY = set(Classification)


@dataclass(frozen=True)
class Case:
    role: Role
    org: str | None  # OWNER, OTHER_DEPT, PARTNER, or None for the public
    classification: Classification
    action: Action
    purpose: str | None
    grant_state: str


@dataclass(frozen=True)
class Permit:
    id: str
    classifications: set[Classification]
    roles: set[Role] | None
    orgs: set[str] | None
    actions: set[Action]
    purposes: set[str] | None  # None: any purpose, even none or unknown
    needs_grant: bool = False
    watermark: bool = False


REGISTERED = {OPS, PLANNING, GOVERNANCE, RESEARCH}
GRANT_STATES = ["none", "active", "expired", "pseudonymised", "aggregate_k10", "dp"]
USABLE_GRANT_STATES = {"active", "pseudonymised", "aggregate_k10", "dp"}

RULES = [
    Permit("open-data", {OPEN}, ANY, ANY, READS | {Action.EXPORT}, ANY),
    Permit("internal-city-staff", {INTERNAL}, {Role.ANALYST, Role.STEWARD, Role.CDO, Role.OPERATOR},
           {OWNER, OTHER_DEPT}, READS, REGISTERED),
    Permit("cdo-governance", {OPEN, INTERNAL}, {Role.CDO}, ANY, READS, {GOVERNANCE}),
    Permit("owner-staff-collection-purpose", {PERSONAL}, {Role.ANALYST, Role.STEWARD},
           {OWNER}, READS, {OPS, PLANNING}),
    # alice, the owner organisation's steward, is also the datasets' steward.
    Permit("steward-operations", EVERY, {Role.STEWARD}, {OWNER}, READS, {OPS}),
    Permit("grant-read", EVERY, ANY, ANY, READS, {RESEARCH}, needs_grant=True),
    Permit("grant-export-share", EVERY, ANY, ANY, {Action.EXPORT, Action.SHARE}, {RESEARCH},
           needs_grant=True, watermark=True),
]


def forbids(case: Case, grant_usable: bool) -> set[str]:
    restricted = case.classification is not OPEN
    found = set()
    if restricted and case.purpose is None:
        found.add("purpose-required")
    if restricted and case.purpose == UNKNOWN:
        found.add("purpose-registered")
    if restricted and case.role is Role.PUBLIC:
        found.add("public-open-only")
    if restricted and case.role is Role.PRIVACY_BOARD:
        found.add("privacy-board-reviews-not-uses")
    if case.role is Role.CDO and case.classification >= PERSONAL and not grant_usable:
        found.add("cdo-governs-not-snoops")
    return found


def grant_conditions(state: str) -> set[Obligation]:
    table: dict[str, set[Obligation]] = {
        "pseudonymised": {PseudonymiseAttributes(frozenset({"holder"}), KEY)},
        "aggregate_k10": {Aggregate(10)}, "dp": {DpNoise(0.5)}}
    return set(table.get(state, set()))


def expected(case: Case, subject: str) -> tuple[bool, set[str], set[Obligation]]:
    grant_usable = case.grant_state in USABLE_GRANT_STATES and case.purpose == RESEARCH
    denied_by = forbids(case, grant_usable)
    permits = [r for r in RULES
               if case.classification in r.classifications
               and (r.roles is None or case.role in r.roles)
               and (r.orgs is None or case.org in r.orgs)
               and case.action in r.actions
               and (r.purposes is None or case.purpose in r.purposes)
               and (grant_usable or not r.needs_grant)]
    if denied_by or not permits:
        return False, denied_by, set()
    options = []
    for rule in permits:
        obligations = grant_conditions(case.grant_state) if rule.needs_grant else set()
        if rule.watermark:
            obligations.add(Watermark(subject))
        options.append((len(obligations), rule.id, obligations))
    return True, {r.id for r in permits}, min(options, key=lambda o: (o[0], o[1]))[2]


def matrix_grant(state: str, ds: Dataset, action: Action, caller: Caller) -> list[Grant]:
    who: dict[str, object] = ({"org": caller.organisation} if caller.organisation
                              else {"org": None, "role": Role.PUBLIC})
    table: dict[str, dict[str, object]] = {
        "pseudonymised": {"pseudonymised": True}, "aggregate_k10": {"min_group_size": 10},
        "dp": {"dp_epsilon": 0.5}}
    conditions = table.get(state, {})
    granted = Action.READ if action in READS else action  # a read grant covers every read
    if state == "none":
        return []
    if state == "expired":
        return [grant(ds, granted, start=NOW - 10 * DAY, end=NOW - DAY, **who)]  # type: ignore[arg-type]
    return [grant(ds, granted, **who, **conditions)]  # type: ignore[arg-type]


CALLERS = [(role, org) for role in Role if role is not Role.PUBLIC
           for org in (OWNER, OTHER_DEPT, PARTNER)] + [(Role.PUBLIC, None)]


def matrix_caller(role: Role, org: str | None) -> Caller:
    if org is None:
        return Caller.public()
    return staff(role, org, "alice" if (role, org) == (Role.STEWARD, OWNER) else None)


@pytest.mark.parametrize("classification", list(Classification))
@pytest.mark.parametrize(("role", "org"), CALLERS, ids=[f"{r}-{o}" for r, o in CALLERS])
def test_authorization_matrix(pdp: PolicyDecisionPoint, role: Role, org: str | None,
                              classification: Classification) -> None:
    """Every action, purpose and grant state for one caller and one classification."""
    caller = matrix_caller(role, org)
    ds = dataset(classification)
    mismatches = []
    for action, purpose, state in itertools.product(
            Action, [None, UNKNOWN, OPS, PLANNING, GOVERNANCE, RESEARCH], GRANT_STATES):
        case = Case(role, org, classification, action, purpose, state)
        want_permit, want_ids, want_obligations = expected(case, caller.subject)
        got = pdp.decide(caller, action, ds, purpose, now=NOW,
                         grants=matrix_grant(state, ds, action, caller))
        if (got.permitted, set(got.policy_ids), set(got.obligations)) != (
                want_permit, want_ids, want_obligations) or len(got.obligations) != len(
                want_obligations):
            mismatches.append(f"{action}/{purpose}/{state}: got {got.effect} "
                              f"{got.policy_ids} {got.obligations}, want permit={want_permit} "
                              f"{sorted(want_ids)} {want_obligations}")
        if not got.permitted:
            assert got.public_reason == NOT_AVAILABLE
            assert caller.subject not in got.public_reason and ds.id not in got.public_reason
    assert not mismatches, "\n".join(mismatches)


def test_matrix_covers_every_dimension() -> None:
    assert {r for r, _ in CALLERS} == set(Role)
    assert len(CALLERS) * len(Classification) * len(Action) * 6 * len(GRANT_STATES) == 11520


# ---- Purposes ---------------------------------------------------------------------------

def test_missing_purpose_is_denied_with_a_reason_saying_so(pdp: PolicyDecisionPoint) -> None:
    decision = pdp.decide(staff(Role.ANALYST, OWNER), Action.READ, dataset(INTERNAL), None,
                          now=NOW)
    assert not decision.permitted
    assert "a purpose is required" in decision.reason
    assert decision.policy_ids == ("purpose-required",)


def test_unknown_purpose_is_denied(pdp: PolicyDecisionPoint) -> None:
    decision = pdp.decide(staff(Role.ANALYST, OWNER), Action.READ, dataset(INTERNAL), UNKNOWN,
                          now=NOW)
    assert not decision.permitted and "not a registered purpose" in decision.reason


def test_open_data_needs_no_login_and_no_purpose(pdp: PolicyDecisionPoint) -> None:
    for action in (Action.READ, Action.EXPORT):
        decision = pdp.decide(Caller.public(), action, dataset(OPEN), None, now=NOW)
        assert decision.permitted and decision.obligations == ()
        assert decision.policy_ids == ("open-data",)


def test_deny_and_not_found_look_the_same(pdp: PolicyDecisionPoint) -> None:
    denied = pdp.decide(Caller.public(), Action.READ, dataset(SENSITIVE), OPS, now=NOW)
    assert denied.public_reason == Decision.not_found("dataset ds-x").public_reason
    assert "public" in denied.reason  # the audit trail still gets the real reason


# ---- Attributes stricter than their dataset -------------------------------------------

PARKING = Dataset("parking", OWNER, "alice", INTERNAL, "CC-BY-4.0", frozenset({OPS}),
                  LegalBasis.PUBLIC_TASK, timedelta(days=90),
                  attribute_classes={"plate": PERSONAL, "photo": SENSITIVE},
                  identifiers=frozenset({"plate"}))


def test_stricter_attribute_is_dropped_without_a_grant(pdp: PolicyDecisionPoint) -> None:
    decision = pdp.decide(staff(Role.ANALYST, OTHER_DEPT), Action.READ, PARKING, RESEARCH,
                          now=NOW)
    assert decision.permitted
    assert decision.obligations == (DropAttributes(frozenset({"plate", "photo"})),)
    assert "attributes dropped: photo, plate" in decision.reason


def test_stricter_attribute_is_kept_under_a_grant_naming_it(pdp: PolicyDecisionPoint) -> None:
    caller = staff(Role.ANALYST, OTHER_DEPT)
    naming_plate = grant(PARKING, Action.READ, org=OTHER_DEPT, attributes=frozenset({"plate"}))
    not_naming = grant(PARKING, Action.READ, org=OTHER_DEPT, gid="g-2")
    assert pdp.decide(caller, Action.READ, PARKING, RESEARCH, now=NOW,
                      grants=[naming_plate]).obligations == (
        DropAttributes(frozenset({"photo"})),)
    assert pdp.decide(caller, Action.READ, PARKING, RESEARCH, now=NOW,
                      grants=[not_naming]).obligations == (
        DropAttributes(frozenset({"plate", "photo"})),)


def test_pseudonymised_grant_on_a_stricter_attribute(pdp: PolicyDecisionPoint) -> None:
    caller = staff(Role.ANALYST, OTHER_DEPT)
    pseudo = grant(PARKING, Action.READ, org=OTHER_DEPT, attributes=frozenset({"plate"}),
                   pseudonymised=True)
    decision = pdp.decide(caller, Action.READ, PARKING, RESEARCH, now=NOW, grants=[pseudo])
    assert set(decision.obligations) == {DropAttributes(frozenset({"photo"})),
                                         PseudonymiseAttributes(frozenset({"plate"}), KEY)}


def test_attribute_decided_on_its_own(pdp: PolicyDecisionPoint) -> None:
    caller = staff(Role.ANALYST, OTHER_DEPT)
    plate_grant = grant(PARKING, Action.READ, org=OTHER_DEPT, attributes=frozenset({"plate"}))
    assert not pdp.decide(caller, Action.READ, PARKING, RESEARCH, attribute="plate",
                          now=NOW).permitted
    with_grant = pdp.decide(caller, Action.READ, PARKING, RESEARCH, attribute="plate",
                            now=NOW, grants=[plate_grant])
    assert with_grant.permitted and with_grant.grant_id == "g-1"
    ordinary = pdp.decide(caller, Action.READ, PARKING, RESEARCH, attribute="occupancy",
                          now=NOW)
    assert ordinary.permitted and ordinary.policy_ids == ("internal-city-staff",)


def test_steward_keeps_stricter_attributes_for_operations(pdp: PolicyDecisionPoint) -> None:
    decision = pdp.decide(staff(Role.STEWARD, OWNER, "alice"), Action.READ, PARKING, OPS,
                          now=NOW)
    assert decision.permitted and decision.obligations == ()


def test_dataset_steward_from_another_organisation(pdp: PolicyDecisionPoint) -> None:
    caller = staff(Role.STEWARD, PARTNER, "alice")
    assert pdp.decide(caller, Action.READ, dataset(SENSITIVE), OPS, now=NOW).permitted
    assert not pdp.decide(caller, Action.READ, dataset(SENSITIVE), PLANNING, now=NOW).permitted


def test_attribute_classification_must_be_stricter() -> None:
    with pytest.raises(BadRequestData, match="stricter"):
        dataset(PERSONAL, attribute_classes={"district": INTERNAL})


# ---- Grants ---------------------------------------------------------------------------

def test_read_grant_covers_weaker_reads_only(pdp: PolicyDecisionPoint) -> None:
    caller, ds = staff(Role.ANALYST, PARTNER), dataset(SENSITIVE)
    read = grant(ds, Action.READ, org=PARTNER)
    assert pdp.decide(caller, Action.READ_AGGREGATE, ds, RESEARCH, now=NOW,
                      grants=[read]).permitted
    assert not pdp.decide(caller, Action.EXPORT, ds, RESEARCH, now=NOW, grants=[read]).permitted
    aggregate = grant(ds, Action.READ_AGGREGATE, org=PARTNER, min_group_size=5)
    assert not pdp.decide(caller, Action.READ, ds, RESEARCH, now=NOW,
                          grants=[aggregate]).permitted


def test_grant_validity_window(pdp: PolicyDecisionPoint) -> None:
    caller, ds = staff(Role.ANALYST, PARTNER), dataset(PERSONAL)
    window = grant(ds, Action.READ, org=PARTNER, start=NOW, end=NOW + DAY)
    assert pdp.decide(caller, Action.READ, ds, RESEARCH, now=NOW, grants=[window]).permitted
    for moment in (NOW - timedelta(seconds=1), NOW + DAY):
        assert not pdp.decide(caller, Action.READ, ds, RESEARCH, now=moment,
                              grants=[window]).permitted


def test_grant_to_a_role_or_another_organisation(pdp: PolicyDecisionPoint) -> None:
    ds = dataset(PERSONAL)
    to_role = grant(ds, Action.READ, org=None, role=Role.OPERATOR)
    assert pdp.decide(staff(Role.OPERATOR, PARTNER), Action.READ, ds, RESEARCH, now=NOW,
                      grants=[to_role]).permitted
    assert not pdp.decide(staff(Role.ANALYST, PARTNER), Action.READ, ds, RESEARCH, now=NOW,
                          grants=[to_role]).permitted
    elsewhere = grant(ds, Action.READ, org=OTHER_DEPT)
    assert not pdp.decide(staff(Role.ANALYST, PARTNER), Action.READ, ds, RESEARCH, now=NOW,
                          grants=[elsewhere]).permitted


def test_least_restrictive_grant_is_used(pdp: PolicyDecisionPoint) -> None:
    caller, ds = staff(Role.ANALYST, PARTNER), dataset(SENSITIVE)
    grants = [grant(ds, Action.READ, org=PARTNER, gid="g-dp", dp_epsilon=1.0),
              grant(ds, Action.READ, org=PARTNER, gid="g-k", min_group_size=10,
                    pseudonymised=True)]
    decision = pdp.decide(caller, Action.READ, ds, RESEARCH, now=NOW, grants=grants)
    assert decision.grant_id == "g-dp" and decision.obligations == (DpNoise(1.0),)


def test_consent_based_dataset_excludes_subjects_without_consent(
        pdp: PolicyDecisionPoint) -> None:
    ds = dataset(PERSONAL, legal_basis=LegalBasis.CONSENT,
                 subject_attribute="https://example.org/holder")
    decision = pdp.decide(staff(Role.ANALYST, OWNER), Action.READ, ds, PLANNING, now=NOW)
    assert decision.obligations == (ExcludeWithoutConsent(PLANNING),)


def test_system_and_unknown_roles_get_open_data_only(pdp: PolicyDecisionPoint) -> None:
    system = Caller.system("publisher")
    assert pdp.decide(system, Action.READ, dataset(OPEN), None, now=NOW).permitted
    assert not pdp.decide(system, Action.READ, dataset(INTERNAL), PLANNING, now=NOW).permitted


def test_now_must_be_timezone_aware(pdp: PolicyDecisionPoint) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        pdp.decide(Caller.public(), Action.READ, dataset(OPEN), None, now=datetime(2025, 1, 1))


# ---- Batches --------------------------------------------------------------------------

def test_decide_many_equals_decide_one_by_one(pdp: PolicyDecisionPoint) -> None:
    targets: list[tuple[Dataset, str | None]] = [
        (dataset(c), None) for c in Classification] + [
        (PARKING, None), (PARKING, "plate"), (PARKING, "photo"), (PARKING, "occupancy"),
        (dataset(PERSONAL), "holder")]
    for role, org in CALLERS:
        caller = matrix_caller(role, org)
        grants = [grant(PARKING, Action.READ, org=org or OWNER, attributes=frozenset({"plate"}),
                        pseudonymised=True),
                  grant(dataset(SENSITIVE), Action.READ, org=org or OWNER, gid="g-2",
                        min_group_size=10)]
        for action, purpose in itertools.product(Action, [None, OPS, RESEARCH]):
            batch = pdp.decide_many(caller, action, targets, purpose, now=NOW, grants=grants)
            single = [pdp.decide(caller, action, ds, purpose, attribute=attribute, now=NOW,
                                 grants=grants) for ds, attribute in targets]
            assert batch == single


# ---- The policy text ------------------------------------------------------------------

def test_policy_text_and_version(pdp: PolicyDecisionPoint) -> None:
    assert pdp.policy_text == shipped_policy_text()
    assert pdp.policy_version.startswith("sha256:")
    assert PolicyDecisionPoint(PURPOSES).policy_version == pdp.policy_version
    edited = pdp.policy_text + "\n// reviewed by the privacy board on 2025-06-01\n"
    assert PolicyDecisionPoint(PURPOSES, policy_text=edited).policy_version != pdp.policy_version


@pytest.mark.parametrize(("text", "message"), [
    ('@id("x") permit (principal, action, resource) when { resource.classification == };',
     "does not parse"),
    ('@id("bad-attribute") permit (principal, action, resource) when { resource.colour == "red" };',
     r"do not validate against the schema: bad-attribute: .*colour"),
    ('@id("bad-action") permit (principal, action == Action::"delete", resource);',
     "bad-action"),
    ('permit (principal, action, resource);', "has no @id"),
    ('@id("a") permit (principal, action, resource);\n'
     '@id("a") permit (principal, action, resource);', "share the @id 'a'"),
    ('@id("f") forbid (principal, action, resource);', "no @reason"),
    ('@id("o") @obligations("shred") permit (principal, action, resource);',
     "unknown obligations"),
    ("", "contains no policies"),
])
def test_malformed_policies_are_rejected_with_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(InvalidPolicy, match=message):
        PolicyDecisionPoint(PURPOSES, policy_text=text)


def test_malformed_schema_is_rejected() -> None:
    with pytest.raises(InvalidPolicy, match="schema does not parse"):
        PolicyDecisionPoint(PURPOSES, schema_text='{"": {"entityTypes": 3}}')


def test_classification_order() -> None:
    assert OPEN < INTERNAL < PERSONAL < SENSITIVE
    assert sorted([SENSITIVE, OPEN, PERSONAL, INTERNAL]) == [OPEN, INTERNAL, PERSONAL, SENSITIVE]
    assert max(Classification) is SENSITIVE
