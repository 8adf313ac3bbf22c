"""Consent per purpose and erasure of data subjects, on SQLite and PostgreSQL.

``consenting_entities`` is checked against real entities (current state in the store) as
consents are given, withdrawn, expire and are given again; erasure is checked by querying
every table and the NGSI-LD API afterwards. HTTP calls state their caller (API keys of the
test city's members, see ``tests.test_requests.build_city``).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from tests.test_requests import (
    NOW,
    SYSTEM,
    VOCAB,
    City,
    Clock,
    assert_problem,
    build_city,
)
from urbanhub.governance.catalog_documents import parse_catalog
from urbanhub.governance.quality import AttributeRule, QualityRules
from urbanhub.hub.runtime import Hub
from urbanhub.model.devices import Sender
from urbanhub.model.errors import BadRequestData, ResourceNotFound
from urbanhub.model.governance import AssignmentRule, Classification, Dataset, LegalBasis
from urbanhub.ngsild.context import TermMap
from urbanhub.ngsild.entity import parse_entity
from urbanhub.store.catalog import get_dataset
from urbanhub.store.consents import consenting_entities
from urbanhub.store.db import alembic_config, make_engine, upgrade
from urbanhub.store.entities import HistoryRow
from urbanhub.store.tables import (
    attributes,
    devices,
    entities,
    entity_types,
    history,
    quality_flags,
)
from urbanhub.store.tables import rollup_hourly as rollups

GOV = "/governance/v1"
PERMITS = "parking-permits"
PERMIT = VOCAB + "ParkingPermit"
HOLDER = VOCAB + "holder"
OCCUPANCY = VOCAB + "occupancy"


def permit_id(name: str) -> str:
    return f"urn:ngsi-ld:ParkingPermit:{name}"


A, B, C, D, E, F, G, H = (permit_id(n) for n in "abcdefgh")


def permits_dataset() -> Dataset:
    return Dataset(
        id=PERMITS, owner="environment", steward="stella",
        classification=Classification.PERSONAL, licence="",
        purposes=frozenset({"research", "monitoring"}), legal_basis=LegalBasis.CONSENT,
        retention=timedelta(days=365), subject_attribute=HOLDER,
        entity_types=frozenset({PERMIT}), rules=(AssignmentRule(PERMIT),),
        title="Resident parking permits")


def create_permit(hub: Hub, name: str, **attrs: Any) -> str:
    entity = parse_entity({"id": permit_id(name), "type": "ParkingPermit", **attrs}, TermMap())
    hub.entities.create(SYSTEM, entity)
    return permit_id(name)


def holder(value: Any, at: str = "2026-01-05T08:00:00Z", **extra: Any) -> dict[str, Any]:
    return {"type": "Property", "value": value, "observedAt": at, **extra}


@pytest.fixture
def city(hub: Hub) -> City:
    built = build_city(hub)
    hub.catalog.create_dataset(SYSTEM, permits_dataset())
    return built


@pytest.fixture
def clock(hub: Hub) -> Clock:
    moving = Clock(NOW)
    hub.consents.clock = moving
    hub.guard.clock = moving  # the enforcement point's "now" for reads over HTTP
    return moving


@pytest.fixture
def client(public_client: TestClient) -> TestClient:
    """A client sending no credentials of its own: every call below states its caller."""
    return public_client


def consenting(hub: Hub, purpose: str, now: datetime) -> set[str]:
    with hub.engine.connect() as conn:
        return set(conn.scalars(consenting_entities(purpose, HOLDER, now)))


def give(client: TestClient, city: City, subject: str, purpose: str = "research",
         by: str | None = "stella", **extra: Any) -> Any:
    return client.post(f"{GOV}/consents", headers=city.headers(by), json={
        "subject": subject, "purpose": purpose, "source": "Permit form 2026/17, box 4",
        **extra})


def withdraw(client: TestClient, city: City, subject: str, purpose: str = "research") -> Any:
    return client.post(f"{GOV}/consents/withdrawals", headers=city.headers("stella"), json={
        "subject": subject, "purpose": purpose, "source": "E-mail of 2 March, ref. 88"})


def audit_rows(hub: Hub) -> list[dict[str, Any]]:
    with hub.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text(
            "SELECT * FROM audit_log ORDER BY seq"))]


# --- consent -------------------------------------------------------------------------------

def test_consenting_entities_follow_consents_given_withdrawn_expired_and_given_again(
        hub: Hub, client: TestClient, city: City, clock: Clock) -> None:
    create_permit(hub, "a", holder=holder("subj-a"))
    create_permit(hub, "b", holder=holder("subj-b"))
    create_permit(hub, "c", holder={"type": "Relationship", "object": "urn:ngsi-ld:Person:c7"})
    create_permit(hub, "d", zone={"type": "Property", "value": "north"})  # names no one
    create_permit(hub, "e", holder=holder(12345))  # a number names no one
    create_permit(hub, "f", holder=[holder("subj-a"),  # a shared permit: both must consent
                                    holder("subj-b", datasetId="urn:ngsi-ld:Dataset:co")])
    assert consenting(hub, "research", NOW) == set()

    given = give(client, city, "subj-a")
    assert given.status_code == 201, given.text
    assert {k: given.json()[k] for k in ("subject", "purpose", "status", "expiresAt",
                                         "recordedBy", "withdrawnAt")} == {
        "subject": "subj-a", "purpose": "research", "status": "active", "expiresAt": None,
        "recordedBy": "stella", "withdrawnAt": None}
    assert consenting(hub, "research", NOW) == {A}
    assert consenting(hub, "research", NOW - timedelta(seconds=1)) == set()  # not yet given

    assert give(client, city, "subj-b", expiresAt="2026-03-12T09:00:00Z").status_code == 201
    assert give(client, city, "urn:ngsi-ld:Person:c7", "monitoring").status_code == 201
    assert give(client, city, "12345").status_code == 201
    assert consenting(hub, "research", NOW) == {A, B, F}
    assert consenting(hub, "monitoring", NOW) == {C}

    clock.now = NOW + timedelta(days=1)
    ended = withdraw(client, city, "subj-a")
    assert ended.status_code == 200, ended.text
    assert [(c["status"], c["withdrawnBy"], c["withdrawalSource"]) for c in ended.json()] == [
        ("withdrawn", "stella", "E-mail of 2 March, ref. 88")]
    assert consenting(hub, "research", clock.now) == {B}
    assert consenting(hub, "research", NOW + timedelta(hours=12)) == {A, B, F}  # before

    expiry = datetime(2026, 3, 12, 9, tzinfo=UTC)
    assert consenting(hub, "research", expiry - timedelta(microseconds=1)) == {B}
    assert consenting(hub, "research", expiry) == set()

    clock.now = NOW + timedelta(days=20)
    assert give(client, city, "subj-a").status_code == 201
    assert consenting(hub, "research", clock.now) == {A}
    history_of_a = client.get(f"{GOV}/consents?subject=subj-a",
                                     headers=city.headers("carla"))
    assert history_of_a.status_code == 200, history_of_a.text
    assert [c["status"] for c in history_of_a.json()] == ["active", "withdrawn"]
    of_b = client.get(f"{GOV}/consents?subject=subj-b&purpose=research",
                      headers=city.headers("stella")).json()
    assert [c["status"] for c in of_b] == ["expired"]
    assert hub.audit.verify().ok


def test_reads_over_the_api_leave_out_subjects_without_consent_from_the_next_query_on(
        hub: Hub, client: TestClient, city: City, clock: Clock) -> None:
    create_permit(hub, "a", holder=holder("subj-a"))
    create_permit(hub, "b", holder=holder("subj-b"))
    stella = {**city.headers("stella"), "Urbanhub-Purpose": "research"}

    def visible() -> set[str]:
        response = client.get("/ngsi-ld/v1/entities?type=ParkingPermit", headers=stella)
        assert response.status_code == 200, response.text
        return {entity["id"] for entity in response.json()}

    assert visible() == set()
    give(client, city, "subj-a")
    give(client, city, "subj-b")
    assert visible() == {A, B}
    clock.now = NOW + timedelta(hours=1)
    withdraw(client, city, "subj-a")
    assert visible() == {B}
    assert_problem(client.get(f"/ngsi-ld/v1/entities/{A}", headers=stella), 404)


def test_a_renewal_adds_to_a_consent_and_a_withdrawal_ends_both(
        hub: Hub, client: TestClient, city: City, clock: Clock) -> None:
    create_permit(hub, "a", holder=holder("subj-a"))
    give(client, city, "subj-a", expiresAt="2026-04-01T00:00:00Z")
    give(client, city, "subj-a", expiresAt="2027-04-01T00:00:00Z")
    assert consenting(hub, "research", datetime(2026, 6, 1, tzinfo=UTC)) == {A}
    assert len(withdraw(client, city, "subj-a").json()) == 2
    assert consenting(hub, "research", NOW) == set()
    assert_problem(withdraw(client, city, "subj-a"), 409,
                   "has no consent in force for purpose research")


def test_the_audit_trail_names_subjects_by_digest_only(
        hub: Hub, client: TestClient, city: City, clock: Clock) -> None:
    give(client, city, "subj-secret")
    withdraw(client, city, "subj-secret")
    rows = [r for r in audit_rows(hub) if r["action"].startswith("governance.consent")]
    digest = hashlib.sha256(b"subj-secret").hexdigest()
    assert [(r["action"], r["target"]) for r in rows] == [
        ("governance.consent.grant", f"subject-sha256:{digest}"),
        ("governance.consent.withdraw", f"subject-sha256:{digest}")]
    assert not any("subj-secret" in str(value) or "Permit form" in str(value)
                   for r in rows for value in r.values())


@pytest.mark.parametrize(("changes", "fragment"), [
    ({"subject": "Jan Jansen"}, "is not a pseudonymous id"),
    ({"subject": "jan@example.org"}, "no names or e-mail addresses"),
    ({"subject": "ab"}, "is not a pseudonymous id"),
    ({"subject": "-leading"}, "is not a pseudonymous id"),
    ({"purpose": "marketing"}, "Unknown purpose marketing"),
    ({"source": "  "}, "must say how it was given"),
    ({"source": None}, "source"),
    ({"expiresAt": "2026-03-01T00:00:00Z"}, "must expire after it is given"),
    ({"expiresAt": "2027-03-01T00:00:00"}, "timezone-aware"),
    ({"expiresAt": "next year"}, "expiresAt"),
    ({"given": True}, "Extra inputs are not permitted"),
])
def test_bad_consents_are_refused_naming_the_problem(
        hub: Hub, client: TestClient, city: City, clock: Clock, changes: dict[str, Any],
        fragment: str) -> None:
    body = {"subject": "subj-a", "purpose": "research", "source": "Permit form", **changes}
    response = client.post(f"{GOV}/consents", headers=city.headers("stella"),
                           json={k: v for k, v in body.items() if v is not None})
    assert_problem(response, 400, fragment)
    assert not [r for r in audit_rows(hub) if r["action"].startswith("governance.consent")]


@pytest.mark.parametrize(("subject", "status", "fragment"), [
    ("ann", 403, "needs the role cdo or steward; ann has the roles analyst"),
    ("pat", 403, "needs the role cdo or steward"),
    ("otto", 403, "needs the role cdo or steward"),
    ("vera", 403, "for the city's stewards and CDO, who act for the controller; greenlab is "
                  "not a city department"),
    (None, 401, "needs credentials"),
])
def test_only_the_citys_stewards_and_cdo_handle_subjects_rights(
        client: TestClient, city: City, clock: Clock, subject: str | None, status: int,
        fragment: str) -> None:
    assert_problem(give(client, city, "subj-a", by=subject), status, fragment)
    headers = city.headers(subject)
    assert_problem(client.get(f"{GOV}/consents?subject=subj-a", headers=headers), status)
    assert_problem(client.post(f"{GOV}/erasures", headers=headers,
                               json={"subject": "subj-a", "reason": "request 1"}), status)
    assert give(client, city, "subj-a", by="carla").status_code == 201


def test_a_hub_integration_records_consent_without_a_member(
        hub: Hub, city: City, clock: Clock) -> None:
    consent = hub.consents.grant(SYSTEM, "subj-a", "research", "Consent portal, session 9f2")
    assert consent.recorded_by == "system:test"
    assert [c.id for c in hub.consents.consents(SYSTEM, "subj-a")] == [consent.id]


def test_listing_consents_needs_a_well_formed_subject(client: TestClient,
                                                      city: City) -> None:
    assert_problem(client.get(f"{GOV}/consents", headers=city.headers("stella")), 400,
                   "subject")
    assert_problem(client.get(f"{GOV}/consents?subject=a%20b",
                                     headers=city.headers("stella")),
                   400, "is not a pseudonymous id")
    assert client.get(f"{GOV}/consents?subject=nobody-known",
                      headers=city.headers("stella")).json() == []


# --- the catalog's subject attribute -------------------------------------------------------

def test_consent_datasets_need_a_subject_attribute_which_the_catalog_keeps(
        hub: Hub, client: TestClient, city: City) -> None:
    body: dict[str, Any] = {
        "id": "wifi-visits", "owner": "environment", "steward": "stella",
        "classification": "personal", "purposes": ["research"], "legalBasis": "consent",
        "retention": "P30D", "entityTypes": ["WifiVisit"]}
    url = "/catalog/v1/datasets"
    headers = {**city.headers("carla"), "Content-Type": "application/json"}
    assert_problem(client.post(url, headers=headers, content=json.dumps(body)), 400,
                   "Dataset wifi-visits: consent-based data needs a subject attribute")
    assert_problem(client.post(url, headers=headers, content=json.dumps(
        {**body, "subjectAttribute": "bad name"})), 400, "Invalid subject attribute")
    created = client.post(url, headers=headers, content=json.dumps(
        {**body, "subjectAttribute": "visitor"}))
    assert created.status_code == 201, created.text
    assert created.json()["subjectAttribute"] == "visitor"
    shown = client.get(f"{url}/wifi-visits", headers=city.headers("carla")).json()
    assert shown["subjectAttribute"] == "visitor"
    assert hub.catalog.dataset("wifi-visits").dataset.subject_attribute == VOCAB + "visitor"
    # A dataset read back can be sent back unchanged.
    replaced = client.put(f"{url}/wifi-visits", headers=headers, content=json.dumps(shown))
    assert replaced.status_code == 200, replaced.text
    audit = [r for r in audit_rows(hub) if r["action"] == "catalog.dataset.create"]
    assert json.loads(audit[-1]["details"])["subjectAttribute"] == VOCAB + "visitor"


def test_catalog_files_declare_subject_attributes() -> None:
    document = {"@context": {"holder": "https://example.org/permits#holder"},
                "purposes": [{"id": "research", "description": "Research."}],
                "datasets": [{"id": "permits", "owner": "environment", "steward": "stella",
                              "classification": "personal", "purposes": ["research"],
                              "legalBasis": "consent", "retention": "P30D",
                              "subjectAttribute": "holder"}]}
    _, (dataset,) = parse_catalog(document, lambda context: TermMap(terms=context).finish())
    assert dataset.subject_attribute == "https://example.org/permits#holder"
    with pytest.raises(BadRequestData, match=r"datasets\[0\] \(permits\): .*needs a subject "
                                                 "attribute"):
        parse_catalog({**document, "datasets": [{k: v for k, v in document["datasets"][0]
                                                 .items() if k != "subjectAttribute"}]},
                      lambda context: TermMap())


def test_consent_datasets_from_before_subject_attributes_are_used_for_nothing(
        tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        upgrade(engine, "0005")
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO datasets (id, title, description, owner, steward, classification,"
                " licence, legal_basis, retention, purposes, entity_types, attribute_classes,"
                " identifiers, rules, created_at, modified_at) VALUES ('wifi', '', '', 'env',"
                " 'stella', 'personal', '', 'consent', 'P30D', '[]', '[]', '{}', '[]', '[]',"
                " '2026-01-01 00:00:00.000000', '2026-01-01 00:00:00.000000')"))
        upgrade(engine)
        with engine.connect() as conn:
            record = get_dataset(conn, "wifi")
            assert record is not None
            attribute = record.dataset.subject_attribute
            assert attribute == "urn:urbanhub:attribute:subject-attribute-undeclared"
            conn.execute(text("INSERT INTO consents (id, subject, purpose, granted_at, source,"
                              " recorded_by) VALUES ('c', 'subj-a', 'research',"
                              " '2026-01-01 00:00:00.000000', 'form', 'stella')"))
            assert list(conn.scalars(consenting_entities("research", attribute, NOW))) == []
        command.downgrade(alembic_config(engine), "0005")
        columns = {c["name"] for c in sa.inspect(engine).get_columns("datasets")}
        assert "subject_attribute" not in columns
        assert not sa.inspect(engine).has_table("grants")
        upgrade(engine)
    finally:
        engine.dispose()


# --- erasure -------------------------------------------------------------------------------

def reading(entity_id: str, at: str, value: float) -> HistoryRow:
    moment = datetime.fromisoformat(at.replace("Z", "+00:00"))
    return HistoryRow(entity_id, OCCUPANCY, "", moment,
                      {"type": "Property", "value": value, "observedAt": at}, value)


def count_rows(hub: Hub, ids: list[str]) -> dict[str, int]:
    tables = {"entities": (entities, entities.c.id), "attributes": (attributes,
              attributes.c.entity_id), "entity_types": (entity_types, entity_types.c.entity_id),
              "history": (history, history.c.entity_id),
              "rollup_hourly": (rollups, rollups.c.entity_id),
              "quality_flags": (quality_flags, quality_flags.c.entity_id),
              "devices": (devices, devices.c.entity_id)}
    with hub.engine.connect() as conn:
        return {name: int(conn.scalar(select(sa.func.count()).select_from(table)
                                      .where(column.in_(ids))) or 0)
                for name, (table, column) in tables.items()}


def holder_history(hub: Hub, entity_id: str) -> list[str]:
    with hub.engine.connect() as conn:
        return [json.loads(i)["value"] for i in conn.scalars(
            select(history.c.instance).where(history.c.entity_id == entity_id,
                                             history.c.name == HOLDER)
            .order_by(history.c.observed_at))]


def test_erasure_deletes_every_record_of_the_subject_and_reports_counts(
        hub: Hub, client: TestClient, city: City, clock: Clock) -> None:
    create_permit(hub, "a", holder=holder("subj-a"),
                  occupancy={"type": "Property", "value": 1, "observedAt": "2026-01-05T08:00:00Z"})
    hub.devices.provision(SYSTEM, {"deviceId": "meter-a", "entityId": A, "owner": "environment",
                                   "entityType": "ParkingPermit", "transport": "HTTP",
                                   "attributes": [{"object_id": "occ", "name": "occupancy"}]},
                          TermMap())
    hub.quality.set_rules(SYSTEM, PERMITS, QualityRules({OCCUPANCY: AttributeRule(
        OCCUPANCY, maximum=0.5)}))  # flags the two readings of 1
    stored = hub.ingest.ingest([reading(A, "2026-01-05T08:30:00Z", 0),
                                reading(A, "2026-01-05T09:10:00Z", 1),
                                reading(A, "2026-01-06T10:00:00Z", 1)],
                               sender=Sender.of_device("meter-a"))
    assert stored.stored == 3, stored.rejected
    create_permit(hub, "b", holder=holder("subj-b"),
                  occupancy={"type": "Property", "value": 1, "observedAt": "2026-01-05T08:00:00Z"})
    create_permit(hub, "f", holder=[holder("subj-b"),
                                    holder("subj-a", datasetId="urn:ngsi-ld:Dataset:co")])
    create_permit(hub, "g", holder=holder("subj-a"))  # passed on to subj-z since
    hub.entities.update(SYSTEM, G, parse_entity(
        {"holder": holder("subj-z", "2026-02-01T08:00:00Z")}, TermMap(), need_id=False,
        need_type=False))
    create_permit(hub, "h", holder=holder("subj-a"))  # deleted before; its history stays
    hub.entities.delete(SYSTEM, H)
    assert holder_history(hub, G) == ["subj-a", "subj-z"]
    assert holder_history(hub, H) == ["subj-a"]
    before = count_rows(hub, [A, F])
    assert before == {"entities": 2, "attributes": 4, "entity_types": 2, "history": 7,
                      "rollup_hourly": 3, "quality_flags": 2, "devices": 1}
    give(client, city, "subj-a")
    give(client, city, "subj-z")  # G's holder now: G stays visible to the reader
    reader = {**city.headers("stella"), "Urbanhub-Purpose": "research"}
    assert client.get(f"/ngsi-ld/v1/entities/{A}", headers=reader).status_code == 200
    temporal = client.get(f"/ngsi-ld/v1/temporal/entities/{A}", headers=reader)
    assert temporal.status_code == 200

    erased = client.post(f"{GOV}/erasures", headers=city.headers("carla"), json={
        "subject": "subj-a", "reason": "Erasure request 2026-041"})
    assert erased.status_code == 200, erased.text
    digest = hashlib.sha256(b"subj-a").hexdigest()
    report = erased.json()
    assert report["subjectSha256"] == digest and report["devicesRemoved"] == ["meter-a"]
    # G's former holder, and H's (deleted: its tombstone keeps its dataset)
    assert report["datasets"] == [
        {"dataset": PERMITS, "entities": 2, "historyRows": 7, "rollupHours": 3,
         "formerValues": 2, "qualityFlags": 2}]

    # Nothing of the subject is left.
    assert count_rows(hub, [A, F]) == dict.fromkeys(before, 0)
    for entity_id in (A, F):
        assert_problem(client.get(f"/ngsi-ld/v1/entities/{entity_id}", headers=reader), 404)
        assert_problem(client.get(f"/ngsi-ld/v1/temporal/entities/{entity_id}",
                                  headers=reader), 404)
    assert holder_history(hub, G) == ["subj-z"]
    assert client.get(f"/ngsi-ld/v1/entities/{G}", headers=reader).status_code == 200
    assert holder_history(hub, H) == []
    with pytest.raises(ResourceNotFound):
        hub.devices.get("meter-a")
    late = hub.ingest.ingest([reading(A, "2026-01-07T08:00:00Z", 1)],
                             sender=Sender.of_device("meter-a"))
    assert late.stored == 0 and len(late.rejected) == 1  # nothing of the subject comes back
    with hub.engine.connect() as conn:
        for table in (attributes, history):
            assert conn.scalar(select(sa.func.count()).select_from(table).where(
                table.c.instance.contains('"subj-a"'))) == 0
    # Everyone else's records are untouched.
    assert count_rows(hub, [B]) == {"entities": 1, "attributes": 2, "entity_types": 1,
                                    "history": 2, "rollup_hourly": 1, "quality_flags": 0,
                                    "devices": 0}

    (entry,) = [r for r in audit_rows(hub) if r["action"] == "governance.erasure"]
    assert entry["actor"] == "carla" and entry["target"] == f"subject-sha256:{digest}"
    details = json.loads(entry["details"])
    assert details["subjectSha256"] == digest and details["datasets"] == report["datasets"]
    assert details["reason"] == "Erasure request 2026-041"
    (device_entry,) = [r for r in audit_rows(hub) if r["action"] == "device.delete"]
    assert device_entry["target"] == "device:meter-a" and device_entry["seq"] == entry["seq"] + 1
    assert not any("subj-a" in str(v) for r in audit_rows(hub) for v in r.values())
    assert hub.audit.verify().ok


def test_erasing_a_subject_without_records_reports_nothing_and_is_audited(
        hub: Hub, client: TestClient, city: City) -> None:
    create_permit(hub, "b", holder=holder("subj-b"))
    erased = client.post(f"{GOV}/erasures", headers=city.headers("stella"),
                         json={"subject": "subj-unknown", "reason": "Request 7"})
    assert erased.status_code == 200, erased.text
    assert erased.json()["datasets"] == [] and erased.json()["devicesRemoved"] == []
    assert [r["actor"] for r in audit_rows(hub) if r["action"] == "governance.erasure"] == [
        "stella"]
    assert count_rows(hub, [B])["entities"] == 1


@pytest.mark.parametrize(("body", "fragment"), [
    ({"subject": "Jan Jansen", "reason": "request"}, "is not a pseudonymous id"),
    ({"subject": "subj-a"}, "reason: Field required"),
    ({"subject": "subj-a", "reason": " "}, "The reason for an erasure must not be empty"),
    ({"reason": "request"}, "subject: Field required"),
    ({"subject": "subj-a", "reason": "x", "cascade": True}, "Extra inputs are not permitted"),
])
def test_bad_erasure_requests_are_refused_and_erase_nothing(
        hub: Hub, client: TestClient, city: City, body: dict[str, Any],
        fragment: str) -> None:
    create_permit(hub, "a", holder=holder("subj-a"))
    assert_problem(client.post(f"{GOV}/erasures", headers=city.headers("carla"), json=body),
                   400, fragment)
    assert count_rows(hub, [A])["entities"] == 1


def test_nul_characters_and_odd_ids_are_refused_before_the_database(
        client: TestClient, city: City, clock: Clock) -> None:
    headers = city.headers("stella")
    assert_problem(client.get(f"{GOV}/consents?subject=subj-a&purpose=a%00b",
                                     headers=headers),
                   400, "purpose")
    assert_problem(give(client, city, "subj-a", source="form\u0000"), 400,
                   "must not contain NUL characters")
    assert_problem(client.post(f"{GOV}/erasures", headers=headers,
                               json={"subject": "subj-a", "reason": "x\u0000"}), 400,
                   "must not contain NUL characters")
    assert_problem(client.get(f"{GOV}/data-use-requests/req-%00", headers=headers), 404)
    assert_problem(client.get(f"{GOV}/grants/grant-%00", headers=headers), 404)


def test_erasure_with_no_subject_attribute_in_the_catalog_finds_nothing(hub: Hub) -> None:
    build_city(hub)  # no dataset of it declares a subject attribute
    report = hub.erasures.erase(SYSTEM, "subj-a", "Request 9")
    assert report.datasets == () and report.devices_removed == ()
