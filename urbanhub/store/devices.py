"""Repository for provisioned devices: which entity a device writes and how its keys map."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, delete, func, select
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from urbanhub.model.errors import AlreadyExists
from urbanhub.store.tables import devices


@dataclass(frozen=True)
class DeviceRecord:
    """A device row; ``attributes`` maps measurement key -> {name IRI, type, unitCode?}."""

    id: str
    entity_id: str
    entity_type: str
    attributes: dict[str, dict[str, Any]]
    transport: str
    created_at: datetime
    modified_at: datetime


def _record(row: Row[Any]) -> DeviceRecord:
    return DeviceRecord(row.id, row.entity_id, row.entity_type, orjson.loads(row.attributes),
                        row.transport, row.created_at, row.modified_at)


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
                created_at=device.created_at, modified_at=device.modified_at))
    except IntegrityError as exc:  # a concurrent provisioning won the race
        raise AlreadyExists(f"Device {device.id} or its entity is already provisioned.") from exc


def get_device(conn: Connection, device_id: str) -> DeviceRecord | None:
    row = conn.execute(select(devices).where(devices.c.id == device_id)).first()
    return _record(row) if row is not None else None


def list_devices(conn: Connection, *, limit: int | None = None,
                 offset: int = 0) -> list[DeviceRecord]:
    query = select(devices).order_by(devices.c.id).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    return [_record(row) for row in conn.execute(query)]


def count_devices(conn: Connection) -> int:
    return int(conn.scalar(select(func.count()).select_from(devices)) or 0)


def delete_device(conn: Connection, device_id: str) -> bool:
    return conn.execute(delete(devices).where(devices.c.id == device_id)).rowcount > 0
