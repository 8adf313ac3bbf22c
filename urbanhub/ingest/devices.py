"""Device provisioning (like a FIWARE IoT Agent) and the in-memory device mappings.

A device says which entity it writes and how its measurement keys map to NGSI-LD
attributes. Adapters look that mapping up for every message, so it is compiled once into
``DeviceMapping`` objects held in memory and replaced whenever a device changes here.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from urbanhub.hub.entities import EntityService
from urbanhub.model.caller import Caller
from urbanhub.model.errors import AlreadyExists, BadRequestData, ResourceNotFound
from urbanhub.ngsild.context import TermMap
from urbanhub.ngsild.entity import Entity, check_entity_id, check_name, parse_attributes
from urbanhub.ngsild.timeutil import utcnow
from urbanhub.store.devices import (
    DeviceRecord,
    count_devices,
    delete_device,
    get_device,
    insert_device,
    list_devices,
)
from urbanhub.store.entities import EntityStore

TRANSPORTS = ("MQTT", "HTTP")
#: Attribute types a device can send; others (LanguageProperty, …) are not sensor data.
DEVICE_ATTRIBUTE_TYPES = ("Property", "GeoProperty", "Relationship")
#: Keys of a measurement that are not readings.
RESERVED_KEYS = frozenset({"deviceId", "observedAt"})
_DEVICE_ID = re.compile(r"^[A-Za-z0-9._:~-]{1,128}$")  # usable as one MQTT topic level
_OBJECT_ID = re.compile(r"^[A-Za-z0-9._:~-]{1,128}$")
_FIELDS = {"deviceId", "entityId", "entityType", "@context", "transport", "attributes",
           "staticAttributes"}
_ATTRIBUTE_FIELDS = {"object_id", "name", "type", "unitCode"}
#: How long an unknown device id is believed unknown before the table is read again
#: (another process may have provisioned it).
_MISS_RELOAD_S = 2.0


@dataclass(frozen=True, slots=True)
class AttributeMapping:
    """Where one measurement key goes: attribute IRI, attribute type and unit."""

    name: str
    kind: str
    unit_code: str | None


@dataclass(frozen=True, slots=True)
class DeviceMapping:
    device_id: str
    entity_id: str
    attributes: dict[str, AttributeMapping]  # measurement key (object_id) -> mapping


def compile_mapping(record: DeviceRecord) -> DeviceMapping:
    return DeviceMapping(record.id, record.entity_id, {
        key: AttributeMapping(spec["name"], spec["type"], spec.get("unitCode"))
        for key, spec in record.attributes.items()})


@dataclass(frozen=True)
class Provisioning:
    """A validated device body: the device row to insert and the entity to create."""

    device: DeviceRecord
    entity: Entity


def parse_device(payload: Any, terms: TermMap, now: datetime) -> Provisioning:
    """Validate a provisioning body, naming every problem, and expand its names."""
    if not isinstance(payload, dict):
        raise BadRequestData("A device must be a JSON object.")
    errors: list[str] = [f"unknown member {key!r}" for key in payload if key not in _FIELDS]
    device_id = payload.get("deviceId")
    if not isinstance(device_id, str) or not _DEVICE_ID.match(device_id):
        errors.append("deviceId must be 1-128 characters of letters, digits and . _ : ~ -")
    entity_id = payload.get("entityId")
    try:
        check_entity_id(entity_id)
    except BadRequestData as exc:
        errors.append(f"entityId: {exc.detail}")
    entity_type = payload.get("entityType")
    try:
        check_name(entity_type, "entityType")
    except BadRequestData as exc:
        errors.append(exc.detail)
    transport = payload.get("transport", "MQTT")
    if transport not in TRANSPORTS:
        errors.append(f"transport must be one of {', '.join(TRANSPORTS)}")
    mapping = _parse_mapping(payload.get("attributes"), terms, errors)
    static = payload.get("staticAttributes", {})
    attrs: dict[str, Any] = {}
    if not isinstance(static, dict):
        errors.append("staticAttributes must be an object of NGSI-LD attributes")
    else:
        for name, raw in static.items():
            try:
                attrs.update(parse_attributes({name: raw}, terms))
            except BadRequestData as exc:
                errors.append(f"staticAttributes.{name}: {exc.detail}")
        clash = {terms.expand(n) for n in static} & {m["name"] for m in mapping.values()}
        errors.extend(f"staticAttributes.{terms.compact(n)} is also a measured attribute"
                      for n in sorted(clash))
    if errors:
        raise BadRequestData("Invalid device: " + "; ".join(errors) + ".", errors=errors)
    assert isinstance(device_id, str) and isinstance(entity_id, str)
    expanded_type = terms.expand(entity_type)  # type: ignore[arg-type]
    record = DeviceRecord(device_id, entity_id, expanded_type, mapping, transport, now, now)
    return Provisioning(record, {"id": entity_id, "type": [expanded_type], "attrs": attrs})


def _parse_mapping(raw: Any, terms: TermMap, errors: list[str]) -> dict[str, dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        errors.append("attributes must be a non-empty list of {object_id, name, type, unitCode}")
        return {}
    mapping: dict[str, dict[str, Any]] = {}
    names: set[str] = set()
    for index, item in enumerate(raw):
        where = f"attributes[{index}]"
        if not isinstance(item, dict):
            errors.append(f"{where} must be an object")
            continue
        errors.extend(f"{where} has unknown member {key!r}" for key in item
                      if key not in _ATTRIBUTE_FIELDS)
        object_id = item.get("object_id")
        if not isinstance(object_id, str) or not _OBJECT_ID.match(object_id):
            errors.append(f"{where}.object_id must be 1-128 characters of letters, digits "
                          "and . _ : ~ -")
            continue
        if object_id in RESERVED_KEYS:
            errors.append(f"{where}.object_id {object_id!r} is reserved")
            continue
        if object_id in mapping:
            errors.append(f"{where}.object_id {object_id!r} is declared twice")
            continue
        name = item.get("name", object_id)
        try:
            check_name(name)
        except BadRequestData as exc:
            errors.append(f"{where}.name: {exc.detail}")
            continue
        kind = item.get("type", "Property")
        if kind not in DEVICE_ATTRIBUTE_TYPES:
            errors.append(f"{where}.type must be one of {', '.join(DEVICE_ATTRIBUTE_TYPES)}")
            continue
        unit = item.get("unitCode")
        if unit is not None and (not isinstance(unit, str) or not unit or kind != "Property"):
            errors.append(f"{where}.unitCode must be a non-empty string on a Property")
            continue
        iri = terms.expand(name)
        if iri in names:
            errors.append(f"{where}.name {name!r} is mapped twice")
            continue
        names.add(iri)
        mapping[object_id] = {"name": iri, "type": kind, **({"unitCode": unit} if unit else {})}
    return mapping


class DeviceRegistry:
    """Provisioned devices: CRUD in the database plus the mappings adapters read per message.

    Readers take ``lookup`` from any thread without a lock: the mapping dictionary is
    replaced, never changed in place.
    """

    def __init__(self, store: EntityStore, entities: EntityService,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.entities = entities
        self.clock = clock
        self._mappings: dict[str, DeviceMapping] = {}
        self._loaded_at = float("-inf")
        self._reload_lock = threading.Lock()

    def lookup(self, device_id: str) -> DeviceMapping | None:
        """The mapping of a device; an unknown id re-reads the table at most every 2 s."""
        found = self._mappings.get(device_id)
        if found is None and time.monotonic() - self._loaded_at > _MISS_RELOAD_S:
            self.reload()
            found = self._mappings.get(device_id)
        return found

    def reload(self) -> None:
        with self._reload_lock:
            with self.store.read() as conn:
                records = list_devices(conn)
            self._mappings = {r.id: compile_mapping(r) for r in records}
            self._loaded_at = time.monotonic()

    def provision(self, caller: Caller, payload: Any, terms: TermMap) -> DeviceRecord:
        """Register a device and create its entity (type and static attributes) if new."""
        provisioning = parse_device(payload, terms, self.clock())
        record = provisioning.device
        with self.store.read() as conn:
            if get_device(conn, record.id) is not None:
                raise AlreadyExists(f"Device {record.id} already exists.")
        with contextlib.suppress(AlreadyExists):  # an existing entity is kept as it is
            self.entities.create(caller, provisioning.entity)
        with self.store.write() as conn:
            insert_device(conn, record)
        with self._reload_lock:
            self._mappings = {**self._mappings, record.id: compile_mapping(record)}
        return record

    def get(self, device_id: str) -> DeviceRecord:
        with self.store.read() as conn:
            found = get_device(conn, device_id)
        if found is None:
            raise ResourceNotFound(f"Device {device_id} does not exist.")
        return found

    def page(self, *, limit: int, offset: int) -> tuple[list[DeviceRecord], int]:
        with self.store.read() as conn:
            return list_devices(conn, limit=limit, offset=offset), count_devices(conn)

    def delete(self, device_id: str) -> None:
        """Forget a device; its entity and history stay (they are data, not configuration)."""
        with self.store.write() as conn:
            if not delete_device(conn, device_id):
                raise ResourceNotFound(f"Device {device_id} does not exist.")
        with self._reload_lock:
            self._mappings = {k: v for k, v in self._mappings.items() if k != device_id}
