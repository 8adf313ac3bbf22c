"""Stakeholders and identities: bootstrap, organisations, members, API keys, OIDC tokens.

Runs on SQLite and PostgreSQL (the ``hub`` and ``client`` fixtures). OIDC tokens are signed
with key pairs generated here and published in a JWKS file or served over local HTTP.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient
from sqlalchemy import MetaData, select, text
from typer.testing import CliRunner

from urbanhub.cli import app
from urbanhub.config import Settings, get_settings
from urbanhub.governance.identity import IssuedKey
from urbanhub.governance.oidc import OidcConfigError, OidcVerifier
from urbanhub.hub.runtime import Hub
from urbanhub.model.caller import Caller
from urbanhub.model.errors import BadRequestData, Unauthenticated
from urbanhub.model.governance import OrganisationKind, Role
from urbanhub.model.identity import (
    ApiKey,
    Member,
    Organisation,
    Scope,
    allowed_scopes,
    member_caller,
    parse_api_key,
)
from urbanhub.store.tables import metadata

GOV = "/governance/v1"
ISSUER = "https://login.city.example/realms/urbanhub"
AUDIENCE = "urbanhub-api"
IDENTITY_TABLES = ("organisations", "members", "member_roles", "api_keys")
runner = CliRunner()



@pytest.fixture
def client(public_client: TestClient) -> TestClient:
    """These tests send their own credentials: start from the anonymous client."""
    return public_client

# --- helpers -----------------------------------------------------------------------------

def apikey(key: str) -> dict[str, str]:
    return {"Authorization": f"ApiKey {key}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def bootstrap(hub: Hub, subject: str = "carla") -> IssuedKey:
    return hub.identities.bootstrap(Organisation("city-data-office", "City Data Office",
                                                 OrganisationKind.DEPARTMENT),
                                    subject, timedelta(days=30))


def add_member(client: TestClient, key: str, subject: str, roles: list[str],
               organisation: str = "city-data-office", **extra: Any) -> None:
    response = client.post(f"{GOV}/members", headers=apikey(key), json={
        "subject": subject, "organisation": organisation, "roles": roles, **extra})
    assert response.status_code == 201, response.text


def issue(client: TestClient, key: str, scopes: list[str], days: int = 30,
          **extra: Any) -> dict[str, Any]:
    response = client.post(f"{GOV}/api-keys", headers=apikey(key),
                           json={"scopes": scopes, "expiresInDays": days, **extra})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_unauthenticated(response: Any, detail: str, scheme: str | None = None) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert detail in response.json()["detail"]
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith(scheme or "Bearer") and 'realm="urbanhub"' in challenge


def audit_actions(hub: Hub) -> list[tuple[str, str, str | None]]:
    with hub.engine.connect() as connection:
        rows = connection.execute(text("SELECT actor, action, target FROM audit_log "
                                       "ORDER BY seq")).all()
    return [(r.actor, r.action, r.target) for r in rows]


@pytest.fixture
def cdo(hub: Hub) -> str:
    """The key of the first CDO, carla of the city data office."""
    return bootstrap(hub).key


@pytest.fixture
def analyst(client: TestClient, cdo: str) -> str:
    """A read-only key of ann, analyst at the university."""
    created = client.post(f"{GOV}/organisations", headers=apikey(cdo), json={
        "id": "uni", "name": "Riverton University", "kind": "university"})
    assert created.status_code == 201, created.text
    add_member(client, cdo, "ann", ["analyst"], organisation="uni")
    return str(issue(client, cdo, ["read"], subject="ann")["key"])


# --- bootstrap -----------------------------------------------------------------------------

@pytest.fixture
def cli_database(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Point the CLI at the test's database (settings are cached per process)."""
    monkeypatch.setenv("URBANHUB_DATABASE_URL", hub.settings.database_url)
    monkeypatch.setenv("URBANHUB_MQTT_URL", "")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_bootstrap_prints_a_working_cdo_key_once_and_only_once(
        hub: Hub, client: TestClient, cli_database: None) -> None:
    args = ["admin", "bootstrap", "--organisation-id", "city-data-office",
            "--organisation-name", "City Data Office", "--subject", "carla",
            "--expires-days", "7"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    assert key.startswith("uh_") and "will not be shown again" in result.stderr
    me = client.get(f"{GOV}/me", headers=apikey(key))
    assert me.status_code == 200
    assert me.json() == {"subject": "carla", "authenticated": True, "roles": ["cdo"],
                         "organisation": "city-data-office", "organisationKind": "department",
                         "scopes": ["govern", "read", "write"], "purpose": None}
    (listed,) = client.get(f"{GOV}/api-keys", headers=apikey(key)).json()
    assert listed["expiresAt"][:10] == (datetime.now(UTC) + timedelta(days=7)).date().isoformat()

    again = runner.invoke(app, [*args[:-4], "--subject", "mallory"])
    assert again.exit_code == 1
    assert "A CDO already exists (carla)" in again.stderr
    assert audit_actions(hub) == [
        ("system:bootstrap", "identity.organisation.create", "organisation:city-data-office"),
        ("system:bootstrap", "identity.member.add", "member:carla"),
        ("system:bootstrap", "identity.api_key.issue", f"api_key:{listed['keyId']}")]
    assert hub.audit.verify().ok


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--organisation-id", "City Office", "Organisation id 'City Office' must be"),
    ("--subject", "system:root", "Subject 'system:root' must be"),
    ("--expires-days", "400", "must expire within 365 days"),
    ("--expires-days", "0", "--expires-days"),
])
def test_bootstrap_refuses_bad_input_and_creates_nothing(
        hub: Hub, cli_database: None, option: str, value: str, message: str) -> None:
    options = {"--organisation-id": "cdo", "--organisation-name": "CDO", "--subject": "carla",
               "--expires-days": "30", option: value}
    result = runner.invoke(app, ["admin", "bootstrap", *[x for kv in options.items()
                                                         for x in kv]])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert audit_actions(hub) == []


def test_bootstrap_refuses_incomplete_oidc_settings(
        hub: Hub, cli_database: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("URBANHUB_OIDC_ISSUER", ISSUER)
    get_settings.cache_clear()
    result = runner.invoke(app, ["admin", "bootstrap", "--organisation-id", "cdo",
                                 "--organisation-name", "CDO", "--subject", "carla"])
    assert result.exit_code == 2
    assert "OIDC is partly configured; also set URBANHUB_OIDC_AUDIENCE" in " ".join(
        result.output.split())


def test_concurrent_bootstraps_create_one_cdo(hub: Hub) -> None:
    outcomes: list[str] = []

    def attempt(i: int) -> None:
        try:
            hub.identities.bootstrap(Organisation(f"office-{i}", "Office", "department"),
                                     f"cdo-{i}", timedelta(days=1))
            outcomes.append("created")
        except Exception as exc:
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["Conflict", "Conflict", "Conflict", "created"]
    assert hub.audit.verify().ok


# --- API keys ------------------------------------------------------------------------------

def test_a_key_is_shown_once_and_stored_only_as_a_hash(
        hub: Hub, client: TestClient, cdo: str) -> None:
    issued = client.post(f"{GOV}/api-keys", headers=apikey(cdo), json={
        "scopes": ["read"], "expiresInDays": 10, "label": "dashboard"})
    assert issued.status_code == 201
    assert issued.headers["cache-control"] == "no-store"
    body = issued.json()
    key_id, secret = parse_api_key(body["key"])
    assert key_id == body["keyId"] and "not show it again" in body["warning"]
    assert issued.headers["location"] == f"{GOV}/api-keys/{key_id}"

    listed = client.get(f"{GOV}/api-keys", headers=apikey(cdo)).json()
    one = client.get(f"{GOV}/api-keys/{key_id}", headers=apikey(cdo)).json()
    for shown in [*listed, one]:
        assert set(shown) == {"keyId", "subject", "scopes", "label", "createdAt", "expiresAt",
                              "revokedAt", "status"}
    assert one == {**{k: body[k] for k in one}, "status": "active"}
    with hub.engine.connect() as connection:
        rows = [dict(r._mapping) for r in connection.execute(text("SELECT * FROM api_keys"))]
    assert not any(secret in str(value) for row in rows for value in row.values())
    assert hashlib.sha256(secret.encode()).hexdigest() in [r["secret_hash"] for r in rows]
    assert client.get(f"{GOV}/me", headers={"X-API-Key": body["key"]}).json()["scopes"] == [
        "read"]


def test_an_expired_key_is_refused(hub: Hub, client: TestClient, cdo: str) -> None:
    key = issue(client, cdo, ["read"], days=1)["key"]
    assert client.get(f"{GOV}/me", headers=apikey(key)).status_code == 200
    hub.identities.clock = lambda: datetime.now(UTC) + timedelta(days=1, seconds=1)
    assert_unauthenticated(client.get(f"{GOV}/me", headers=apikey(key)), "expired at",
                           "ApiKey")
    assert_unauthenticated(client.get("/ngsi-ld/v1/types", headers=apikey(key)),
                           "expired at", "ApiKey")
    listed = client.get(f"{GOV}/api-keys", headers=apikey(cdo)).json()
    assert [k["status"] for k in listed] == ["active", "expired"]


def test_a_revoked_key_is_refused_at_once(hub: Hub, client: TestClient, cdo: str) -> None:
    key = issue(client, cdo, ["read"])
    revoked = client.delete(f"{GOV}/api-keys/{key['keyId']}", headers=apikey(cdo))
    assert revoked.status_code == 204 and revoked.content == b""
    assert_unauthenticated(client.get(f"{GOV}/me", headers=apikey(key["key"])),
                           f"The API key {key['keyId']} was revoked at", "ApiKey")
    assert client.delete(f"{GOV}/api-keys/{key['keyId']}",
                         headers=apikey(cdo)).status_code == 204
    shown = client.get(f"{GOV}/api-keys/{key['keyId']}", headers=apikey(cdo)).json()
    assert shown["status"] == "revoked" and shown["revokedAt"] is not None
    assert [a[1] for a in audit_actions(hub)].count("identity.api_key.revoke") == 1
    assert client.delete(f"{GOV}/api-keys/0000000000000000",
                         headers=apikey(cdo)).status_code == 404


def test_a_member_revokes_its_own_key_with_that_key(client: TestClient, analyst: str) -> None:
    key_id, _ = parse_api_key(analyst)
    assert client.delete(f"{GOV}/api-keys/{key_id}", headers=apikey(analyst)).status_code == 204
    assert_unauthenticated(client.get(f"{GOV}/me", headers=apikey(analyst)), "revoked",
                           "ApiKey")


def test_a_wrong_secret_for_a_real_key_id_is_refused(client: TestClient, cdo: str) -> None:
    key_id, secret = parse_api_key(cdo)
    forged = f"uh_{key_id}_{'A' * 43}"
    assert_unauthenticated(client.get(f"{GOV}/me", headers=apikey(forged)),
                           "The API key is not valid.", "ApiKey")
    unknown = f"uh_{'0' * 16}_{secret}"
    assert_unauthenticated(client.get(f"{GOV}/me", headers=apikey(unknown)),
                           "The API key is not valid.", "ApiKey")


@pytest.mark.parametrize("headers", [
    {"Authorization": "Basic YWxhZGRpbjpvcGVuc2VzYW1l"},
    {"Authorization": "Token abc"},
    {"Authorization": ""},
    {"Authorization": "ApiKey"},
    {"Authorization": "Bearer   "},
    {"Authorization": "ApiKey two words"},
    {"Authorization": "ApiKey not-a-key"},
    {"Authorization": "apikey uh_short_key"},
    {"X-API-Key": ""},
    {"X-API-Key": "uh_0123456789abcdeg_" + "a" * 43},
    {"Authorization": "Bearer not.a.jwt"},
    {"Authorization": "Bearer x", "X-API-Key": "y"},
])
def test_malformed_credentials_are_a_401_never_a_500(client: TestClient,
                                                     headers: dict[str, str]) -> None:
    for path in (f"{GOV}/me", "/ngsi-ld/v1/types", "/health/live"):
        response = client.get(path, headers=headers)
        assert response.status_code == 401, (path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["detail"]
        assert 'realm="urbanhub"' in response.headers["www-authenticate"]


def test_repeated_credential_headers_are_refused(client: TestClient, cdo: str) -> None:
    response = client.get(f"{GOV}/me", headers=[("X-API-Key", cdo), ("X-API-Key", cdo)])
    assert_unauthenticated(response, "Send one credential")


def test_anonymous_callers_are_the_public_as_before(client: TestClient) -> None:
    me = client.get(f"{GOV}/me", headers={"Urbanhub-Purpose": "transparency"})
    assert me.json() == {"subject": "anonymous", "authenticated": False, "roles": ["public"],
                         "organisation": None, "organisationKind": None, "scopes": ["read"],
                         "purpose": "transparency"}
    assert client.get("/ngsi-ld/v1/types").status_code == 200
    assert_unauthenticated(client.get(f"{GOV}/organisations"), "needs credentials")


def test_the_purpose_header_travels_with_a_key(client: TestClient, cdo: str) -> None:
    me = client.get(f"{GOV}/me", headers={**apikey(cdo), "Urbanhub-Purpose": "audit"})
    assert me.json()["purpose"] == "audit"


# --- scopes and roles ----------------------------------------------------------------------

def test_a_key_can_do_only_what_its_scopes_allow(client: TestClient, cdo: str) -> None:
    read_only = issue(client, cdo, ["read"])["key"]
    refused = client.post(f"{GOV}/organisations", headers=apikey(read_only), json={
        "id": "parks", "name": "Parks", "kind": "department"})
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert "needs the govern scope; this credential has read" in refused.json()["detail"]
    assert client.get(f"{GOV}/organisations", headers=apikey(read_only)).status_code == 200
    # A credential cannot mint a more powerful one, not even for its own holder.
    escalate = client.post(f"{GOV}/api-keys", headers=apikey(read_only), json={
        "scopes": ["read", "govern"], "expiresInDays": 1})
    assert escalate.status_code == 403
    assert "lacks: govern" in escalate.json()["detail"]


def test_roles_bound_the_scopes_of_keys(client: TestClient, cdo: str) -> None:
    add_member(client, cdo, "otto", ["operator"])
    too_much = client.post(f"{GOV}/api-keys", headers=apikey(cdo), json={
        "subject": "otto", "scopes": ["govern"], "expiresInDays": 5})
    assert too_much.status_code == 403
    assert "do not allow the scopes govern; they allow read, write" in too_much.json()["detail"]
    key = issue(client, cdo, ["read", "write"], subject="otto")["key"]
    assert client.get(f"{GOV}/me", headers=apikey(key)).json()["scopes"] == ["read", "write"]
    # Taking the operator role away narrows the key issued before.
    changed = client.patch(f"{GOV}/members/otto", headers=apikey(cdo), json={
        "roles": ["analyst"]})
    assert changed.status_code == 200 and changed.json()["roles"] == ["analyst"]
    me = client.get(f"{GOV}/me", headers=apikey(key)).json()
    assert me["roles"] == ["analyst"] and me["scopes"] == ["read"]


def test_an_analyst_cannot_govern(client: TestClient, analyst: str, cdo: str) -> None:
    attempts = [
        client.post(f"{GOV}/organisations", headers=apikey(analyst),
                    json={"id": "x", "name": "X", "kind": "partner"}),
        client.post(f"{GOV}/members", headers=apikey(analyst),
                    json={"subject": "eve", "organisation": "uni", "roles": ["cdo"]}),
        client.patch(f"{GOV}/members/ann", headers=apikey(analyst), json={"roles": ["cdo"]}),
        client.post(f"{GOV}/api-keys", headers=apikey(analyst),
                    json={"subject": "carla", "scopes": ["read"], "expiresInDays": 1}),
    ]
    for response in attempts:
        assert response.status_code == 403, response.text
        assert "needs the role cdo; ann has the roles analyst" in response.json()["detail"]
    cdo_key_id, _ = parse_api_key(cdo)
    assert client.delete(f"{GOV}/api-keys/{cdo_key_id}",
                         headers=apikey(analyst)).status_code == 404
    assert client.get(f"{GOV}/api-keys/{cdo_key_id}",
                      headers=apikey(analyst)).status_code == 404
    assert client.get(f"{GOV}/api-keys?subject=carla",
                      headers=apikey(analyst)).status_code == 404
    own = client.get(f"{GOV}/api-keys", headers=apikey(analyst)).json()
    assert [k["subject"] for k in own] == ["ann"]
    assert client.get(f"{GOV}/me", headers=apikey(cdo)).status_code == 200


def test_an_analyst_issues_keys_for_itself_within_its_roles(client: TestClient,
                                                            analyst: str) -> None:
    assert issue(client, analyst, ["read"], days=3)["subject"] == "ann"
    refused = client.post(f"{GOV}/api-keys", headers=apikey(analyst), json={
        "scopes": ["write"], "expiresInDays": 3})
    assert refused.status_code == 403 and "do not allow" in refused.json()["detail"]
    everyone = client.get(f"{GOV}/members", headers=apikey(analyst)).json()
    assert [m["subject"] for m in everyone] == ["ann", "carla"]


# --- organisations and members -------------------------------------------------------------

def test_organisations_and_members_are_validated(client: TestClient, cdo: str) -> None:
    h = apikey(cdo)
    created = client.post(f"{GOV}/organisations", headers=h, json={
        "id": "greenpeace-riverton", "name": "Greenpeace Riverton", "kind": "civil_society"})
    assert created.status_code == 201
    assert created.headers["location"] == f"{GOV}/organisations/greenpeace-riverton"
    assert client.get(f"{GOV}/organisations/greenpeace-riverton", headers=h).json() == {
        "id": "greenpeace-riverton", "name": "Greenpeace Riverton", "kind": "civil_society"}
    assert [o["id"] for o in client.get(f"{GOV}/organisations", headers=h).json()] == [
        "city-data-office", "greenpeace-riverton"]
    bad = {
        "duplicate": ("organisations", {"id": "greenpeace-riverton", "name": "G",
                                        "kind": "partner"}, 409, "already exists"),
        "kind": ("organisations", {"id": "a", "name": "A", "kind": "club"}, 400, "kind"),
        "id": ("organisations", {"id": "A B", "name": "A", "kind": "partner"}, 400,
               "must be 1 to 64 lowercase"),
        "blank name": ("organisations", {"id": "a", "name": " ", "kind": "partner"}, 400,
                       "name must be 1 to 200"),
        "extra": ("organisations", {"id": "a", "name": "A", "kind": "partner", "x": 1}, 400,
                  "Extra inputs"),
        "public": ("members", {"subject": "p", "organisation": "city-data-office",
                               "roles": ["public"]}, 400, "'public' is not a member role"),
        "no role": ("members", {"subject": "p", "organisation": "city-data-office",
                                "roles": []}, 400, "roles"),
        "organisation": ("members", {"subject": "p", "organisation": "nowhere",
                                     "roles": ["analyst"]}, 400, "nowhere does not exist"),
        "subject": ("members", {"subject": "a:b", "organisation": "city-data-office",
                                "roles": ["analyst"]}, 400, "Subject 'a:b' must be"),
        "member": ("members", {"subject": "carla", "organisation": "city-data-office",
                               "roles": ["analyst"]}, 409, "Member carla already exists"),
        "issuer only": ("members", {"subject": "p", "organisation": "city-data-office",
                                    "roles": ["analyst"], "oidcIssuer": ISSUER}, 400,
                        "needs the oidcSubject"),
        "no issuer": ("members", {"subject": "p", "organisation": "city-data-office",
                                  "roles": ["analyst"], "oidcSubject": "x"}, 400,
                      "no OIDC issuer is configured"),
        "too long": ("api-keys", {"scopes": ["read"], "expiresInDays": 366}, 400,
                     "expiresInDays"),
        "no scope": ("api-keys", {"scopes": [], "expiresInDays": 1}, 400, "scopes"),
        "scope": ("api-keys", {"scopes": ["admin"], "expiresInDays": 1}, 400, "scopes"),
        "holder": ("api-keys", {"subject": "nobody", "scopes": ["read"], "expiresInDays": 1},
                   404, "No member nobody"),
    }
    for case, (resource, body, status, detail) in bad.items():
        response = client.post(f"{GOV}/{resource}", headers=h, json=body)
        assert response.status_code == status, (case, response.text)
        assert response.headers["content-type"] == "application/problem+json", case
        assert detail in response.json()["detail"], (case, response.json())
    not_json = client.post(f"{GOV}/organisations", headers={**h, "content-type": "text/plain"},
                           content=b"id=x")
    assert not_json.status_code == 400
    for path in ("organisations/nowhere", "members/nobody"):
        assert client.get(f"{GOV}/{path}", headers=h).status_code == 404


def test_member_changes(client: TestClient, cdo: str) -> None:
    h = apikey(cdo)
    add_member(client, cdo, "sam", ["steward"], oidcSubject="sam-sub", oidcIssuer=ISSUER)
    assert client.get(f"{GOV}/members/sam", headers=h).json() == {
        "subject": "sam", "organisation": "city-data-office", "roles": ["steward"],
        "oidcIssuer": ISSUER, "oidcSubject": "sam-sub"}
    taken = client.post(f"{GOV}/members", headers=h, json={
        "subject": "sue", "organisation": "city-data-office", "roles": ["analyst"],
        "oidcSubject": "sam-sub", "oidcIssuer": ISSUER})
    assert taken.status_code == 409 and "already linked to sam" in taken.json()["detail"]
    both = client.patch(f"{GOV}/members/sam", headers=h, json={
        "roles": ["steward", "privacy_board"], "oidcSubject": None})
    assert both.json() == {"subject": "sam", "organisation": "city-data-office",
                           "roles": ["privacy_board", "steward"], "oidcIssuer": None,
                           "oidcSubject": None}
    for body, detail in [({}, "Nothing to change"), ({"roles": None}, "cannot be null"),
                         ({"roles": ["public"]}, "not a member role"),
                         ({"oidcIssuer": ISSUER}, "needs the oidcSubject"),
                         ({"organisation": "x"}, "Extra inputs")]:
        response = client.patch(f"{GOV}/members/sam", headers=h, json=body)
        assert response.status_code == 400 and detail in response.json()["detail"], body
    assert client.patch(f"{GOV}/members/nobody", headers=h,
                        json={"roles": ["analyst"]}).status_code == 404


def test_the_last_cdo_cannot_step_down(client: TestClient, cdo: str) -> None:
    h = apikey(cdo)
    alone = client.patch(f"{GOV}/members/carla", headers=h, json={"roles": ["steward"]})
    assert alone.status_code == 409 and "only CDO" in alone.json()["detail"]
    add_member(client, cdo, "dora", ["cdo"])
    handed_over = client.patch(f"{GOV}/members/carla", headers=h, json={"roles": ["steward"]})
    assert handed_over.status_code == 200
    assert client.post(f"{GOV}/organisations", headers=h, json={
        "id": "x", "name": "X", "kind": "partner"}).status_code == 403


def test_every_change_is_in_the_audit_trail(hub: Hub, client: TestClient, cdo: str,
                                            analyst: str) -> None:
    key_id, _ = parse_api_key(analyst)
    client.patch(f"{GOV}/members/ann", headers=apikey(cdo), json={"roles": ["steward"]})
    client.delete(f"{GOV}/api-keys/{key_id}", headers=apikey(cdo))
    assert [a for a in audit_actions(hub) if a[0] == "carla"] == [
        ("carla", "identity.organisation.create", "organisation:uni"),
        ("carla", "identity.member.add", "member:ann"),
        ("carla", "identity.api_key.issue", f"api_key:{key_id}"),
        ("carla", "identity.member.update", "member:ann"),
        ("carla", "identity.api_key.revoke", f"api_key:{key_id}")]
    report = hub.audit.verify()
    assert report.ok and report.checked == 8
    with hub.engine.connect() as connection:
        details = connection.scalar(text("SELECT details FROM audit_log WHERE action = "
                                         "'identity.member.update'"))
    assert json.loads(details)["before"]["roles"] == ["analyst"]
    assert json.loads(details)["after"]["roles"] == ["steward"]


def test_failed_changes_leave_no_trace(hub: Hub, client: TestClient, cdo: str) -> None:
    before = audit_actions(hub)
    client.post(f"{GOV}/members", headers=apikey(cdo), json={
        "subject": "p", "organisation": "nowhere", "roles": ["analyst"]})
    client.patch(f"{GOV}/members/carla", headers=apikey(cdo), json={"roles": ["analyst"]})
    assert audit_actions(hub) == before
    with hub.engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM members")) == 1


# --- OIDC ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_jwk(private: Any, kid: str, alg: str) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(
        private.public_key()))
    return {**jwk, "kid": kid, "use": "sig", "alg": alg}


def write_jwks(path: Path, *keys: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"keys": list(keys)}))
    return path


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISSUER, "aud": AUDIENCE, "sub": "sub-carla", "iat": now, "exp": now + 300,
            **changes}


def token(private: Any, kid: str = "rsa-1", alg: str = "RS256", **changes: Any) -> str:
    return jwt.encode(claims(**changes), private, algorithm=alg, headers={"kid": kid})


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@pytest.fixture
def jwks_file(tmp_path: Path, rsa_key: rsa.RSAPrivateKey,
              ec_key: ec.EllipticCurvePrivateKey) -> Path:
    return write_jwks(tmp_path / "jwks.json", public_jwk(rsa_key, "rsa-1", "RS256"),
                      public_jwk(ec_key, "ec-1", "ES256"))


@pytest.fixture
def oidc(hub: Hub, jwks_file: Path, client: TestClient, cdo: str) -> str:
    """OIDC configured with the JWKS file; carla's account (sub-carla) linked to her."""
    hub.identities.oidc = OidcVerifier(ISSUER, AUDIENCE, jwks_file=jwks_file)
    linked = client.patch(f"{GOV}/members/carla", headers=apikey(cdo),
                          json={"oidcSubject": "sub-carla"})
    assert linked.status_code == 200 and linked.json()["oidcIssuer"] == ISSUER
    return cdo


def test_a_valid_token_is_the_linked_member_with_the_city_s_roles(
        client: TestClient, oidc: str, rsa_key: rsa.RSAPrivateKey,
        ec_key: ec.EllipticCurvePrivateKey) -> None:
    for signed in (token(rsa_key), token(ec_key, kid="ec-1", alg="ES256")):
        me = client.get(f"{GOV}/me", headers=bearer(signed))
        assert me.status_code == 200, me.text
        assert me.json() == {"subject": "carla", "authenticated": True, "roles": ["cdo"],
                             "organisation": "city-data-office",
                             "organisationKind": "department",
                             "scopes": ["govern", "read", "write"], "purpose": None}
    # Roles claimed by the identity provider count for nothing.
    with_roles = token(rsa_key, sub="sub-nobody", roles=["cdo"], groups=["cdo"])
    assert client.get(f"{GOV}/me", headers=bearer(with_roles)).json()["roles"] == ["public"]
    created = client.post(f"{GOV}/organisations", headers=bearer(token(rsa_key)), json={
        "id": "oidc-made", "name": "Made with a token", "kind": "partner"})
    assert created.status_code == 201


def test_an_unregistered_subject_is_an_authenticated_public_caller(
        client: TestClient, oidc: str, rsa_key: rsa.RSAPrivateKey) -> None:
    signed = token(rsa_key, sub="someone-else")
    me = client.get(f"{GOV}/me", headers=bearer(signed)).json()
    assert me == {"subject": "oidc:someone-else", "authenticated": True, "roles": ["public"],
                  "organisation": None, "organisationKind": None, "scopes": ["read"],
                  "purpose": None}
    refused = client.get(f"{GOV}/organisations", headers=bearer(signed))
    assert refused.status_code == 403
    assert "needs membership of an organisation" in refused.json()["detail"]
    assert client.get("/ngsi-ld/v1/types", headers=bearer(signed)).status_code == 200


def hs256_with_public_key(public_pem: bytes) -> str:
    signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT', 'kid': 'rsa-1'})}.{b64(claims())}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def test_bad_tokens_are_refused_with_the_reason(
        client: TestClient, oidc: str, rsa_key: rsa.RSAPrivateKey,
        other_rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> None:
    now = int(time.time())
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    bad = {
        "forged signature": (token(other_rsa_key), "signature does not verify"),
        "alg none": (f"{b64({'alg': 'none', 'kid': 'rsa-1'})}.{b64(claims())}.",
                     "algorithm 'none' is not accepted"),
        "HS256 with the public key": (hs256_with_public_key(public_pem),
                                      "algorithm 'HS256' is not accepted"),
        "expired": (token(rsa_key, exp=now - 120), "has expired"),
        "not yet valid": (token(rsa_key, nbf=now + 600), "not valid yet"),
        "wrong issuer": (token(rsa_key, iss="https://evil.example"), f"not issued by {ISSUER}"),
        "wrong audience": (token(rsa_key, aud="another-api"), "not meant for this service"),
        "unknown kid": (token(rsa_key, kid="rsa-9"), "signing key 'rsa-9' is not one"),
        "no kid": (jwt.encode(claims(), rsa_key, algorithm="RS256"), "names no signing key"),
        "kid of another algorithm": (token(rsa_key, kid="ec-1"), "does not match its signing"),
        "no subject": (token(rsa_key, sub=None), "lacks the sub claim"),
        "subject not a string": (token(rsa_key, sub=42), "not valid"),
        "no expiry": (jwt.encode({k: v for k, v in claims().items() if k != "exp"}, rsa_key,
                                 algorithm="RS256", headers={"kid": "rsa-1"}),
                      "lacks the exp claim"),
        "garbage": ("a.b.c", "not a well-formed JWT"),
        "ES256 key, RS256 header": (token(ec_key, kid="rsa-1", alg="ES256"),
                                    "does not match its signing key"),
    }
    for case, (signed, detail) in bad.items():
        response = client.get(f"{GOV}/me", headers=bearer(signed))
        assert response.status_code == 401, (case, response.text)
        assert detail in response.json()["detail"], (case, response.json())
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith('Bearer realm="urbanhub", error="invalid_token"'), case


def test_bearer_tokens_without_oidc_configured_are_refused(
        client: TestClient, rsa_key: rsa.RSAPrivateKey) -> None:
    assert_unauthenticated(client.get(f"{GOV}/me", headers=bearer(token(rsa_key))),
                           "OIDC is not configured")


def test_a_rotated_jwks_file_is_read_again(
        hub: Hub, client: TestClient, oidc: str, jwks_file: Path,
        other_rsa_key: rsa.RSAPrivateKey) -> None:
    rotated = token(other_rsa_key, kid="rsa-2")
    assert client.get(f"{GOV}/me", headers=bearer(rotated)).status_code == 401
    write_jwks(jwks_file, public_jwk(other_rsa_key, "rsa-2", "RS256"))
    later = jwks_file.stat().st_mtime_ns + 1_000_000_000
    os.utime(jwks_file, ns=(later, later))
    assert client.get(f"{GOV}/me", headers=bearer(rotated)).json()["subject"] == "carla"
    jwks_file.write_text("not json")
    os.utime(jwks_file, ns=(later + 1_000_000_000, later + 1_000_000_000))
    broken = client.get(f"{GOV}/me", headers=bearer(rotated))
    assert broken.status_code == 503 and "cannot be read" in broken.json()["detail"]


class _JwksServer:
    """A local JWKS endpoint that counts how often it is fetched."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.fetches = 0
        served = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                served.fetches += 1
                body = json.dumps(jwks).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/jwks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_keys_from_a_jwks_url_are_fetched_once_and_cached(
        hub: Hub, client: TestClient, oidc: str, rsa_key: rsa.RSAPrivateKey) -> None:
    server = _JwksServer({"keys": [public_jwk(rsa_key, "rsa-1", "RS256")]})
    try:
        hub.identities.oidc = OidcVerifier(ISSUER, AUDIENCE, jwks_url=server.url)
        for _ in range(3):
            assert client.get(f"{GOV}/me",
                              headers=bearer(token(rsa_key))).json()["subject"] == "carla"
        assert server.fetches == 1
        unknown = client.get(f"{GOV}/me", headers=bearer(token(rsa_key, kid="rsa-9")))
        assert unknown.status_code == 401 and "rsa-9" in unknown.json()["detail"]
    finally:
        server.close()
    hub.identities.oidc = OidcVerifier(ISSUER, AUDIENCE, jwks_url=server.url)
    down = client.get(f"{GOV}/me", headers=bearer(token(rsa_key)))
    assert down.status_code == 503
    assert down.headers["content-type"] == "application/problem+json"
    assert "cannot be fetched" in down.json()["detail"]


def test_oidc_settings(tmp_path: Path, jwks_file: Path) -> None:
    assert OidcVerifier.from_settings(Settings()) is None
    configured = OidcVerifier.from_settings(Settings(
        oidc_issuer=ISSUER, oidc_audience=AUDIENCE, oidc_jwks_file=str(jwks_file)))
    assert configured is not None and configured.issuer == ISSUER
    for partial, missing in [({"oidc_issuer": ISSUER}, "URBANHUB_OIDC_AUDIENCE"),
                             ({"oidc_jwks_url": "https://idp.example/jwks"},
                              "URBANHUB_OIDC_ISSUER")]:
        with pytest.raises(OidcConfigError, match=missing):
            OidcVerifier.from_settings(Settings(**partial))
    with pytest.raises(OidcConfigError, match="cannot be read"):
        OidcVerifier(ISSUER, AUDIENCE, jwks_file=tmp_path / "missing.json")
    with pytest.raises(OidcConfigError, match="only 'http' and 'https'"):
        OidcVerifier(ISSUER, AUDIENCE, jwks_url="file:///etc/passwd")
    with pytest.raises(OidcConfigError, match="JWKS_FILE or"):
        OidcVerifier(ISSUER, AUDIENCE)


# --- pure model ----------------------------------------------------------------------------

def test_scopes_follow_roles() -> None:
    assert allowed_scopes(["analyst"]) == {Scope.READ}
    assert allowed_scopes(["operator", "privacy_board"]) == set(Scope)
    assert allowed_scopes(["system", "unknown"]) == frozenset()
    assert Caller.public().scopes == {"read"} and not Caller.public().authenticated
    assert Caller.system("ingest").scopes == {"read", "write", "govern"}


def test_a_member_caller_gets_only_scopes_its_roles_allow() -> None:
    member = Member("ann", "uni", frozenset({Role.ANALYST}))
    organisation = Organisation("uni", "University", OrganisationKind.UNIVERSITY)
    caller = member_caller(member, organisation, frozenset(Scope))
    assert caller.scopes == {"read"} and caller.organisation_kind is OrganisationKind.UNIVERSITY


@pytest.mark.parametrize("build", [
    lambda: Member("ann", "uni", frozenset()),
    lambda: Member("anonymous", "uni", frozenset({Role.ANALYST})),
    lambda: Member("ann", "uni", frozenset({Role.ANALYST}), oidc_issuer=ISSUER),
    lambda: Member("ann", "uni", frozenset({Role.ANALYST}), ISSUER, ""),
    lambda: Organisation("-x", "X", OrganisationKind.PARTNER),
    lambda: ApiKey("k", "ann", frozenset(), datetime.now(UTC), datetime.now(UTC)),
    lambda: ApiKey("k", "ann", frozenset({Scope.READ}), datetime.now(UTC),
                   datetime.now(UTC) - timedelta(seconds=1)),
    lambda: ApiKey("k", "ann", frozenset({Scope.READ}), datetime(2026, 1, 1),
                   datetime(2026, 2, 1)),
    lambda: ApiKey("k", "ann", frozenset({Scope.READ}), datetime.now(UTC),
                   datetime.now(UTC) + timedelta(days=1), label="x" * 101),
])
def test_invalid_identities_are_refused(build: Callable[[], object]) -> None:
    with pytest.raises(BadRequestData):
        build()


@pytest.mark.parametrize("text_", ["", "uh_", "uh_0123456789abcdef_short",
                                   "xx_0123456789abcdef_" + "a" * 43,
                                   "uh_0123456789ABCDEF_" + "a" * 43,
                                   "uh_0123456789abcdef_" + "a" * 43 + "\n"])
def test_malformed_keys_are_unauthenticated(text_: str) -> None:
    with pytest.raises(Unauthenticated, match="malformed"):
        parse_api_key(text_)


# --- schema --------------------------------------------------------------------------------

def test_the_migration_creates_the_tables_as_declared(hub: Hub) -> None:
    declared = MetaData()
    for name in IDENTITY_TABLES:
        metadata.tables[name].to_metadata(declared)
    def identity_only(name: str | None, kind: str, parent: Any) -> bool:
        return kind != "table" or name in IDENTITY_TABLES

    with hub.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"include_name": identity_only})
        assert compare_metadata(context, declared) == []
    with hub.engine.connect() as connection:
        assert connection.execute(select(metadata.tables["api_keys"])).all() == []
