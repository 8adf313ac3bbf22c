"""Repository for provisioned devices: the entity a device writes, how its keys map, and its
governance (owner, status, risk tier, approval, device key hashes).

Every change bumps the device revision in the same transaction, so each process knows with
one primary-key read whether the devices it holds in memory are current.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, Select, delete, func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from urbanhub.model.devices import (
    Approval,
    DataCategory,
    DeviceGovernance,
    DeviceStatus,
    RiskTier,
    TierOverride,
    derive_tier,
)
from urbanhub.model.errors import AlreadyExists
from urbanhub.store.db import lock_sqlite_database
from urbanhub.store.tables import device_revision, devices

_REVISION_ROW = 1


@dataclass(frozen=True)
class DeviceCredential:
    """What is kept of a device key: never the key, only hashes of it."""

    key_id: str
    secret_hash: str  # SHA-256 of the secret, checked on HTTP
    broker_password_hash: str | None  # Mosquitto's hash of the whole key (MQTT devices)
    issued_at: datetime


@dataclass(frozen=True)
class DeviceRecord:
    """A device row; ``attributes`` maps measurement key -> {name IRI, type, unitCode?,
    category}."""

    id: str
    entity_id: str
    entity_type: str
    attributes: dict[str, dict[str, Any]]
    transport: str
    created_at: datetime
    modified_at: datetime
    governance: DeviceGovernance
    manufacturer: str | None = None
    model: str | None = None
    location: dict[str, Any] | None = None  # GeoJSON geometry
    credential: DeviceCredential | None = None

    @property
    def categories(self) -> dict[str, DataCategory]:
        """Measurement key -> the data category of that attribute."""
        return {key: DataCategory(spec["category"]) for key, spec in self.attributes.items()}


@dataclass(frozen=True)
class DeviceFilter:
    status: DeviceStatus | None = None
    tier: RiskTier | None = None
    owner: str | None = None


def _record(row: Row[Any]) -> DeviceRecord:
    attributes = orjson.loads(row.attributes)
    override = None if row.tier_override is None else TierOverride(
        RiskTier(row.tier_override), row.tier_justification, row.tier_overridden_by,
        row.tier_overridden_at)
    approval = None if row.approved_by is None else Approval(row.approved_by, row.approved_at)
    governance = DeviceGovernance(
        row.owner, derive_tier(DataCategory(s["category"]) for s in attributes.values()),
        DeviceStatus(row.status), override, approval)
    credential = None if row.credential_id is None else DeviceCredential(
        row.credential_id, row.credential_hash, row.broker_password_hash,
        row.credential_issued_at)
    return DeviceRecord(row.id, row.entity_id, row.entity_type, attributes, row.transport,
                        row.created_at, row.modified_at, governance, row.manufacturer,
                        row.model, None if row.location is None else orjson.loads(row.location),
                        credential)


def _governance_columns(governance: DeviceGovernance) -> dict[str, Any]:
    override, approval = governance.override, governance.approval
    return {
        "owner": governance.owner, "status": governance.status.value,
        "risk_tier": governance.tier.value,
        "tier_override": override.tier.value if override else None,
        "tier_justification": override.justification if override else None,
        "tier_overridden_by": override.by if override else None,
        "tier_overridden_at": override.at if override else None,
        "approved_by": approval.by if approval else None,
        "approved_at": approval.at if approval else None,
    }


def _credential_columns(credential: DeviceCredential | None) -> dict[str, Any]:
    return {"credential_id": credential.key_id if credential else None,
            "credential_hash": credential.secret_hash if credential else None,
            "broker_password_hash": credential.broker_password_hash if credential else None,
            "credential_issued_at": credential.issued_at if credential else None}


def insert_device(conn: Connection, device: DeviceRecord) -> None:
    """Insert a device; AlreadyExists when the id or the entity is taken by another device."""
    if conn.scalar(select(devices.c.id).where(devices.c.id == device.id)) is not None:
        raise AlreadyExists(f"Device {device.id} already exists.")
    owner = conn.scalar(select(devices.c.id).where(devices.c.entity_id == device.entity_id))
    if owner is not None:
        raise AlreadyExists(f"Entity {device.entity_id} is already written by device {owner}.")
    try:
        with conn.begin_nested():
            conn.execute(devices.insert().values(
                id=device.id, entity_id=device.entity_id, entity_type=device.entity_type,
                attributes=orjson.dumps(device.attributes).decode(), transport=device.transport,
                created_at=device.created_at, modified_at=device.modified_at,
                manufacturer=device.manufacturer, model=device.model,
                location=None if device.location is None else orjson.dumps(
                    device.location).decode(),
                **_governance_columns(device.governance),
                **_credential_columns(device.credential)))
    except IntegrityError as exc:  # a concurrent provisioning won the race
        raise AlreadyExists(f"Device {device.id} or its entity is already provisioned.") from exc


def get_device(conn: Connection, device_id: str, *, for_update: bool = False
               ) -> DeviceRecord | None:
    """A device; ``for_update`` locks it until the transaction ends (the row on PostgreSQL,
    the database on SQLite), so concurrent changes to it take turns."""
    query = select(devices).where(devices.c.id == device_id)
    if for_update:
        if conn.dialect.name == "sqlite":
            lock_sqlite_database(conn)
        else:
            query = query.with_for_update()
    row = conn.execute(query).first()
    return _record(row) if row is not None else None


def _filtered(query: Select[Any], flt: DeviceFilter) -> Select[Any]:
    if flt.status is not None:
        query = query.where(devices.c.status == flt.status.value)
    if flt.tier is not None:
        query = query.where(devices.c.risk_tier == flt.tier.value)
    if flt.owner is not None:
        query = query.where(devices.c.owner == flt.owner)
    return query


def list_devices(conn: Connection, flt: DeviceFilter = DeviceFilter(), *,
                 limit: int | None = None, offset: int = 0) -> list[DeviceRecord]:
    query = _filtered(select(devices), flt).order_by(devices.c.id).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    return [_record(row) for row in conn.execute(query)]


def count_devices(conn: Connection, flt: DeviceFilter = DeviceFilter()) -> int:
    return int(conn.scalar(_filtered(select(func.count()).select_from(devices), flt)) or 0)


def update_governance(conn: Connection, device_id: str, governance: DeviceGovernance,
                      now: datetime) -> None:
    conn.execute(update(devices).where(devices.c.id == device_id).values(
        modified_at=now, **_governance_columns(governance)))


def set_credential(conn: Connection, device_id: str, credential: DeviceCredential,
                   now: datetime) -> None:
    conn.execute(update(devices).where(devices.c.id == device_id).values(
        modified_at=now, **_credential_columns(credential)))


def delete_device(conn: Connection, device_id: str) -> bool:
    return conn.execute(delete(devices).where(devices.c.id == device_id)).rowcount > 0


def current_revision(conn: Connection) -> int:
    """The device revision; 0 before any device changed."""
    found = conn.scalar(select(device_revision.c.revision).where(
        device_revision.c.id == _REVISION_ROW))
    return int(found or 0)


def bump_revision(conn: Connection) -> int:
    """Tell every process its devices are stale; the new revision. The row stays locked
    until the transaction ends, so changes get distinct, ordered revisions."""
    bumped = conn.execute(update(device_revision).where(
        device_revision.c.id == _REVISION_ROW).values(revision=device_revision.c.revision + 1))
    if bumped.rowcount == 0:
        try:
            with conn.begin_nested():
                conn.execute(insert(device_revision).values(id=_REVISION_ROW, revision=1))
            return 1
        except IntegrityError:  # another transaction inserted the row first
            return bump_revision(conn)
    return current_revision(conn)
