"""Turning adapter payloads (measurements, NGSI-LD fragments, MQTT messages) into readings.

This is the per-message hot path of ingest, so it avoids validation frameworks: payloads
are parsed with orjson, devices come from the in-memory mappings, timestamps are parsed
once per batch, and history rows are built directly. Everything that cannot be mapped
becomes a ``Rejected`` with the reason, for the dead-letter store.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from urbanhub.ingest.devices import RESERVED_KEYS, AttributeMapping, DeviceRegistry
from urbanhub.ingest.pipeline import Origin, Reading, Rejected
from urbanhub.model.devices import Refusal
from urbanhub.model.errors import UrbanhubError
from urbanhub.ngsild.context import ContextResolver, is_iri
from urbanhub.ngsild.entity import check_geometry, parse_entity
from urbanhub.store.entities import HistoryRow, instance_time, numeric_value

_ZERO = timedelta(0)
#: One MQTT message as the adapter hands it over: topic, raw payload, receive time (epoch s).
Message = tuple[bytes, bytes | bytearray, float]
_MAX_ROUTES = 100_000  # topics remembered per root; beyond that the cache starts again
_MAX_DEVICE_ID = 128  # of a claimed device id quoted in the audit trail


class Unmappable(Exception):
    """A payload (or one key of it) that cannot become a reading; the message is the reason,
    ``code`` what kind of refusal it is and ``device_id`` the device it named, if any."""

    def __init__(self, reason: str, code: Refusal = Refusal.INVALID,
                 device_id: str | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.device_id = device_id


@dataclass(frozen=True, slots=True)
class _Route:
    """What an MQTT topic means, worked out once per topic (devices reuse their topics)."""

    topic: str
    device_id: str | None = None  # {root}/devices/{device_id}/attrs[/{key}]
    key: str | None = None  # set for a bare value of one attribute
    fragments: bool = False  # {root}/ngsi-ld/entities
    error: str | None = None  # no ingest route: why


def _route(topic: bytes, root: str) -> _Route:
    text = topic.decode("utf-8", "backslashreplace")
    prefix = f"{root}/devices/"
    if text.startswith(prefix):
        parts = text[len(prefix):].split("/")
        if len(parts) < 2 or parts[1] != "attrs" or len(parts) > 3 or not all(parts):
            return _Route(text, error=f"topic {text!r} is not {prefix}{{deviceId}}/attrs"
                                      "[/{object_id}]")
        return _Route(text, parts[0], parts[2] if len(parts) == 3 else None)
    if text == f"{root}/ngsi-ld/entities":
        return _Route(text, fragments=True)
    return _Route(text, error=f"no ingest route for topic {text!r}")


@dataclass
class MappedBatch:
    """Readings with where each came from (parallel lists), and what was refused."""

    readings: list[Reading] = field(default_factory=list)
    origins: list[Origin] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


def receive_time(epoch_s: float) -> tuple[datetime, str]:
    """A receive time stamped to the microsecond, so readings without observedAt differ."""
    moment = datetime.fromtimestamp(epoch_s, UTC)
    return moment, moment.isoformat(timespec="microseconds")[:-6] + "Z"


def observed_time(text: object, cache: dict[str, tuple[datetime, str]]) -> tuple[datetime, str]:
    """Parse an observedAt (UTC, ``Z`` spelling kept), remembering it for the batch."""
    if type(text) is not str:
        raise Unmappable(f"observedAt must be an ISO 8601 date-time string, got {text!r}")
    found = cache.get(text)
    if found is not None:
        return found
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise Unmappable(f"observedAt {text!r} is not an ISO 8601 date-time") from None
    if "T" not in text:
        raise Unmappable(f"observedAt {text!r} has no time of day")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
        spelled = moment.isoformat(timespec="microseconds")[:-6] + "Z"
    elif moment.utcoffset() != _ZERO or not text.endswith("Z"):
        moment = moment.astimezone(UTC)
        spelled = moment.isoformat(timespec="microseconds")[:-6] + "Z"
    else:
        spelled = text
    if len(cache) < 10_000:
        cache[text] = (moment, spelled)
    return moment, spelled


def make_instance(key: str, attr: AttributeMapping, value: Any,
                  observed: str) -> tuple[dict[str, Any], float | None]:
    """The attribute instance for one measured value, and its number for rollups."""
    kind = attr.kind
    if kind == "Property":
        vtype = type(value)
        if vtype is float or vtype is int:
            number = float(value)
            if not math.isfinite(number):
                raise Unmappable(f"{key}: {value!r} is not a finite number")
            if attr.unit_code is None:
                return {"type": "Property", "value": value, "observedAt": observed}, number
            return {"type": "Property", "value": value, "observedAt": observed,
                    "unitCode": attr.unit_code}, number
        if attr.unit_code is not None:
            raise Unmappable(f"{key}: expected a number (unitCode {attr.unit_code}), "
                             f"got {_short(value)}")
        if value is None:
            raise Unmappable(f"{key}: a value is required, got null")
        return {"type": "Property", "value": value, "observedAt": observed}, None
    if kind == "GeoProperty":
        try:
            geometry = check_geometry(key, value)
        except UrbanhubError as exc:
            raise Unmappable(exc.detail) from None
        return {"type": "GeoProperty", "value": geometry, "observedAt": observed}, None
    if not isinstance(value, str) or not is_iri(value):
        raise Unmappable(f"{key}: a Relationship needs a URI, got {_short(value)}")
    return {"type": "Relationship", "object": value, "observedAt": observed}, None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class ReadingMapper:
    """Maps the three payload forms of the wire formats (see docs/ingest.md) to readings."""

    def __init__(self, devices: DeviceRegistry, contexts: ContextResolver) -> None:
        self.devices = devices
        self.contexts = contexts
        self._routes: dict[str, dict[bytes, _Route]] = {}  # per topic root

    # --- measurements: {"deviceId"?, "observedAt"?, key: value, ...} --------------------

    def measurement(self, batch: MappedBatch, origin: Origin, device_id: Any,
                    values: dict[str, Any], received: float,
                    times: dict[str, tuple[datetime, str]]) -> None:
        """Map each declared key to a reading; each undeclared or bad key is its own reject.

        ``received`` (epoch seconds) becomes the observedAt of a measurement without one.
        """
        if type(device_id) is not str:
            raise Unmappable("deviceId must be a string")
        device = self.devices.lookup(device_id)
        if device is None:
            raise Unmappable(f"unknown device {device_id!r}", Refusal.UNKNOWN_DEVICE,
                             device_id[:_MAX_DEVICE_ID])
        raw_time = values.get("observedAt")
        try:
            moment, observed = receive_time(received) if raw_time is None else observed_time(
                raw_time, times)
        except Unmappable as exc:
            raise Unmappable(str(exc), device_id=device_id) from None
        entity_id = device.entity_id
        mapping = device.attributes
        found = False
        for key, value in values.items():
            attr = mapping.get(key)
            if attr is None:
                if key not in RESERVED_KEYS:
                    self._reject(batch, origin, Unmappable(
                        f"attribute {key!r} is not declared by device {device_id}",
                        Refusal.UNDECLARED_ATTRIBUTE, device_id))
                continue
            try:
                instance, number = make_instance(key, attr, value, observed)
            except Unmappable as exc:
                self._reject(batch, origin, Unmappable(f"device {device_id}: {exc}",
                                                       device_id=device_id))
                continue
            batch.readings.append(HistoryRow(entity_id, attr.name, "", moment, instance, number))
            batch.origins.append(origin)
            found = True
        if not found and not any(key not in RESERVED_KEYS for key in values):
            raise Unmappable(f"the measurement of device {device_id} has no values",
                             device_id=device_id)

    def single_value(self, batch: MappedBatch, origin: Origin, device_id: str, key: str,
                     value: Any, received: float) -> None:
        device = self.devices.lookup(device_id)
        if device is None:
            raise Unmappable(f"unknown device {device_id!r}", Refusal.UNKNOWN_DEVICE,
                             device_id[:_MAX_DEVICE_ID])
        attr = device.attributes.get(key)
        if attr is None:
            raise Unmappable(f"attribute {key!r} is not declared by device {device_id}",
                             Refusal.UNDECLARED_ATTRIBUTE, device_id)
        moment, observed = receive_time(received)
        try:
            instance, number = make_instance(key, attr, value, observed)
        except Unmappable as exc:
            raise Unmappable(f"device {device_id}: {exc}", device_id=device_id) from None
        batch.readings.append(HistoryRow(device.entity_id, attr.name, "", moment, instance,
                                         number))
        batch.origins.append(origin)

    # --- NGSI-LD fragments: {"id", "type"?, attr: {..., "observedAt"}} -------------------

    def fragment(self, batch: MappedBatch, origin: Origin, payload: dict[str, Any],
                 context: Any, received: float) -> None:
        """Every attribute instance of an entity fragment is one reading."""
        try:
            terms = self.contexts.resolve(payload.get("@context", context))
            entity = parse_entity(payload, terms, need_type=False)
        except UrbanhubError as exc:
            raise Unmappable(exc.detail) from None
        if not entity["attrs"]:
            raise Unmappable(f"the fragment for {entity['id']} has no attributes")
        moment, observed = receive_time(received)
        for name, instances in entity["attrs"].items():
            for dataset_id, instance in instances.items():
                instance.setdefault("observedAt", observed)
                batch.readings.append(HistoryRow(
                    entity["id"], name, dataset_id, instance_time(instance, moment),
                    instance, numeric_value(instance)))
                batch.origins.append(origin)

    # --- the HTTP batch ------------------------------------------------------------------

    def http_items(self, items: Sequence[Any], context: Any, received: datetime) -> MappedBatch:
        """Map a POSTed array: measurements (with deviceId) and NGSI-LD fragments (with id).

        Elements without observedAt get the receive time plus their index in microseconds,
        so two readings of one attribute in a batch stay two readings, in order.
        """
        batch = MappedBatch()
        start = received.timestamp()
        times: dict[str, tuple[datetime, str]] = {}
        for index, item in enumerate(items):
            origin = Origin("http", item, None, index)
            now = start + index * 1e-6
            try:
                if type(item) is not dict:
                    raise Unmappable("an element must be a JSON object")
                if "deviceId" in item:
                    self.measurement(batch, origin, item["deviceId"], item, now, times)
                elif "id" in item:
                    self.fragment(batch, origin, item, context, now)
                else:
                    raise Unmappable("an element needs a deviceId (measurement) or an id "
                                     "(NGSI-LD entity fragment)")
            except Unmappable as exc:
                self._reject(batch, origin, exc)
        return batch

    # --- MQTT messages ---------------------------------------------------------------------

    def mqtt_messages(self, messages: Iterable[Message], root: str) -> MappedBatch:
        """Map a batch of MQTT messages by topic under ``root`` (scheme in docs/ingest.md)."""
        batch = MappedBatch()
        times: dict[str, tuple[datetime, str]] = {}
        routes = self._routes.setdefault(root, {})
        loads = orjson.loads
        for topic, payload, epoch_s in messages:
            route = routes.get(topic)
            if route is None:
                if len(routes) >= _MAX_ROUTES:
                    routes.clear()
                route = routes[topic] = _route(topic, root)
            origin = Origin("mqtt", payload, route.topic, None)
            try:
                if route.error is not None:
                    raise Unmappable(route.error)
                try:
                    value = loads(payload)
                except orjson.JSONDecodeError:
                    raise Unmappable("the payload is not JSON",
                                     device_id=route.device_id) from None
                device_id = route.device_id
                if device_id is None:  # the NGSI-LD entities topic
                    fragments = value if type(value) is list else [value]
                    for fragment in fragments:
                        if type(fragment) is not dict:
                            raise Unmappable("an NGSI-LD fragment must be a JSON object")
                        self.fragment(batch, origin, fragment, None, epoch_s)
                elif route.key is not None:
                    self.single_value(batch, origin, device_id, route.key, value, epoch_s)
                elif type(value) is dict:
                    if value.get("deviceId", device_id) != device_id:
                        raise Unmappable("deviceId in the payload differs from the topic",
                                         device_id=device_id)
                    self.measurement(batch, origin, device_id, value, epoch_s, times)
                else:
                    raise Unmappable("a measurement must be a JSON object", device_id=device_id)
            except Unmappable as exc:
                self._reject(batch, origin, exc)
        return batch

    @staticmethod
    def _reject(batch: MappedBatch, origin: Origin, why: Unmappable) -> None:
        batch.rejected.append(Rejected(str(why), origin.raw(), origin.source, origin.topic,
                                       origin.index, why.code, why.device_id))
