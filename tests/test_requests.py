"""Data-use requests, the privacy board's decisions and grants: filing, approval with
conditions, rejection, withdrawal, revocation, expiry, visibility, the grant cache the
enforcement point reads, and the audit trail, on SQLite and PostgreSQL.

Every HTTP call states its caller: API keys of members created through ``hub.identities``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi.testclient import TestClient
from sqlalchemy import Connection, MetaData, event, text

from urbanhub.governance import revisions
from urbanhub.governance.policy import PolicyDecisionPoint
from urbanhub.governance.requests import GrantService
from urbanhub.hub.runtime import Hub
from urbanhub.model.caller import Caller
from urbanhub.model.errors import Conflict
from urbanhub.model.governance import (
    Action,
    Aggregate,
    AssignmentRule,
    Classification,
    Dataset,
    DpNoise,
    LegalBasis,
    OrganisationKind,
    PseudonymiseAttributes,
    Purpose,
    PurposeKind,
    Role,
)
from urbanhub.model.identity import Member, Organisation, Scope
from urbanhub.model.requests import Conditions
from urbanhub.ngsild.context import TermMap
from urbanhub.ngsild.entity import parse_entity
from urbanhub.store.tables import metadata

GOV = "/governance/v1"
VOCAB = "https://uri.etsi.org/ngsi-ld/default-context/"
NOISE = "noise-complaints"
AIR = "air"
COMPLAINT = VOCAB + "NoiseComplaint"
REPORTER = VOCAB + "reporter"
ADDRESS = VOCAB + "exactAddress"
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SYSTEM = Caller.system("test")
REQUEST_TABLES = ("data_use_requests", "data_use_decisions", "grants", "grant_revision",
                  "consents")
MEMBERS = {  # subject: (organisation, roles)
    "stella": ("environment", {Role.STEWARD}),
    "otto": ("environment", {Role.OPERATOR}),
    "ann": ("uni", {Role.ANALYST}),
    "una": ("uni", {Role.ANALYST}),
    "pat": ("ethics", {Role.PRIVACY_BOARD}),
    "ursula": ("uni", {Role.PRIVACY_BOARD}),
    "vera": ("greenlab", {Role.STEWARD}),
}


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class City:
    """The members of the test city and their API keys (all scopes their roles allow)."""

    hub: Hub
    keys: dict[str, str]

    def headers(self, subject: str | None) -> dict[str, str]:
        return {} if subject is None else {"Authorization": f"ApiKey {self.keys[subject]}"}

    def caller(self, subject: str, purpose: str | None = None) -> Caller:
        return replace(self.hub.identities.authenticate_api_key(self.keys[subject]),
                       purpose=purpose)


def build_city(hub: Hub) -> City:
    """Organisations, members with keys, two purposes and two datasets.

    The CDO carla is of the city data office; ``ursula`` sits on the privacy board for the
    university; ``vera`` stewards a partner lab (not a city department).
    """
    cdo_key = hub.identities.bootstrap(
        Organisation("city-data-office", "City Data Office", OrganisationKind.DEPARTMENT),
        "carla", timedelta(days=30)).key
    carla = hub.identities.authenticate_api_key(cdo_key)
    for ident, name, kind in [("environment", "Environment", OrganisationKind.DEPARTMENT),
                              ("uni", "Riverton University", OrganisationKind.UNIVERSITY),
                              ("ethics", "Ethics Council", OrganisationKind.CIVIL_SOCIETY),
                              ("greenlab", "Green Lab", OrganisationKind.PARTNER)]:
        hub.identities.create_organisation(carla, Organisation(ident, name, kind))
    keys = {"carla": cdo_key}
    for subject, (organisation, roles) in MEMBERS.items():
        member = hub.identities.add_member(carla, Member(subject, organisation,
                                                         frozenset(roles)))
        keys[subject] = hub.identities.issue_api_key(carla, subject, member.allowed_scopes,
                                                     timedelta(days=30)).key
    hub.catalog.create_purpose(SYSTEM, Purpose("research", "Academic research on noise.",
                                               PurposeKind.ANALYSIS))
    hub.catalog.create_purpose(SYSTEM, Purpose("monitoring", "Running the noise service.",
                                               PurposeKind.OPERATIONS))
    hub.catalog.create_dataset(SYSTEM, Dataset(
        id=NOISE, owner="environment", steward="stella", classification=Classification.PERSONAL,
        licence="", purposes=frozenset({"monitoring"}), legal_basis=LegalBasis.PUBLIC_TASK,
        retention=timedelta(days=365), attribute_classes={ADDRESS: Classification.SENSITIVE},
        identifiers=frozenset({REPORTER}), entity_types=frozenset({COMPLAINT}),
        rules=(AssignmentRule(COMPLAINT),), title="Noise complaints"))
    hub.catalog.create_dataset(SYSTEM, Dataset(
        id=AIR, owner="environment", steward="stella", classification=Classification.OPEN,
        licence="CC-BY-4.0", purposes=frozenset({"monitoring"}),
        legal_basis=LegalBasis.PUBLIC_TASK, retention=timedelta(days=365)))
    return City(hub, keys)


@pytest.fixture
def city(hub: Hub) -> City:
    return build_city(hub)


@pytest.fixture
def client(public_client: TestClient) -> TestClient:
    """A client sending no credentials of its own: every call below states its caller."""
    return public_client


@pytest.fixture
def clock(hub: Hub) -> Clock:
    moving = Clock(NOW)
    hub.requests.clock = moving
    hub.grants.clock = moving
    hub.guard.clock = moving  # the enforcement point's "now" for reads over HTTP
    return moving


def request_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "datasets": [NOISE], "attributes": ["exactAddress"], "action": "read",
        "purpose": "research", "duration": "P90D",
        "justification": "Relating complaints to traffic noise for the 2026 noise map."}
    body.update(changes)
    return body


def file(client: TestClient, city: City, subject: str = "ann", **changes: Any) -> str:
    response = client.post(f"{GOV}/data-use-requests", headers=city.headers(subject),
                           json=request_body(**changes))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def approve(client: TestClient, city: City, request_id: str, subject: str = "pat",
            **body: Any) -> Any:
    return client.post(f"{GOV}/data-use-requests/{request_id}/approval",
                       headers=city.headers(subject), json=body)


def assert_problem(response: Any, status: int, *fragments: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    detail = response.json()["detail"]
    for fragment in fragments:
        assert fragment in detail, detail


def audit_actions(hub: Hub) -> list[tuple[str, str]]:
    with hub.engine.connect() as conn:
        return [(r.actor, r.action) for r in conn.execute(text(
            "SELECT actor, action FROM audit_log WHERE action LIKE 'governance.%' "
            "ORDER BY seq"))]


def pdp() -> PolicyDecisionPoint:
    return PolicyDecisionPoint([Purpose("research", "Research.", PurposeKind.ANALYSIS)])


def noise(hub: Hub) -> Dataset:
    return hub.catalog.dataset(NOISE).dataset


# --- the whole path ------------------------------------------------------------------------

def test_an_approval_with_conditions_becomes_grants_the_policy_decision_point_honours(
        hub: Hub, client: TestClient, city: City, clock: Clock) -> None:
    filed = client.post(f"{GOV}/data-use-requests", headers=city.headers("ann"),
                        json=request_body(datasets=[NOISE, AIR]))
    assert filed.status_code == 201, filed.text
    request_id = filed.json()["id"]
    assert filed.headers["location"] == f"{GOV}/data-use-requests/{request_id}"
    assert {k: filed.json()[k] for k in ("requester", "organisation", "status", "datasets",
                                         "attributes", "duration", "decision")} == {
        "requester": "ann", "organisation": "uni", "status": "pending",
        "datasets": [NOISE, AIR], "attributes": ["exactAddress"], "duration": "P90D",
        "decision": None}
    ann = city.caller("ann", "research")
    assert hub.grants.grants_for(ann) == []

    approved = approve(client, city, request_id, pseudonymised=True, minGroupSize=5,
                       dpEpsilon=1, duration="P30D", note="Aggregates only, as discussed.")
    assert approved.status_code == 200, approved.text
    decision = approved.json()["decision"]
    assert approved.json()["status"] == "approved"
    assert {k: decision[k] for k in ("outcome", "decidedBy", "reason", "conditions",
                                     "duration")} == {
        "outcome": "approved", "decidedBy": "pat", "reason": "Aggregates only, as discussed.",
        "conditions": {"pseudonymised": True, "minGroupSize": 5, "dpEpsilon": 1.0},
        "duration": "P30D"}
    assert len(decision["grants"]) == 2

    listed = client.get(f"{GOV}/grants", headers=city.headers("ann")).json()
    assert sorted(g["id"] for g in listed) == sorted(decision["grants"])
    noise_grant = next(g for g in listed if g["dataset"] == NOISE)
    assert {k: noise_grant[k] for k in ("requestId", "action", "purpose",
                                        "granteeOrganisation", "granteeRole", "attributes",
                                        "pseudonymised", "minGroupSize", "dpEpsilon",
                                        "status")} == {
        "requestId": request_id, "action": "read", "purpose": "research",
        "granteeOrganisation": "uni", "granteeRole": None, "attributes": ["exactAddress"],
        "pseudonymised": True, "minGroupSize": 5, "dpEpsilon": 1.0, "status": "active"}
    assert noise_grant["validFrom"].startswith("2026-03-02T09:00:00")
    assert noise_grant["validUntil"].startswith("2026-04-01T09:00:00")
    air_grant = next(g for g in listed if g["dataset"] == AIR)
    assert air_grant["attributes"] == []  # the air dataset has no stricter attributes

    grants = hub.grants.grants_for(ann)
    assert sorted(g.id for g in grants) == sorted(decision["grants"])
    permit = pdp().decide(ann, Action.READ, noise(hub), "research", now=NOW + timedelta(days=1),
                          grants=grants)
    assert permit.permitted and permit.grant_id == noise_grant["id"]
    # The stricter attribute asked for is covered too (not dropped), pseudonymised as well.
    assert permit.obligations == (
        PseudonymiseAttributes(frozenset({REPORTER, ADDRESS}), "default"), Aggregate(5),
        DpNoise(1.0))
    # Without the grant the university has no access to personal data.
    assert not pdp().decide(ann, Action.READ, noise(hub), "research", now=NOW).permitted

    decisions = client.get(f"{GOV}/decisions", headers=city.headers("ann")).json()
    assert [d["requestId"] for d in decisions] == [request_id]
    assert audit_actions(hub) == [("ann", "governance.request.file"),
                                  ("pat", "governance.request.approve")]
    assert hub.audit.verify().ok


def test_a_grant_stops_covering_when_it_expires_with_no_job(
        hub: Hub, client: TestClient, city: City, clock: Clock) -> None:
    request_id = file(client, city, attributes=[])
    assert approve(client, city, request_id, duration="P7D").status_code == 200
    ann = city.caller("ann", "research")
    until = NOW + timedelta(days=7)
    clock.now = until
    (grant,) = hub.grants.grants_for(ann)  # still returned: validity is the PDP's to check
    assert grant.valid_until == until
    assert pdp().decide(ann, Action.READ, noise(hub), "research",
                        now=until - timedelta(microseconds=1), grants=[grant]).permitted
    assert not pdp().decide(ann, Action.READ, noise(hub), "research", now=until,
                            grants=[grant]).permitted
    expired = client.get(f"{GOV}/grants?status=expired", headers=city.headers("ann")).json()
    assert [g["id"] for g in expired] == [grant.id] and expired[0]["status"] == "expired"
    active = client.get(f"{GOV}/grants?status=active", headers=city.headers("ann"))
    assert active.json() == []


def test_a_revoked_grant_is_gone_at_once_here_and_within_the_check_interval_elsewhere(
        hub: Hub, client: TestClient, city: City, clock: Clock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(revisions, "REVISION_CHECK_S", 3600.0)
    request_id = file(client, city)
    (grant_id,) = approve(client, city, request_id).json()["decision"]["grants"]
    ann = city.caller("ann", "research")
    other_process = GrantService(hub.engine, hub.audit)
    assert [g.id for g in other_process.grants_for(ann)] == [grant_id]  # cached there now
    assert [g.id for g in hub.grants.grants_for(ann)] == [grant_id]

    url = f"{GOV}/grants/{grant_id}/revocation"
    assert_problem(client.post(url, headers=city.headers("pat"), json={"reason": "x"}), 403,
                   "needs the role cdo")
    assert_problem(client.post(url, headers=city.headers("carla"), json={}), 400, "reason")
    assert_problem(client.post(url, headers=city.headers("carla"), json={"reason": "  "}),
                   400, "The reason for a revocation must not be empty")
    revoked = client.post(url, headers=city.headers("carla"),
                          json={"reason": "The project ended early."})
    assert revoked.status_code == 200, revoked.text
    assert {k: revoked.json()[k] for k in ("status", "revokedBy", "revocationReason")} == {
        "status": "revoked", "revokedBy": "carla", "revocationReason": "The project ended early."}
    assert hub.grants.grants_for(ann) == []
    assert [g.id for g in other_process.grants_for(ann)] == [grant_id]  # not checked yet
    monkeypatch.setattr(revisions, "REVISION_CHECK_S", 0.0)
    assert other_process.grants_for(ann) == []
    assert_problem(client.post(url, headers=city.headers("carla"), json={"reason": "again"}),
                   409, "already revoked")
    listed = client.get(f"{GOV}/grants?status=revoked", headers=city.headers("ann")).json()
    assert [g["id"] for g in listed] == [grant_id]
    assert_problem(client.post(f"{GOV}/grants/grant-0000/revocation",
                               headers=city.headers("carla"), json={"reason": "x"}), 404)
    assert audit_actions(hub)[-1] == ("carla", "governance.grant.revoke")
    assert hub.audit.verify().ok


def test_reads_over_the_api_follow_the_grant_from_approval_to_expiry_and_revocation(
        hub: Hub, client: TestClient, city: City, clock: Clock) -> None:
    hub.entities.create(SYSTEM, parse_entity({
        "id": "urn:ngsi-ld:NoiseComplaint:1", "type": "NoiseComplaint",
        "reporter": {"type": "Property", "value": "resident-17"},
        "level": {"type": "Property", "value": 71}}, TermMap()))
    ann = {**city.headers("ann"), "Urbanhub-Purpose": "research"}

    def complaints() -> list[dict[str, Any]]:
        response = client.get("/ngsi-ld/v1/entities?type=NoiseComplaint", headers=ann)
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()
        return found

    assert complaints() == []
    expiring = file(client, city, attributes=[], duration="P10D")
    assert approve(client, city, expiring, pseudonymised=True).status_code == 200
    (complaint,) = complaints()
    assert complaint["level"]["value"] == 71
    assert complaint["reporter"]["value"] not in ("resident-17", None)  # pseudonymised
    clock.now = NOW + timedelta(days=10)
    assert complaints() == []  # expired, with nothing run in between

    revoked = file(client, city, attributes=[], duration="P10D")
    (grant_id,) = approve(client, city, revoked).json()["decision"]["grants"]
    assert complaints()[0]["reporter"]["value"] == "resident-17"  # no conditions this time
    assert client.post(f"{GOV}/grants/{grant_id}/revocation", headers=city.headers("carla"),
                       json={"reason": "Data leaked."}).status_code == 200
    assert complaints() == []


# --- decisions -----------------------------------------------------------------------------

def test_a_rejection_needs_a_reason_and_closes_the_request(
        hub: Hub, client: TestClient, city: City, clock: Clock) -> None:
    request_id = file(client, city)
    url = f"{GOV}/data-use-requests/{request_id}/rejection"
    assert_problem(client.post(url, headers=city.headers("pat"), json={}), 400,
                   "reason: Field required")
    assert_problem(client.post(url, headers=city.headers("pat"), json={"reason": " "}), 400,
                   "A rejection needs a reason")
    rejected = client.post(url, headers=city.headers("pat"),
                           json={"reason": "Pseudonymised data would do; ask for that."})
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["status"] == "rejected"
    assert rejected.json()["decision"]["reason"] == "Pseudonymised data would do; ask for that."
    assert rejected.json()["decision"]["conditions"] is None
    shown = client.get(f"{GOV}/data-use-requests/{request_id}", headers=city.headers("ann"))
    assert shown.json()["decision"]["outcome"] == "rejected"
    assert_problem(approve(client, city, request_id), 409, "is rejected")
    assert hub.grants.grants_for(city.caller("ann")) == []
    assert audit_actions(hub) == [("ann", "governance.request.file"),
                                  ("pat", "governance.request.reject")]


def test_no_one_approves_their_own_organisations_access(
        client: TestClient, city: City, clock: Clock) -> None:
    request_id = file(client, city)
    assert_problem(approve(client, city, request_id, subject="ursula"), 403,
                   "ursula cannot decide request", "own organisation (uni)",
                   "Another member of the privacy board")
    assert_problem(client.post(f"{GOV}/data-use-requests/{request_id}/rejection",
                               headers=city.headers("ursula"), json={"reason": "no"}), 403,
                   "own organisation")
    assert approve(client, city, request_id, subject="pat").status_code == 200


@pytest.mark.parametrize(("subject", "status", "fragment"), [
    ("stella", 403, "needs the role privacy_board; stella has the roles steward"),
    ("carla", 403, "needs the role privacy_board; carla has the roles cdo"),
    ("ann", 403, "needs the role privacy_board"),
    (None, 401, "needs credentials"),
])
def test_only_the_privacy_board_decides(client: TestClient, city: City, clock: Clock,
                                        subject: str | None, status: int,
                                        fragment: str) -> None:
    request_id = file(client, city)
    response = client.post(f"{GOV}/data-use-requests/{request_id}/approval",
                           headers=city.headers(subject), json={})
    assert_problem(response, status, fragment)


def test_a_board_credential_without_the_govern_scope_cannot_decide(
        hub: Hub, client: TestClient, city: City, clock: Clock) -> None:
    request_id = file(client, city)
    read_only = hub.identities.issue_api_key(city.caller("pat"), "pat",
                                             frozenset({Scope.READ}), timedelta(days=1)).key
    response = client.post(f"{GOV}/data-use-requests/{request_id}/approval",
                           headers={"Authorization": f"ApiKey {read_only}"}, json={})
    assert_problem(response, 403, "needs the govern scope")


def test_concurrent_decisions_on_one_request_let_one_win(
        hub: Hub, client: TestClient, city: City, clock: Clock) -> None:
    request_id = file(client, city)
    board = [hub.identities.add_member(city.caller("carla"), Member(
        f"board-{i}", "ethics", frozenset({Role.PRIVACY_BOARD}))) for i in range(4)]
    outcomes: list[str] = []

    def decide(member: Member) -> None:
        caller = Caller(member.subject, frozenset({"privacy_board"}), "ethics",
                        scopes=frozenset({"read", "govern"}))
        try:
            hub.requests.approve(caller, request_id, Conditions(pseudonymised=True))
            outcomes.append("approved")
        except Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=decide, args=(m,)) for m in board]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["approved", "conflict", "conflict", "conflict"]
    assert len(hub.grants.grants_for(city.caller("ann"))) == 1
    assert hub.audit.verify().ok


# --- withdrawal and visibility -------------------------------------------------------------

def test_the_requester_withdraws_a_pending_request(
        hub: Hub, client: TestClient, city: City, clock: Clock) -> None:
    request_id = file(client, city)
    url = f"{GOV}/data-use-requests/{request_id}/withdrawal"
    assert_problem(client.post(url, headers=city.headers("una")), 403,
                   "Only the requester (ann)")
    assert_problem(client.post(url, headers=city.headers("stella")), 404)  # not visible
    withdrawn = client.post(url, headers=city.headers("ann"))
    assert withdrawn.status_code == 200 and withdrawn.json()["status"] == "withdrawn"
    assert withdrawn.json()["closedAt"].startswith("2026-03-02T09:00:00")
    assert_problem(client.post(url, headers=city.headers("ann")), 409, "is withdrawn")
    assert_problem(approve(client, city, request_id), 409, "only a pending request")
    assert audit_actions(hub)[-1] == ("ann", "governance.request.withdraw")


def test_members_see_their_organisations_requests_the_board_and_cdo_see_all(
        client: TestClient, city: City, clock: Clock) -> None:
    ann_request = file(client, city, "ann")
    una_request = file(client, city, "una", datasets=[AIR], attributes=[])
    stella_request = file(client, city, "stella", purpose="monitoring", attributes=[])

    def ids(subject: str, path: str = "data-use-requests", query: str = "") -> set[str]:
        response = client.get(f"{GOV}/{path}{query}", headers=city.headers(subject))
        assert response.status_code == 200, response.text
        return {item["id"] if "id" in item else item["requestId"] for item in response.json()}

    assert ids("ann") == ids("una") == {ann_request, una_request}
    assert ids("stella") == {stella_request}
    assert ids("pat") == ids("carla") == {ann_request, una_request, stella_request}
    assert_problem(client.get(f"{GOV}/data-use-requests/{ann_request}",
                              headers=city.headers("stella")), 404, "visible to you")
    assert approve(client, city, una_request).status_code == 200
    assert approve(client, city, stella_request).status_code == 200
    assert ids("ann", query="?status=approved") == {una_request}
    assert ids("ann", query="?status=pending") == {ann_request}
    assert ids("stella", "decisions") == {stella_request}
    assert ids("pat", "decisions") == {una_request, stella_request}
    una_grants = client.get(f"{GOV}/grants", headers=city.headers("una")).json()
    assert [g["dataset"] for g in una_grants] == [AIR]
    assert_problem(client.get(f"{GOV}/grants/{una_grants[0]['id']}",
                              headers=city.headers("stella")), 404)
    assert client.get(f"{GOV}/grants/{una_grants[0]['id']}",
                      headers=city.headers("carla")).status_code == 200
    assert len(client.get(f"{GOV}/data-use-requests?limit=1",
                          headers=city.headers("pat")).json()) == 1
    assert_problem(client.get(f"{GOV}/data-use-requests?limit=0",
                              headers=city.headers("pat")), 400, "limit")


def test_anonymous_callers_are_asked_to_log_in(client: TestClient, city: City) -> None:
    assert_problem(client.post(f"{GOV}/data-use-requests", json=request_body()), 401,
                   "Filing a data-use request needs credentials")
    for path in ("data-use-requests", "decisions", "grants"):
        assert client.get(f"{GOV}/{path}").status_code == 401
    assert client.post(f"{GOV}/grants/g/revocation", json={"reason": "x"}).status_code == 401


# --- grantees ------------------------------------------------------------------------------

def test_a_grant_for_one_role_covers_only_members_with_it(
        hub: Hub, client: TestClient, city: City, clock: Clock) -> None:
    request_id = file(client, city, granteeRole="analyst")
    assert approve(client, city, request_id).status_code == 200
    assert len(hub.grants.grants_for(city.caller("ann"))) == 1
    assert hub.grants.grants_for(city.caller("ursula")) == []  # uni, but not an analyst
    assert hub.grants.grants_for(city.caller("stella")) == []  # another organisation
    (grant,) = client.get(f"{GOV}/grants", headers=city.headers("una")).json()
    assert grant["granteeRole"] == "analyst"


def test_reading_the_grants_costs_one_primary_key_lookup_per_check_interval(
        hub: Hub, client: TestClient, city: City, clock: Clock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    approve(client, city, file(client, city))
    ann = city.caller("ann", "research")
    statements: list[str] = []

    def count(conn: Connection, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    def reads_for_five_calls() -> list[str]:
        statements.clear()
        event.listen(hub.engine, "before_cursor_execute", count)
        try:
            for _ in range(5):
                assert len(hub.grants.grants_for(ann)) == 1
        finally:
            event.remove(hub.engine, "before_cursor_execute", count)
        return list(statements)

    monkeypatch.setattr(revisions, "REVISION_CHECK_S", 3600.0)
    hub.grants.grants_for(ann)  # fills the cache
    assert reads_for_five_calls() == []
    monkeypatch.setattr(revisions, "REVISION_CHECK_S", 0.0)
    checks = reads_for_five_calls()
    assert len(checks) == 5 and all("grant_revision" in s for s in checks)


# --- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize(("changes", "fragment"), [
    ({"datasets": [NOISE, "parking", "bins"]}, "Unknown datasets: parking, bins"),
    ({"datasets": []}, "datasets"),
    ({"datasets": [NOISE, NOISE]}, "Datasets named more than once: noise-complaints"),
    ({"purpose": "marketing"}, "Unknown purpose marketing"),
    ({"duration": "P731D"}, "longer than the longest access a request may ask for, P730D"),
    ({"duration": "P3Y"}, "uses years or months"),
    ({"duration": "soon"}, "is not an ISO 8601 duration"),
    ({"duration": "P0D"}, "must be a positive duration"),
    ({"attributes": ["reporter"]}, "Not a stricter attribute of any requested dataset: "
                                   + REPORTER),
    ({"attributes": ["bad name"]}, "Invalid attribute name"),
    ({"action": "delete"}, "action"),
    ({"justification": "   "}, "The justification must not be empty"),
    ({"justification": "x" * 5001}, "justification"),
    ({"purpose": "re\u0000search"}, "purpose"),
    ({"datasets": ["noise complaints"]}, "datasets"),
    ({"granteeRole": "public"}, "cannot go to the public role"),
    ({"granteeRole": "mayor"}, "granteeRole"),
    ({"extra": 1}, "Extra inputs are not permitted"),
])
def test_bad_requests_are_refused_naming_the_problem(
        hub: Hub, client: TestClient, city: City, changes: dict[str, Any],
        fragment: str) -> None:
    response = client.post(f"{GOV}/data-use-requests", headers=city.headers("ann"),
                           json=request_body(**changes))
    assert_problem(response, 400, fragment)
    assert audit_actions(hub) == []


@pytest.mark.parametrize(("body", "fragment"), [
    ({"duration": "P91D"}, "cannot be longer than the access requested (P90D)"),
    ({"duration": "P1M"}, "uses years or months"),
    ({"minGroupSize": 1}, "at least 2 (a group of one is a person) and at most 1,000,000, "
                          "not 1"),
    ({"minGroupSize": 10**12}, "at most 1,000,000"),
    ({"minGroupSize": "5"}, "minGroupSize"),
    ({"dpEpsilon": 0}, "above 0 and at most 10"),
    ({"dpEpsilon": 50.0}, "above 0 and at most 10"),
    ({"note": " "}, "The note must not be empty"),
    ({"note": "ok\u0000"}, "The note must not contain NUL characters"),
    ({"conditions": {}}, "Extra inputs are not permitted"),
])
def test_bad_approvals_are_refused_and_change_nothing(
        hub: Hub, client: TestClient, city: City, clock: Clock, body: dict[str, Any],
        fragment: str) -> None:
    request_id = file(client, city)
    assert_problem(approve(client, city, request_id, **body), 400, fragment)
    shown = client.get(f"{GOV}/data-use-requests/{request_id}", headers=city.headers("pat"))
    assert shown.json()["status"] == "pending"
    assert hub.grants.grants_for(city.caller("ann")) == []


def test_an_aggregate_only_request_needs_a_minimum_group_size_to_be_approved(
        hub: Hub, client: TestClient, city: City, clock: Clock) -> None:
    request_id = file(client, city, action="read_aggregate", attributes=[])
    assert_problem(approve(client, city, request_id), 400,
                   "asks for read_aggregate: the approval must set minGroupSize")
    assert approve(client, city, request_id, minGroupSize=10).status_code == 200
    (grant,) = hub.grants.grants_for(city.caller("ann"))
    assert grant.action is Action.READ_AGGREGATE and grant.min_group_size == 10


def test_unknown_requests_are_not_found(client: TestClient, city: City) -> None:
    assert_problem(client.get(f"{GOV}/data-use-requests/req-missing",
                              headers=city.headers("pat")), 404, "req-missing")
    assert_problem(approve(client, city, "req-missing"), 404, "req-missing")


# --- schema --------------------------------------------------------------------------------

def test_the_migration_creates_the_tables_as_declared(hub: Hub) -> None:
    declared = MetaData()
    for name in (*REQUEST_TABLES, "datasets"):
        metadata.tables[name].to_metadata(declared)

    def ours(name: str | None, kind: str, parent: Any) -> bool:
        return kind != "table" or name in (*REQUEST_TABLES, "datasets")

    with hub.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"include_name": ours})
        assert compare_metadata(context, declared) == []
