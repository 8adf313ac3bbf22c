"""The demo city as devices: provisioning payloads, reading messages and their HTTP transport.

The simulator talks to the hub exactly as a real deployment does: each department's
operator provisions its sensors through the ingest API with an API key, and each sensor
reports with its own device key. The demo therefore exercises the same gate, validation
and storage path as production traffic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson

from urbanhub.ngsild.timeutil import format_datetime
from urbanhub.sim.catalog import DISTRICT_OWNER, SENSOR_OWNERS
from urbanhub.sim.city import (
    AIR_QUALITY,
    CITY_SLUG,
    NOISE,
    PARKING,
    STREETLIGHT,
    TRAFFIC,
    WASTE,
    City,
    Sensor,
)
from urbanhub.sim.patterns import FaultConfig, Observation, observe

DEVICES_PATH = "/ingest/v1/devices"
DEVICE_KEY_HEADER = "X-Device-Key"
READINGS_PATH = "/ingest/v1/readings"
ENTITIES_PATH = "/ngsi-ld/v1/entities"
#: Spacing of backfilled readings; aligned to the clock so reruns replay identical times.
BACKFILL_STEP = timedelta(minutes=5)


class DemoTransportError(RuntimeError):
    """The hub refused or failed a request the demo cannot do without."""


def _prop(value: Any) -> dict[str, Any]:
    return {"type": "Property", "value": value}


def static_attributes(sensor: Sensor) -> dict[str, Any]:
    """Fixed attributes of a device's entity: where it stands and what it is.

    Observation times are not repeated here (``dateObserved`` and friends): in NGSI-LD each
    measured attribute carries its own ``observedAt``.
    """
    attrs: dict[str, Any] = {
        "location": {"type": "GeoProperty",
                     "value": {"type": "Point", "coordinates": [sensor.lon, sensor.lat]}},
        "name": _prop(sensor.device_id),
        "areaServed": _prop(sensor.district.name),
    }
    key = sensor.kind.key
    if key == AIR_QUALITY.key:
        attrs["typeofLocation"] = _prop("outdoor")
    elif key == NOISE.key:
        attrs["sonometerClass"] = _prop("1")
    elif key == TRAFFIC.key:
        attrs["laneId"] = _prop(1)
        attrs["laneDirection"] = _prop("forward")
    elif key == PARKING.key:
        attrs["category"] = _prop(["onStreet"])
        attrs["refParkingSite"] = {
            "type": "Relationship",
            "object": f"urn:ngsi-ld:ParkingSite:{CITY_SLUG}-{sensor.district.slug}"}
    elif key == WASTE.key:
        attrs["storedWasteOrigin"] = _prop("household")
        attrs["storedWasteKind"] = _prop("other")
    elif key == STREETLIGHT.key:
        attrs["status"] = _prop("ok")
        attrs["locationCategory"] = _prop("road")
    return attrs


def device_payload(sensor: Sensor) -> dict[str, Any]:
    """The provisioning request for one device (``POST /ingest/v1/devices``)."""
    return {
        "deviceId": sensor.device_id,
        "entityId": sensor.entity_id,
        "entityType": sensor.kind.entity_type,
        "owner": SENSOR_OWNERS[sensor.kind.key],
        "@context": sensor.kind.context,
        "transport": "HTTP",
        "attributes": [
            {"object_id": a.object_id, "name": a.name, "type": "Property",
             **({"unitCode": a.unit_code} if a.unit_code else {})}
            for a in sensor.kind.attributes],
        "staticAttributes": static_attributes(sensor),
    }


def reading_message(observation: Observation) -> dict[str, Any]:
    """A device message as it goes on the wire: short keys, one observation time."""
    message: dict[str, Any] = {"deviceId": observation.sensor.device_id,
                               "observedAt": format_datetime(observation.observed_at)}
    for attribute in observation.sensor.kind.attributes:
        message[attribute.object_id] = observation.values[attribute.name]
    return message


def backfill_times(end: datetime, hours: float,
                   step: timedelta = BACKFILL_STEP) -> list[datetime]:
    """Times from ``hours`` before ``end`` up to ``end``, on multiples of ``step``."""
    seconds = int(step.total_seconds())
    last = int(end.timestamp()) // seconds * seconds
    first = int((end - timedelta(hours=hours)).timestamp()) // seconds * seconds + seconds
    return [datetime.fromtimestamp(t, end.tzinfo) for t in range(first, last + 1, seconds)]


def messages_at(city: City, moments: Iterable[datetime],
                faults: FaultConfig) -> Iterator[dict[str, Any]]:
    """Every reading the city's sensors send at these moments (silent sensors send none)."""
    for moment in moments:
        for sensor in city.sensors:
            observation = observe(city, sensor, moment, faults)
            if observation is not None:
                yield reading_message(observation)


@dataclass
class SendReport:
    """What the hub answered for the readings sent so far."""

    messages: int = 0
    accepted: int = 0
    stored: int = 0
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)

    def add(self, messages: int, answer: dict[str, Any]) -> None:
        self.messages += messages
        self.accepted += int(answer.get("accepted", 0))
        self.stored += int(answer.get("stored", 0))
        refused = answer.get("rejected") or []
        self.rejected += len(refused)
        for item in refused[:5]:
            if len(self.reasons) < 20:
                self.reasons.append(str(item.get("reason", item) if isinstance(item, dict)
                                        else item))


@dataclass
class ProvisionReport:
    created: int = 0
    existing: int = 0


class CityFeeder:
    """Provisions the city on a hub and sends its readings over HTTP.

    ``client`` is any ``httpx.Client`` pointed at the hub (a FastAPI TestClient works too);
    ``operator_keys`` maps each department to an API key of its operator.
    """

    def __init__(self, client: httpx.Client, city: City, faults: FaultConfig,
                 operator_keys: Mapping[str, str], batch_size: int = 500) -> None:
        self.client = client
        self.city = city
        self.faults = faults
        self.operator_keys = operator_keys
        self.batch_size = batch_size
        self.device_keys: dict[str, str] = {}

    def provision(self) -> ProvisionReport:
        """Create districts and devices; what already exists (a rerun) is reused, and a
        reused device gets a new key (the hub cannot show the old one again)."""
        report = ProvisionReport()
        for district in self.city.districts:
            response = self.client.post(ENTITIES_PATH, content=orjson.dumps(district.entity()),
                                        headers={"Content-Type": "application/ld+json",
                                                 **self._operator(DISTRICT_OWNER)})
            self._count(report, response, f"district {district.entity_id}")
        for sensor in self.city.sensors:
            operator = self._operator(SENSOR_OWNERS[sensor.kind.key])
            response = self.client.post(DEVICES_PATH, json=device_payload(sensor),
                                        headers=operator)
            self._count(report, response, f"device {sensor.device_id}")
            if response.status_code == 409:
                response = self.client.post(
                    f"{DEVICES_PATH}/{sensor.device_id}/rotate-credential", headers=operator)
                self._check(response, f"rotating the key of device {sensor.device_id}")
            self.device_keys[sensor.device_id] = response.json()["deviceKey"]
        return report

    def _operator(self, department: str) -> dict[str, str]:
        return {"Authorization": f"ApiKey {self.operator_keys[department]}"}

    @classmethod
    def _count(cls, report: ProvisionReport, response: httpx.Response, what: str) -> None:
        if response.status_code == 409:
            report.existing += 1
        else:
            cls._check(response, f"creating {what}")
            report.created += 1

    @staticmethod
    def _check(response: httpx.Response, what: str) -> None:
        if response.status_code not in (200, 201, 204):
            raise DemoTransportError(f"{what} failed: HTTP {response.status_code} "
                                     f"{_detail(response)}")

    def send(self, messages: Sequence[dict[str, Any]], report: SendReport) -> None:
        """Post readings, each device's with its own key in batches, and add the hub's
        answers to ``report``."""
        by_device: dict[str, list[dict[str, Any]]] = {}
        for message in messages:
            by_device.setdefault(message["deviceId"], []).append(message)
        for device_id, own in by_device.items():
            self._post(device_id, own, report)

    def _post(self, device_id: str, messages: Sequence[dict[str, Any]],
              report: SendReport) -> None:
        key = self.device_keys.get(device_id)
        if key is None:
            raise DemoTransportError(f"device {device_id} has no key: provision it first")
        for start in range(0, len(messages), self.batch_size):
            batch = messages[start:start + self.batch_size]
            response = self.client.post(READINGS_PATH, json=list(batch),
                                        headers={DEVICE_KEY_HEADER: key})
            if response.status_code >= 300:
                raise DemoTransportError(f"sending readings failed: HTTP {response.status_code} "
                                         f"{_detail(response)}")
            report.add(len(batch), response.json())

    def backfill(self, end: datetime, hours: float,
                 on_progress: Callable[[int, int], None] | None = None) -> SendReport:
        """Send the history of the last ``hours`` before ``end``, each sensor's in requests
        of up to ``batch_size`` readings; reports (done, total) sensor requests."""
        report = SendReport()
        times = backfill_times(end, hours)
        chunks = [times[start:start + self.batch_size]
                  for start in range(0, len(times), self.batch_size)]
        total = len(chunks) * len(self.city.sensors)
        done = 0
        for chunk in chunks:
            for sensor in self.city.sensors:
                messages = [reading_message(observation) for observation in (
                    observe(self.city, sensor, moment, self.faults) for moment in chunk)
                    if observation is not None]
                if messages:
                    self._post(sensor.device_id, messages, report)
                done += 1
                if on_progress is not None:
                    on_progress(done, total)
        return report

    def tick(self, moment: datetime, report: SendReport) -> None:
        """Send what every sensor measures now."""
        self.send(list(messages_at(self.city, [moment.replace(microsecond=0)], self.faults)),
                  report)


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("title") or body)[:300]
    return str(body)[:300]
