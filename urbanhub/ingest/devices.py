"""The device registry: provisioning (like a FIWARE IoT Agent), governance of devices, and
the in-memory view the ingest gate reads for every batch.

A device says which entity it writes, how its measurement keys map to NGSI-LD attributes
and what kind of data each is (its category, hence its risk tier); it belongs to an
organisation, has a status, and authenticates with its own device key. Every change goes
through here, in one transaction with its audit entry and a bump of the device revision.

Adapters look devices up for every message, so they are compiled into ``DeviceMapping``
objects held in memory (``DeviceIndex``), replaced whole on every change: in this process
at once, in other processes when the gate next sees a new device revision (once a batch).
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from urbanhub.governance.audit import AuditEvent
from urbanhub.hub.entities import EntityService
from urbanhub.ingest.mosquitto import broker_password_hash
from urbanhub.model.caller import Caller
from urbanhub.model.devices import (
    DEVICE_KEY,
    Approval,
    DataCategory,
    DeviceGovernance,
    DeviceStatus,
    Refusal,
    RiskTier,
    Sender,
    TierOverride,
    check_device_manager,
    check_justification,
    check_may_approve,
    check_may_give,
    check_may_manage,
    check_may_override,
    declared_category_problem,
    derive_tier,
    gate_refusal,
    infer_category,
)
from urbanhub.model.errors import (
    AlreadyExists,
    BadRequestData,
    Forbidden,
    ResourceNotFound,
    Unauthenticated,
)
from urbanhub.model.identity import hash_secret, secret_matches
from urbanhub.ngsild.context import TermMap
from urbanhub.ngsild.entity import (
    Entity,
    check_entity_id,
    check_geometry,
    check_name,
    parse_attributes,
)
from urbanhub.ngsild.timeutil import utcnow
from urbanhub.store import devices as store
from urbanhub.store.audit import AuditLog
from urbanhub.store.devices import DeviceCredential, DeviceFilter, DeviceRecord
from urbanhub.store.entities import EntityStore
from urbanhub.store.identities import get_organisation

TRANSPORTS = ("MQTT", "HTTP")
#: Attribute types a device can send; others (LanguageProperty, …) are not sensor data.
DEVICE_ATTRIBUTE_TYPES = ("Property", "GeoProperty", "Relationship")
#: Keys of a measurement that are not readings.
RESERVED_KEYS = frozenset({"deviceId", "observedAt"})
_DEVICE_ID = re.compile(r"^[A-Za-z0-9._:~-]{1,128}$")  # usable as one MQTT topic level
_OBJECT_ID = re.compile(r"^[A-Za-z0-9._:~-]{1,128}$")
_FIELDS = {"deviceId", "entityId", "entityType", "@context", "transport", "attributes",
           "staticAttributes", "owner", "manufacturer", "model", "location"}
_ATTRIBUTE_FIELDS = {"object_id", "name", "type", "unitCode", "category"}
_MAX_TEXT = 200  # manufacturer, model
_CATEGORIES = frozenset(DataCategory)
#: How long an unknown device id is believed unknown before the revision is read again.
_MISS_RECHECK_S = 2.0


# --- what adapters read for every message -----------------------------------------------------

@dataclass(frozen=True, slots=True)
class AttributeMapping:
    """Where one measurement key goes: attribute IRI, attribute type and unit."""

    name: str
    kind: str
    unit_code: str | None


@dataclass(frozen=True, slots=True)
class DeviceMapping:
    """A device as the hot path needs it: mapping, owner, status, key id and hash."""

    device_id: str
    entity_id: str
    attributes: dict[str, AttributeMapping]  # measurement key (object_id) -> mapping
    owner: str | None
    status: DeviceStatus
    key_id: str | None = None
    key_hash: str | None = None


def compile_mapping(record: DeviceRecord) -> DeviceMapping:
    credential = record.credential
    return DeviceMapping(
        record.id, record.entity_id,
        {key: AttributeMapping(spec["name"], spec["type"], spec.get("unitCode"))
         for key, spec in record.attributes.items()},
        record.governance.owner, record.governance.status,
        credential.key_id if credential else None, credential.secret_hash if credential else None)


@dataclass(frozen=True)
class GateRefusal:
    code: Refusal
    reason: str
    device_id: str | None


@dataclass(frozen=True)
class DeviceIndex:
    """Every device of the hub at one revision, indexed for the hot path. Never changed:
    a change builds a new index (readers in other threads take no lock)."""

    revision: int
    by_id: Mapping[str, DeviceMapping]
    by_entity: Mapping[str, DeviceMapping] = field(init=False)
    by_key: Mapping[str, DeviceMapping] = field(init=False)
    inactive_entities: frozenset[str] = field(init=False)
    active_entities_by_owner: Mapping[str, frozenset[str]] = field(init=False)

    def __post_init__(self) -> None:
        mappings = self.by_id.values()
        owned: dict[str, set[str]] = {}
        for device in mappings:
            if device.owner is not None and device.status is DeviceStatus.ACTIVE:
                owned.setdefault(device.owner, set()).add(device.entity_id)
        object.__setattr__(self, "by_entity", {d.entity_id: d for d in mappings})
        object.__setattr__(self, "by_key", {d.key_id: d for d in mappings if d.key_id})
        object.__setattr__(self, "inactive_entities", frozenset(
            d.entity_id for d in mappings if d.status is not DeviceStatus.ACTIVE))
        object.__setattr__(self, "active_entities_by_owner",
                           {owner: frozenset(ids) for owner, ids in owned.items()})

    def refusals(self, entity_ids: set[str], sender: Sender) -> dict[str, GateRefusal]:
        """The entities among ``entity_ids`` that ``sender`` may not write, and why.

        Set operations find the few suspects (none, on the accepted path); only those are
        judged one by one by the model's ``gate_refusal``.
        """
        if sender.trusted:
            suspects = entity_ids & self.inactive_entities
        elif sender.device is not None:
            own = self.by_id.get(sender.device)
            suspects = (entity_ids - {own.entity_id}
                        if own is not None and own.status is DeviceStatus.ACTIVE else entity_ids)
        else:
            allowed = self.active_entities_by_owner.get(sender.organisation or "", frozenset())
            suspects = (entity_ids & self.by_entity.keys()) - allowed
        refused: dict[str, GateRefusal] = {}
        for entity_id in suspects:
            device = self.by_entity.get(entity_id)
            found = gate_refusal(sender, device, entity_id)
            if found is not None:
                refused[entity_id] = GateRefusal(found[0], found[1],
                                                 device.device_id if device else None)
        return refused


_EMPTY = DeviceIndex(-1, {})


# --- provisioning bodies -------------------------------------------------------------------

@dataclass(frozen=True)
class Provisioning:
    """A validated device body: the device to insert (but its owner and key) and the
    entity to create."""

    device_id: str
    entity_id: str
    entity_type: str  # expanded IRI
    attributes: dict[str, dict[str, Any]]  # key -> {name, type, unitCode?, category}
    transport: str
    entity: Entity
    owner: str | None  # as the body names it; the caller's organisation when None
    manufacturer: str | None = None
    model: str | None = None
    location: dict[str, Any] | None = None

    @property
    def derived_tier(self) -> RiskTier:
        return derive_tier(DataCategory(s["category"]) for s in self.attributes.values())

    def record(self, owner: str, credential: DeviceCredential, now: datetime) -> DeviceRecord:
        return DeviceRecord(self.device_id, self.entity_id, self.entity_type, self.attributes,
                            self.transport, now, now,
                            DeviceGovernance.provisioned(owner, self.derived_tier),
                            self.manufacturer, self.model, self.location, credential)


def parse_device(payload: Any, terms: TermMap) -> Provisioning:
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
        expanded_type = terms.expand(entity_type)  # type: ignore[arg-type]
    except BadRequestData as exc:
        errors.append(exc.detail)
        expanded_type = ""
    transport = payload.get("transport", "MQTT")
    if transport not in TRANSPORTS:
        errors.append(f"transport must be one of {', '.join(TRANSPORTS)}")
    owner = payload.get("owner")
    if owner is not None and (not isinstance(owner, str) or not owner):
        errors.append("owner must be the id of an organisation")
    texts = {name: payload.get(name) for name in ("manufacturer", "model")}
    errors.extend(f"{name} must be a string of 1-{_MAX_TEXT} characters"
                  for name, value in texts.items() if value is not None and (
                      not isinstance(value, str) or not 0 < len(value) <= _MAX_TEXT))
    mapping = _parse_mapping(payload.get("attributes"), terms, expanded_type, errors)
    attrs = _parse_static(payload.get("staticAttributes", {}), terms, mapping, errors)
    location = _parse_location(payload.get("location"), terms, attrs, errors)
    if errors:
        raise BadRequestData("Invalid device: " + "; ".join(errors) + ".", errors=errors)
    assert isinstance(device_id, str) and isinstance(entity_id, str)
    return Provisioning(device_id, entity_id, expanded_type, mapping, transport,
                        {"id": entity_id, "type": [expanded_type], "attrs": attrs}, owner,
                        texts["manufacturer"], texts["model"], location)


def _parse_static(static: Any, terms: TermMap, mapping: dict[str, dict[str, Any]],
                  errors: list[str]) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    if not isinstance(static, dict):
        errors.append("staticAttributes must be an object of NGSI-LD attributes")
        return attrs
    for name, raw in static.items():
        try:
            attrs.update(parse_attributes({name: raw}, terms))
        except BadRequestData as exc:
            errors.append(f"staticAttributes.{name}: {exc.detail}")
    clash = {terms.expand(n) for n in static} & {m["name"] for m in mapping.values()}
    errors.extend(f"staticAttributes.{terms.compact(n)} is also a measured attribute"
                  for n in sorted(clash))
    return attrs


def _parse_location(raw: Any, terms: TermMap, attrs: dict[str, Any],
                    errors: list[str]) -> dict[str, Any] | None:
    """Where the device stands: ``location`` (then also its entity's location), else the
    entity's static location."""
    name = terms.expand("location")
    static = attrs.get(name, {}).get("")
    if raw is None:
        return static.get("value") if static and static.get("type") == "GeoProperty" else None
    if static is not None:
        errors.append("location is given twice: as location and in staticAttributes")
        return None
    try:
        geometry = check_geometry("location", raw)
    except BadRequestData as exc:
        errors.append(exc.detail)
        return None
    attrs[name] = {"": {"type": "GeoProperty", "value": geometry}}
    return geometry


def _parse_mapping(raw: Any, terms: TermMap, entity_type: str,
                   errors: list[str]) -> dict[str, dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        errors.append("attributes must be a non-empty list of {object_id, name, type, "
                      "unitCode, category}")
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
        category = _category(item.get("category"), infer_category(entity_type, iri, kind),
                             where, errors)
        if category is None:
            continue
        names.add(iri)
        mapping[object_id] = {"name": iri, "type": kind, **({"unitCode": unit} if unit else {}),
                              "category": category.value}
    return mapping


def _category(raw: Any, inferred: DataCategory, where: str,
              errors: list[str]) -> DataCategory | None:
    """The declared category if it may replace the inferred one, else None (and why)."""
    if raw is None:
        return inferred
    if not isinstance(raw, str) or raw not in _CATEGORIES:
        errors.append(f"{where}.category must be one of "
                      f"{', '.join(c.value for c in DataCategory)}")
        return None
    problem = declared_category_problem(inferred, DataCategory(raw))
    if problem is not None:
        errors.append(f"{where} {problem}")
        return None
    return DataCategory(raw)


# --- the registry ----------------------------------------------------------------------------

@dataclass(frozen=True)
class IssuedDevice:
    """A device with a new key: ``key`` is the whole key, handed over once, never stored."""

    record: DeviceRecord
    key: str


class InvalidDeviceKey(Unauthenticated):
    """A device key that does not authenticate; ``device_id`` when its key id names one."""

    def __init__(self, detail: str, device_id: str | None = None) -> None:
        super().__init__(detail, scheme=DEVICE_KEY.scheme)
        self.device_id = device_id


@dataclass
class _Change:
    """One change of one device in progress: its connection, the device as it was and as it
    becomes (None: not there), and the audit events to append."""

    conn: Connection
    caller: Caller
    now: datetime
    device_id: str
    before: DeviceRecord | None
    after: DeviceRecord | None
    events: list[AuditEvent] = field(default_factory=list)

    @property
    def existing(self) -> DeviceRecord:
        if self.before is None:
            raise ResourceNotFound(f"Device {self.device_id} does not exist.")
        return self.before

    @property
    def result(self) -> DeviceRecord:
        assert self.after is not None
        return self.after

    def govern(self, governance: DeviceGovernance) -> None:
        store.update_governance(self.conn, self.device_id, governance, self.now)
        self.after = replace(self.existing, governance=governance, modified_at=self.now)

    def record(self, action: str, details: dict[str, Any]) -> None:
        self.events.append(AuditEvent(self.caller.subject, action, f"device:{self.device_id}",
                                      details))


class DeviceRegistry:
    """Provisioned devices: governed changes in the database, plus the index adapters and
    the gate read per batch (``lookup``, ``authenticate``, ``refusals``)."""

    def __init__(self, store: EntityStore, entities: EntityService, audit: AuditLog,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.entities = entities
        self.audit = audit
        self.clock = clock
        self._index = _EMPTY
        self._checked_at = float("-inf")
        self._lock = threading.Lock()

    # --- the hot path -------------------------------------------------------------------

    def lookup(self, device_id: str) -> DeviceMapping | None:
        """The device with this id; an unknown id re-reads the revision at most every 2 s
        (another process may have provisioned it)."""
        found = self._index.by_id.get(device_id)
        if found is None and time.monotonic() - self._checked_at > _MISS_RECHECK_S:
            with self.store.read() as conn:
                self.sync(conn)
            found = self._index.by_id.get(device_id)
        return found

    def sync(self, conn: Connection) -> None:
        """Reload the devices if another process changed them (one primary-key read)."""
        revision = store.current_revision(conn)
        self._checked_at = time.monotonic()
        if revision != self._index.revision:
            with self._lock:
                if revision != self._index.revision:
                    records = store.list_devices(conn)  # read after the revision: never older
                    self._index = DeviceIndex(revision, {r.id: compile_mapping(r)
                                                         for r in records})

    def refusals(self, conn: Connection, entity_ids: set[str],
                 sender: Sender) -> dict[str, GateRefusal]:
        """The ingest gate: which of these entities ``sender`` may not write, and why, as of
        the device revision ``conn`` sees. A member writing an entity that no device writes
        (an NGSI-LD fragment) is held to the NGSI-LD API's write rules; batches of device
        readings have no such entity and cost nothing here."""
        self.sync(conn)
        index = self._index
        refused = index.refusals(entity_ids, sender)
        if sender.caller is not None:
            for entity_id in entity_ids - index.by_entity.keys():
                try:
                    self.entities.guard.check_entity_write(conn, sender.caller, entity_id)
                except Forbidden as exc:
                    refused[entity_id] = GateRefusal(Refusal.NOT_PERMITTED, exc.detail, None)
        return refused

    def authenticate(self, presented: str) -> DeviceMapping:
        """The device a device key belongs to, whatever its status (the gate judges that)."""
        try:
            key_id, secret = DEVICE_KEY.parse(presented)
        except Unauthenticated as exc:
            raise InvalidDeviceKey(exc.detail) from None
        device = self._index.by_key.get(key_id)
        if device is None:  # perhaps issued by another process since
            with self.store.read() as conn:
                self.sync(conn)
            device = self._index.by_key.get(key_id)
        if device is None or device.key_hash is None or not secret_matches(secret,
                                                                           device.key_hash):
            raise InvalidDeviceKey("The device key is not valid.",
                                   device.device_id if device else None)
        return device

    # --- reads ----------------------------------------------------------------------------

    def get(self, device_id: str) -> DeviceRecord:
        with self.store.read() as conn:
            found = store.get_device(conn, device_id)
        if found is None:
            raise ResourceNotFound(f"Device {device_id} does not exist.")
        return found

    def page(self, flt: DeviceFilter, *, limit: int,
             offset: int) -> tuple[list[DeviceRecord], int]:
        with self.store.read() as conn:
            return (store.list_devices(conn, flt, limit=limit, offset=offset),
                    store.count_devices(conn, flt))

    def all(self) -> list[DeviceRecord]:
        with self.store.read() as conn:
            return store.list_devices(conn)

    # --- governed changes -------------------------------------------------------------------

    def provision(self, caller: Caller, payload: Any, terms: TermMap) -> IssuedDevice:
        """Register a device with a new key and create its entity (type and static
        attributes) if new. A high-tier device starts pending the privacy board's approval."""
        check_device_manager(caller, "Provisioning a device")
        provisioning = parse_device(payload, terms)
        owner = provisioning.owner or caller.organisation
        if owner is None:
            raise BadRequestData("Name the owner: the organisation the device belongs to.")
        check_may_manage(caller, owner, "Provisioning a device")
        with self.store.read() as conn:
            if get_organisation(conn, owner) is None:
                raise BadRequestData(f"Organisation {owner} does not exist.")
            if store.get_device(conn, provisioning.device_id) is not None:
                raise AlreadyExists(f"Device {provisioning.device_id} already exists.")
        with contextlib.suppress(AlreadyExists):  # an existing entity is kept as it is
            self.entities.create(caller, provisioning.entity)
        credential, key = self._new_key(provisioning.transport)
        with self._change(caller, provisioning.device_id, existing=False) as change:
            record = provisioning.record(owner, credential, change.now)
            store.insert_device(change.conn, record)
            change.after = record
            change.record("device.provision", {
                "entity": record.entity_id, "owner": owner, "transport": record.transport,
                "categories": {k: c.value for k, c in record.categories.items()},
                "tier": record.governance.tier.value,
                "status": record.governance.status.value, "keyId": credential.key_id})
        return IssuedDevice(record, key)

    def set_status(self, caller: Caller, device_id: str, status: DeviceStatus,
                   reason: str | None = None) -> DeviceRecord:
        """Suspend, reactivate or retire (the CDO, or the owner's stewards and operators)."""
        action = f"Changing the status of device {device_id}"
        check_device_manager(caller, action)
        with self._change(caller, device_id) as change:
            before = change.existing
            check_may_manage(caller, before.governance.owner, action)
            after = before.governance.with_status(status, device_id)
            if after != before.governance:
                change.govern(after)
                change.record("device.status", {"before": before.governance.status.value,
                                                "after": after.status.value, "reason": reason})
        return change.result

    def set_owner(self, caller: Caller, device_id: str, owner: str) -> DeviceRecord:
        """Give the device to another organisation (the CDO only)."""
        check_may_give(caller)
        with self._change(caller, device_id) as change:
            before = change.existing
            if get_organisation(change.conn, owner) is None:
                raise BadRequestData(f"Organisation {owner} does not exist.")
            if owner != before.governance.owner:
                change.govern(replace(before.governance, owner=owner))
                change.record("device.owner", {"before": before.governance.owner,
                                               "after": owner})
        return change.result

    def approve(self, caller: Caller, device_id: str,
                comment: str | None = None) -> DeviceRecord:
        """The privacy board lets a high-tier device write."""
        check_may_approve(caller)
        with self._change(caller, device_id) as change:
            after = change.existing.governance.approved(Approval(caller.subject, change.now),
                                                        device_id)
            change.govern(after)
            change.record("device.approve", {"tier": after.tier.value, "comment": comment})
        return change.result

    def override_tier(self, caller: Caller, device_id: str, tier: RiskTier,
                      justification: str) -> DeviceRecord:
        """Set the tier in force, with a justification (see ``check_may_override``)."""
        text = check_justification(justification)
        with self._change(caller, device_id) as change:
            before = change.existing.governance
            check_may_override(caller, before, tier)
            after = before.overridden(TierOverride(tier, text, caller.subject, change.now))
            change.govern(after)
            change.record("device.tier.override", {
                "derived": before.derived_tier.value, "before": before.tier.value,
                "after": tier.value, "justification": text,
                "statusBefore": before.status.value, "statusAfter": after.status.value})
        return change.result

    def rotate_key(self, caller: Caller, device_id: str) -> IssuedDevice:
        """A new device key; the old one stops working at once (at the broker once its
        password file is written again)."""
        action = f"Rotating the key of device {device_id}"
        check_device_manager(caller, action)
        with self._change(caller, device_id) as change:
            before = change.existing
            check_may_manage(caller, before.governance.owner, action)
            credential, key = self._new_key(before.transport)
            store.set_credential(change.conn, device_id, credential, change.now)
            change.after = replace(before, credential=credential, modified_at=change.now)
            change.record("device.key.rotate", {
                "keyId": credential.key_id,
                "previousKeyId": before.credential.key_id if before.credential else None})
        return IssuedDevice(change.result, key)

    def delete(self, caller: Caller, device_id: str) -> None:
        """Forget a device; its entity and history stay (they are data, not configuration)."""
        action = f"Deleting device {device_id}"
        check_device_manager(caller, action)
        with self._change(caller, device_id) as change:
            before = change.existing
            check_may_manage(caller, before.governance.owner, action)
            store.delete_device(change.conn, device_id)
            change.after = None
            change.record("device.delete", {"entity": before.entity_id,
                                            "owner": before.governance.owner})

    # --- internals ------------------------------------------------------------------------

    @contextmanager
    def _change(self, caller: Caller, device_id: str, *,
                existing: bool = True) -> Iterator[_Change]:
        """A write transaction with the device locked (``existing``); on the way out it
        bumps the revision and appends the audit events before committing, then puts the
        change into this process's index."""
        with self.store.write() as conn:
            before = store.get_device(conn, device_id, for_update=True) if existing else None
            change = _Change(conn, caller, self.clock(), device_id, before, before)
            yield change
            if not change.events:
                return
            revision = store.bump_revision(conn)
            self.audit.append(change.events, conn)
        self._apply(revision, device_id, change.after)

    def _apply(self, revision: int, device_id: str, record: DeviceRecord | None) -> None:
        """Put a committed change into the index: by itself if the index was current just
        before it, else by reloading every device."""
        with self._lock:
            index = self._index
            if index.revision == revision - 1:
                by_id = {k: v for k, v in index.by_id.items() if k != device_id}
                if record is not None:
                    by_id[device_id] = compile_mapping(record)
                self._index = DeviceIndex(revision, by_id)
                return
        with self.store.read() as conn:
            self.sync(conn)

    def _new_key(self, transport: str) -> tuple[DeviceCredential, str]:
        key_id, secret, key = DEVICE_KEY.issue()
        broker_hash = broker_password_hash(key) if transport == "MQTT" else None
        return DeviceCredential(key_id, hash_secret(secret), broker_hash, self.clock()), key
