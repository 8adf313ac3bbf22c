"""Governance on every read, through the HTTP API, on SQLite and PostgreSQL.

The authorization matrix sends real requests with real API keys for every role x
organisation x classification x purpose x grant state, and checks against the privacy
board's rule table (restated independently in ``tests/test_policy.py``) that exactly the
allowed entities come back, shaped by their obligations, and that a denied case leaks
nothing: no ids, no counts, no type or attribute names, and the same 404 as an entity
that does not exist.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import member_key
from tests.test_policy import (
    CALLERS,
    DAY,
    GOVERNANCE,
    GRANT_STATES,
    NOW,
    OPS,
    OTHER_DEPT,
    OWNER,
    PARTNER,
    PLANNING,
    PURPOSES,
    RESEARCH,
    UNKNOWN,
    Case,
    expected,
)
from urbanhub.api.app import create_app
from urbanhub.governance.pseudonymise import PREFIX
from urbanhub.hub.runtime import Hub
from urbanhub.model.caller import Caller
from urbanhub.model.governance import (
    Action,
    Aggregate,
    AssignmentRule,
    Classification,
    Dataset,
    DpNoise,
    Grant,
    LegalBasis,
    OrganisationKind,
    PseudonymiseAttributes,
    Role,
)
from urbanhub.model.identity import Organisation

SYSTEM = Caller.system("test")
VOCAB = "https://uri.etsi.org/ngsi-ld/default-context/"
HOLDER, SPEED, PLATE = VOCAB + "holder", VOCAB + "speed", VOCAB + "plate"
ORGS = {OWNER: OrganisationKind.DEPARTMENT, OTHER_DEPT: OrganisationKind.DEPARTMENT,
        PARTNER: OrganisationKind.PARTNER}
PURPOSE_CHOICES = [None, UNKNOWN, OPS, PLANNING, GOVERNANCE, RESEARCH]


def probe_type(classification: Classification) -> str:
    return f"Probe{classification.value.capitalize()}"


def probe_id(classification: Classification) -> str:
    return f"urn:ngsi-ld:{probe_type(classification)}:p1"


def matrix_dataset(classification: Classification) -> Dataset:
    """As ``tests.test_policy.dataset``, with the catalog fields an entity needs to land."""
    kind = VOCAB + probe_type(classification)
    return Dataset(id=f"ds-{classification}", owner=OWNER, steward="alice",
                   classification=classification, licence="CC-BY-4.0",
                   purposes=frozenset({OPS, PLANNING}), legal_basis=LegalBasis.PUBLIC_TASK,
                   retention=timedelta(days=365), identifiers=frozenset({HOLDER}),
                   entity_types=frozenset({kind}), rules=(AssignmentRule(entity_type=kind),))


class StaticGrants:
    """Grants as an approved data-use request would leave them (the PDP filters them)."""

    def __init__(self) -> None:
        self.grants: list[Grant] = []

    def grants_for(self, caller: Caller) -> Sequence[Grant]:
        return self.grants


def matrix_grants(state: str, caller: Caller) -> list[Grant]:
    """One read grant per dataset in ``state`` for the caller's organisation (or public)."""
    if state == "none":
        return []
    who: dict[str, Any] = ({"grantee_organisation": caller.organisation}
                           if caller.organisation else {"grantee_role": Role.PUBLIC})
    start, end = (NOW - 10 * DAY, NOW - DAY) if state == "expired" else (NOW - DAY, NOW + DAY)
    conditions: dict[str, Any] = {"pseudonymised": {"pseudonymised": True},
                                  "aggregate_k10": {"min_group_size": 10},
                                  "dp": {"dp_epsilon": 0.5}}.get(state, {})
    return [Grant(f"g-{c.value}", Action.READ, f"ds-{c}", RESEARCH, start, end, **who,
                  **conditions) for c in Classification]


@pytest.fixture
def world(hub: Hub) -> StaticGrants:
    """Four datasets of one owner, one per classification, with one entity each."""
    hub.catalog.load(SYSTEM, PURPOSES, [matrix_dataset(c) for c in Classification])
    for classification in Classification:
        hub.entities.create(SYSTEM, {"id": probe_id(classification),
                                     "type": [VOCAB + probe_type(classification)], "attrs": {
            SPEED: {"": {"type": "Property", "value": 42}},
            HOLDER: {"": {"type": "Property", "value": "card-1234"}}}})
    grants = StaticGrants()
    hub.guard.grants = grants
    hub.guard.clock = lambda: NOW
    return grants


def caller_headers(hub: Hub, role: Role, org: str | None, purpose: str | None) -> dict[str, str]:
    headers = {"Urbanhub-Purpose": purpose} if purpose else {}
    if org is None:
        return headers
    subject = "alice" if (role, org) == (Role.STEWARD, OWNER) else f"{role}@{org}"
    key = member_key(hub, subject, role, organisation=Organisation(org, org, ORGS[org]))
    return {**headers, "X-API-Key": key}


def test_authorization_matrix_over_http(hub: Hub, world: StaticGrants,
                                        public_client: TestClient) -> None:
    """Every caller, purpose and grant state: the entities that come back, and nothing
    else, by query, count, id and type listing."""
    client = public_client
    types = ",".join(probe_type(c) for c in Classification)
    missing = client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:ProbeOpen:nowhere").json()["detail"]
    mismatches: list[str] = []
    cases = 0
    for (role, org), purpose, state in itertools.product(CALLERS, PURPOSE_CHOICES, GRANT_STATES):
        headers = caller_headers(hub, role, org, purpose)
        caller = Caller("probe", organisation=org)
        world.grants = matrix_grants(state, caller)
        want: dict[str, set[type]] = {}
        for classification in Classification:
            cases += 1
            permitted, _, obligations = expected(
                Case(role, org, classification, Action.READ, purpose, state), "x")
            kinds = {type(o) for o in obligations}
            if permitted and not kinds & {Aggregate, DpNoise}:  # aggregate-only: no entities
                want[probe_id(classification)] = kinds
        label = f"{role}/{org}/{purpose}/{state}"
        found = client.get("/ngsi-ld/v1/entities", headers=headers,
                           params={"type": types, "count": "true", "limit": 10})
        assert found.status_code == 200, (label, found.text)
        got = {e["id"]: e for e in found.json()}
        if set(got) != set(want) or found.headers["NGSILD-Results-Count"] != str(len(want)):
            mismatches.append(f"{label}: got {sorted(got)}, want {sorted(want)}")
            continue
        for entity_id, entity in got.items():
            holder = entity["holder"]["value"]
            pseudonymised = PseudonymiseAttributes in want[entity_id]
            if entity["speed"]["value"] != 42 or holder.startswith(PREFIX) != pseudonymised:
                mismatches.append(f"{label}: {entity_id} shaped wrongly: {entity}")
        for classification in Classification:
            one = client.get(f"/ngsi-ld/v1/entities/{probe_id(classification)}",
                             headers=headers)
            if probe_id(classification) in want:
                ok = one.status_code == 200
            else:  # exactly the answer for an id that does not exist
                ok = one.status_code == 404 and one.json()["detail"] == missing.replace(
                    "urn:ngsi-ld:ProbeOpen:nowhere", probe_id(classification))
            if not ok:
                mismatches.append(f"{label}: GET {probe_id(classification)} -> "
                                  f"{one.status_code}")
        listed = set(client.get("/ngsi-ld/v1/types", headers=headers).json()["typeList"])
        if listed != {i.split(":")[2] for i in want}:
            mismatches.append(f"{label}: types {sorted(listed)}")
    assert cases == len(CALLERS) * len(PURPOSE_CHOICES) * len(GRANT_STATES) * 4
    assert not mismatches, f"{len(mismatches)} mismatches:\n" + "\n".join(mismatches[:40])


def test_a_stricter_attribute_is_invisible_everywhere(hub: Hub, client: TestClient) -> None:
    """A parking sensor's plate (personal) in an internal dataset: an operator reads the
    occupancy, never the plate, its name, its history, or entities matched by it."""
    internal = Dataset(id="parking", owner="city", steward="parking-steward",
                       classification=Classification.INTERNAL, licence="",
                       purposes=frozenset({"city-operations"}),
                       legal_basis=LegalBasis.PUBLIC_TASK, retention=timedelta(days=30),
                       attribute_classes={PLATE: Classification.PERSONAL},
                       entity_types=frozenset({VOCAB + "Spot"}),
                       rules=(AssignmentRule(entity_type=VOCAB + "Spot"),))
    hub.catalog.load(SYSTEM, [], [internal])
    spot = {"id": "urn:ngsi-ld:Spot:s1", "type": "Spot",
            "occupied": {"type": "Property", "value": True,
                         "observedAt": "2025-06-01T10:00:00Z"},
            "plate": {"type": "Property", "value": "AB-123-C",
                      "observedAt": "2025-06-01T10:00:00Z"}}
    assert client.post("/ngsi-ld/v1/entities", json=spot).status_code == 201
    shown = client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Spot:s1").json()
    assert "occupied" in shown and "plate" not in shown
    by_plate = client.get("/ngsi-ld/v1/entities", params={
        "type": "Spot", "q": 'plate=="AB-123-C"', "count": "true"})
    assert by_plate.json() == [] and by_plate.headers["NGSILD-Results-Count"] == "0"
    with_plate = client.get("/ngsi-ld/v1/entities", params={"type": "Spot", "attrs": "plate"})
    assert with_plate.json() == []
    assert "plate" not in client.get("/ngsi-ld/v1/attributes").json()["attributeList"]
    spot_type = client.get("/ngsi-ld/v1/types/Spot").json()
    assert [a["attributeName"] for a in spot_type["attributeDetails"]] == ["occupied"]
    history = client.get("/ngsi-ld/v1/temporal/entities/urn:ngsi-ld:Spot:s1",
                         params={"attrs": "plate,occupied"}).json()
    assert "plate" not in history and len(history["occupied"]) == 1
    assert _dropped(hub, "parking") == {PLATE}
    # Deleted, the spot's history is still read through its dataset's view (its tombstone).
    assert client.delete("/ngsi-ld/v1/entities/urn:ngsi-ld:Spot:s1").status_code == 204
    kept = client.get("/ngsi-ld/v1/temporal/entities/urn:ngsi-ld:Spot:s1",
                      params={"attrs": "plate,occupied"})
    assert kept.status_code == 200, kept.text
    assert kept.json()["type"] == "Spot"
    assert "plate" not in kept.json() and len(kept.json()["occupied"]) == 1


def test_aggregates_of_a_stricter_attribute_stay_hidden(hub: Hub, client: TestClient) -> None:
    """A vehicle's speed is personal in an internal dataset: an operator's hourly sums of
    the vehicles (rollups read while the entities load) show the load, never the speed."""
    fleet = Dataset(id="fleet", owner="city", steward="fleet-steward",
                    classification=Classification.INTERNAL, licence="",
                    purposes=frozenset({"city-operations"}), legal_basis=LegalBasis.PUBLIC_TASK,
                    retention=timedelta(days=30),
                    attribute_classes={SPEED: Classification.PERSONAL},
                    entity_types=frozenset({VOCAB + "Van"}),
                    rules=(AssignmentRule(entity_type=VOCAB + "Van"),))
    hub.catalog.load(SYSTEM, [], [fleet])
    for number in (1, 2):
        van = {"id": f"urn:ngsi-ld:Van:v{number}", "type": "Van"}
        for name, value in (("speed", 50.0 * number), ("load", 3.0 * number)):
            van[name] = [{"type": "Property", "value": value + minute,
                          "observedAt": f"2025-06-01T10:{minute:02d}:00Z"} for minute in (5, 35)]
        created = client.post("/ngsi-ld/v1/temporal/entities", json=van)
        assert created.status_code == 201, created.text
    params = {"type": "Van", "options": "aggregatedValues", "aggrMethods": "sum",
              "aggrPeriodDuration": "PT1H", "timerel": "between",
              "timeAt": "2025-06-01T10:00:00Z", "endTimeAt": "2025-06-01T12:00:00Z"}
    for attrs in ("speed,load", "speed", None):
        asked = dict(params, attrs=attrs) if attrs else params
        found = client.get("/ngsi-ld/v1/temporal/entities", params=asked)
        assert found.status_code == 200, found.text
        vans = found.json()
        assert [van["id"] for van in vans] == (
            [] if attrs == "speed" else ["urn:ngsi-ld:Van:v1", "urn:ngsi-ld:Van:v2"])
        for number, van in enumerate(vans, start=1):
            assert "speed" not in van
            assert van["load"]["sum"] == [[6.0 * number + 40, "2025-06-01T10:00:00.000Z",
                                           "2025-06-01T11:00:00.000Z"]]


def _dropped(hub: Hub, dataset_id: str) -> set[str]:
    """What the decision for the client fixture's operator drops from a dataset."""
    operator = hub.identities.authenticate_api_key(member_key(hub, "operator", Role.OPERATOR))
    scope = hub.guard.scope(Caller(operator.subject, operator.roles, operator.organisation,
                                   "city-operations", operator.organisation_kind,
                                   operator.scopes))
    return set(scope.views[dataset_id].hidden)


def test_open_data_needs_no_login_and_writes_need_credentials(
        hub: Hub, public_client: TestClient, client: TestClient) -> None:
    hub.catalog.load(SYSTEM, [], [Dataset(
        id="air", owner="city", steward="operator", classification=Classification.OPEN,
        licence="CC-BY-4.0", purposes=frozenset(), legal_basis=LegalBasis.PUBLIC_TASK,
        retention=timedelta(days=30), entity_types=frozenset({VOCAB + "Air"}),
        rules=(AssignmentRule(entity_type=VOCAB + "Air"),))])
    entity = {"id": "urn:ngsi-ld:Air:a1", "type": "Air", "no2": {"type": "Property",
                                                                 "value": 12}}
    refused = public_client.post("/ngsi-ld/v1/entities", json=entity)
    assert refused.status_code == 401 and "WWW-Authenticate" in refused.headers
    assert refused.headers["content-type"] == "application/problem+json"
    assert client.post("/ngsi-ld/v1/entities", json=entity).status_code == 201
    assert public_client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Air:a1").json()["no2"][
        "value"] == 12
    batch = public_client.post("/ngsi-ld/v1/entityOperations/upsert", json=[entity])
    assert batch.status_code == 401
    patch = public_client.patch("/ngsi-ld/v1/entities/urn:ngsi-ld:Air:a1/attrs",
                                json={"no2": {"type": "Property", "value": 99}})
    assert patch.status_code == 401
    assert public_client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Air:a1").json()["no2"][
        "value"] == 12


def test_an_operator_cannot_write_another_organisations_dataset(
        hub: Hub, client: TestClient) -> None:
    hub.catalog.load(SYSTEM, [], [Dataset(
        id="parks-trees", owner="parks", steward="someone", classification=Classification.OPEN,
        licence="CC-BY-4.0", purposes=frozenset(), legal_basis=LegalBasis.PUBLIC_TASK,
        retention=timedelta(days=30), entity_types=frozenset({VOCAB + "Tree"}),
        rules=(AssignmentRule(entity_type=VOCAB + "Tree"),))])
    tree = {"id": "urn:ngsi-ld:Tree:t1", "type": "Tree"}
    created = client.post("/ngsi-ld/v1/entities", json=tree)
    assert created.status_code == 403 and "parks" in created.json()["detail"]
    assert client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Tree:t1").status_code == 404
    hub.entities.create(SYSTEM, {"id": "urn:ngsi-ld:Tree:t2", "type": [VOCAB + "Tree"],
                                 "attrs": {}})
    assert client.delete("/ngsi-ld/v1/entities/urn:ngsi-ld:Tree:t2").status_code == 403
    assert client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Tree:t2").status_code == 200


def test_every_read_decision_is_in_the_audit_trail(hub: Hub, public_client: TestClient) -> None:
    public_client.get("/ngsi-ld/v1/entities", params={"type": "Anything"})
    public_client.get("/ngsi-ld/v1/types", headers={"Urbanhub-Purpose": "astrology"})
    hub.decisions.flush()
    entries = [e for e in _entries(hub) if e.action == "access.read"]
    assert [e.details["purpose"] for e in entries] == [None, "astrology"]
    assert entries[0].actor == "anonymous"
    assert "urn:urbanhub:dataset:uncatalogued" in entries[1].details["denied"]
    assert hub.audit.verify().ok


def _entries(hub: Hub) -> list[Any]:
    from sqlalchemy import select

    from urbanhub.store.audit import _entry
    from urbanhub.store.tables import audit_log

    with hub.engine.connect() as conn:
        return [_entry(row) for row in conn.execute(select(audit_log).order_by(audit_log.c.seq))]


def test_decisions_follow_catalog_changes_from_the_next_query(
        hub: Hub, public_client: TestClient) -> None:
    air = Dataset(id="air", owner="city", steward="operator",
                  classification=Classification.OPEN, licence="CC-BY-4.0",
                  purposes=frozenset(), legal_basis=LegalBasis.PUBLIC_TASK,
                  retention=timedelta(days=30), entity_types=frozenset({VOCAB + "Air"}),
                  rules=(AssignmentRule(entity_type=VOCAB + "Air"),))
    hub.catalog.load(SYSTEM, [], [air])
    hub.entities.create(SYSTEM, {"id": "urn:ngsi-ld:Air:a1", "type": [VOCAB + "Air"],
                                 "attrs": {}})
    assert public_client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Air:a1").status_code == 200
    hub.catalog.load(SYSTEM, [], [replace(air, classification=Classification.INTERNAL,
                                          licence="")])
    assert public_client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Air:a1").status_code == 404


def test_pseudonyms_are_stable_keyed_and_name_their_key() -> None:
    from urbanhub.governance.pseudonymise import Pseudonymiser, PseudonymKeyError

    one = Pseudonymiser({"k1": b"0" * 16, "k2": b"1" * 16}, "k1")
    assert one.pseudonym("AB-123") == one.pseudonym("AB-123") != one.pseudonym("AB-124")
    assert one.pseudonym("AB-123").startswith(PREFIX + "k1:")
    assert one.pseudonym("AB-123", "k2") != one.pseudonym("AB-123")
    assert one.pseudonym(12) != one.pseudonym("12")
    with pytest.raises(PseudonymKeyError):
        Pseudonymiser({"k1": b"short"}, "k1")
    with pytest.raises(PseudonymKeyError):
        Pseudonymiser({"k1": b"0" * 16}, "k9")


def test_the_app_serves_with_a_fresh_key_file(tmp_path: Any, monkeypatch: Any) -> None:
    """Without configured keys the hub makes one, owner-only, and keeps using it."""
    monkeypatch.chdir(tmp_path)
    from urbanhub.config import Settings

    settings = Settings(database_url=f"sqlite:///{tmp_path / 'hub.db'}", mqtt_url=None)
    first = Hub(settings)
    second = Hub(settings)
    try:
        key_file = tmp_path / "urbanhub-pseudonym.key"
        assert key_file.stat().st_mode & 0o777 == 0o600
        assert first.guard.pseudonymiser.pseudonym("x") == second.guard.pseudonymiser.pseudonym(
            "x")
        with TestClient(create_app(settings, hub=first)) as http:
            assert http.get("/health/live").status_code == 200
    finally:
        first.close()
        second.close()
