"""The demo city: geometry, daily patterns, faults, device payloads and their transport."""

from __future__ import annotations

import itertools
import statistics
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient
from shapely.geometry import Point
from shapely.ops import unary_union

from urbanhub.hub.runtime import Hub
from urbanhub.ingest.devices import parse_device
from urbanhub.model.devices import RiskTier
from urbanhub.ngsild.context import (
    DEFAULT_VOCAB,
    SHIPPED_CONTEXTS,
    ContextLoader,
    ContextResolver,
)
from urbanhub.ngsild.entity import parse_entity
from urbanhub.sdm.validate import validate_entity
from urbanhub.sim.catalog import DEPARTMENTS, SENSOR_OWNERS
from urbanhub.sim.city import CITY_TZ, KINDS, City, Sensor, build_city, districts
from urbanhub.sim.demo import operator_keys
from urbanhub.sim.devices import (
    BACKFILL_STEP,
    CityFeeder,
    DemoTransportError,
    SendReport,
    backfill_times,
    device_payload,
    messages_at,
    reading_message,
)
from urbanhub.sim.patterns import (
    NO_FAULTS,
    FaultConfig,
    clean_values,
    is_silent,
    last_collection,
    observe,
    traffic_factor,
)

CITY = build_city(seed=7, sensors=48)
WEDNESDAY = datetime(2024, 5, 15, tzinfo=CITY_TZ)
SATURDAY = datetime(2024, 5, 18, tzinfo=CITY_TZ)
RESOLVER = ContextResolver(ContextLoader(fetch=lambda url, _t: pytest.fail(f"fetched {url}")))


def of_kind(key: str, city: City = CITY) -> list[Sensor]:
    return [s for s in city.sensors if s.kind.key == key]


def at(day: datetime, hour: float) -> datetime:
    return day + timedelta(hours=hour)


# --- the city -----------------------------------------------------------------------------

def test_districts_tile_the_city_and_differ() -> None:
    parts = districts()
    assert len(parts) == 8
    union = unary_union([d.polygon for d in parts])
    west, south, east, north = union.bounds
    assert union.area == pytest.approx((east - west) * (north - south), rel=1e-9)
    assert sum(d.polygon.area for d in parts) == pytest.approx(union.area, rel=1e-9)
    for first in parts:
        assert first.polygon.is_valid
        for second in parts:
            if first.index < second.index:
                assert first.polygon.intersection(second.polygon).area == pytest.approx(0.0)
    populations = [d.population for d in parts]
    assert len(set(populations)) == 8
    assert max(populations) / min(populations) > 5  # enough spread for inequality measures
    assert len({d.entity_id for d in parts}) == 8


def test_sensors_cover_every_type_and_stand_in_their_district() -> None:
    assert {s.kind.entity_type for s in CITY.sensors} == {k.entity_type for k in KINDS}
    assert len({s.device_id for s in CITY.sensors}) == 48
    assert {s.district.slug for s in CITY.sensors} == {d.slug for d in districts()}
    for sensor in CITY.sensors:
        assert sensor.district.polygon.contains(Point(sensor.lon, sensor.lat))


def test_city_needs_one_sensor_per_type() -> None:
    with pytest.raises(ValueError, match="at least 6"):
        build_city(1, sensors=5)


def test_same_seed_same_city_other_seed_other_places() -> None:
    again = build_city(seed=7, sensors=48)
    other = build_city(seed=8, sensors=48)
    assert again == CITY
    assert [(s.lon, s.lat) for s in other.sensors] != [(s.lon, s.lat) for s in CITY.sensors]
    assert other.districts == CITY.districts  # the map stays; only the sensors move


# --- daily patterns -----------------------------------------------------------------------

def test_rush_hours_carry_more_traffic_than_the_night() -> None:
    for sensor in of_kind("traffic"):
        night = clean_values(CITY, sensor, at(WEDNESDAY, 3))["intensity"]
        morning = clean_values(CITY, sensor, at(WEDNESDAY, 8))["intensity"]
        evening = clean_values(CITY, sensor, at(WEDNESDAY, 17.5))["intensity"]
        noon = clean_values(CITY, sensor, at(WEDNESDAY, 12.5))["intensity"]
        assert morning > 4 * night
        assert evening > 4 * night
        assert morning > noon and evening > noon
        slow = clean_values(CITY, sensor, at(WEDNESDAY, 8))["averageVehicleSpeed"]
        free = clean_values(CITY, sensor, at(WEDNESDAY, 3))["averageVehicleSpeed"]
        assert slow < free


def test_weekends_carry_less_traffic_than_weekdays() -> None:
    def daily(day: datetime) -> float:
        return sum(clean_values(CITY, s, at(day, h / 4))["intensity"]
                   for s in of_kind("traffic") for h in range(96))

    assert daily(SATURDAY) < 0.85 * daily(WEDNESDAY)
    assert traffic_factor(at(SATURDAY, 8)) < 0.5 * traffic_factor(at(WEDNESDAY, 8))


def test_no2_and_noise_follow_traffic() -> None:
    times = [at(WEDNESDAY, h / 2) for h in range(48)]
    traffic = [traffic_factor(t) for t in times]
    for sensor in of_kind("aq")[:4]:
        no2 = [clean_values(CITY, sensor, t)["no2"] for t in times]
        assert statistics.correlation(traffic, no2) > 0.7
    for sensor in of_kind("noise")[:4]:
        laeq = [clean_values(CITY, sensor, t)["LAeq"] for t in times]
        assert statistics.correlation(traffic, laeq) > 0.7
        assert all(v["LAmax"] >= v["LAeq"] for v in (clean_values(CITY, sensor, t)
                                                    for t in times))


@pytest.mark.parametrize("day", [datetime(2024, 1, 10, tzinfo=CITY_TZ), WEDNESDAY,
                                 datetime(2024, 6, 21, tzinfo=CITY_TZ)])
def test_streetlights_burn_at_night_and_not_at_noon(day: datetime) -> None:
    for sensor in of_kind("light"):
        midnight = clean_values(CITY, sensor, at(day, 0.25))
        late = clean_values(CITY, sensor, at(day, 23))
        noon = clean_values(CITY, sensor, at(day, 12.5))
        assert midnight["powerState"] == "on" and midnight["illuminanceLevel"] > 0
        assert late["powerState"] == "on" and late["illuminanceLevel"] == 1.0
        assert midnight["illuminanceLevel"] <= late["illuminanceLevel"]  # dimmed after 00:30
        assert noon == {"powerState": "off", "illuminanceLevel": 0.0,
                        "powerConsumption": pytest.approx(2.0)}
        assert late["powerConsumption"] > 10 * noon["powerConsumption"]


def test_winter_nights_are_longer_than_summer_nights() -> None:
    sensor = of_kind("light")[0]

    def hours_on(day: datetime) -> int:
        return sum(clean_values(CITY, sensor, at(day, m / 6))["powerState"] == "on"
                   for m in range(144))

    assert hours_on(datetime(2024, 12, 21, tzinfo=CITY_TZ)) > \
        hours_on(datetime(2024, 6, 21, tzinfo=CITY_TZ)) + 6 * 6


def test_waste_fills_up_and_is_emptied_on_collection_days() -> None:
    for sensor in of_kind("waste"):
        first, second = sensor.district.collection_days
        day = WEDNESDAY + timedelta(days=(second - WEDNESDAY.weekday()) % 7)
        before = clean_values(CITY, sensor, at(day, 5.9))["fillingLevel"]
        after = clean_values(CITY, sensor, at(day, 6.1))["fillingLevel"]
        assert after < 0.1 < before
        assert last_collection(sensor, at(day, 6.1)) == at(day, 6)
        assert last_collection(sensor, at(day, 5.9)).weekday() == first
        levels = [clean_values(CITY, sensor, at(day, 6 + h))["fillingLevel"] for h in range(1, 60)]
        assert levels[-1] > levels[0] + 0.3
        assert all(0.0 <= v <= 1.0 for v in levels)


def test_parking_follows_land_use() -> None:
    def share_taken(sensor: Sensor, hour: float) -> float:
        days = [WEDNESDAY - timedelta(days=7 * w) for w in range(30)]
        return statistics.mean(clean_values(CITY, sensor, at(d, hour))["status"] == "occupied"
                               for d in days)

    homes = [s for s in of_kind("parking") if s.district.land_use == "residential"]
    shops = [s for s in of_kind("parking") if s.district.land_use in ("centre", "mixed")]
    assert homes and shops
    assert statistics.mean(share_taken(s, 2) for s in homes) > \
        statistics.mean(share_taken(s, 2) for s in shops)
    assert statistics.mean(share_taken(s, 13) for s in shops) > \
        statistics.mean(share_taken(s, 13) for s in homes)


def test_values_stay_inside_their_smart_data_model() -> None:
    """Every kind's readings plus its static attributes form a schema-valid SDM entity."""
    for sensor in CITY.sensors[:12]:
        for hour in (3, 8, 13, 21):
            observed = at(WEDNESDAY, hour)
            payload = device_payload(sensor)
            body: dict[str, Any] = {"id": sensor.entity_id, "type": sensor.kind.entity_type,
                                    **payload["staticAttributes"]}
            for attribute in sensor.kind.attributes:
                body[attribute.name] = {"type": "Property",
                                        "value": clean_values(CITY, sensor, observed)[
                                            attribute.name],
                                        "observedAt": observed.astimezone(UTC).isoformat()}
            validate_entity(parse_entity(body, RESOLVER.resolve(sensor.kind.context)))


# --- determinism, faults and gaps ---------------------------------------------------------

def test_observations_are_a_pure_function_of_seed_and_time() -> None:
    faults = FaultConfig(gap_rate=0.1, stuck_rate=0.05, spike_rate=0.05)
    again = build_city(seed=7, sensors=48)
    other = build_city(seed=8, sensors=48)
    times = [at(WEDNESDAY, h / 3) for h in range(72)]
    first = {(t, s.device_id): observe(CITY, s, t, faults) for t in times for s in CITY.sensors}
    backwards = {(t, s.device_id): observe(again, s, t, faults)  # another order, same answers
                 for t in reversed(times) for s in reversed(again.sensors)}
    assert {k: o and (o.values, o.fault) for k, o in first.items()} == \
        {k: o and (o.values, o.fault) for k, o in backwards.items()}
    third = {(t, s.device_id): observe(other, s, t, faults) for t in times for s in other.sensors}
    assert {k: o and o.values for k, o in first.items()} != \
        {k: o and o.values for k, o in third.items()}


def test_gaps_stuck_values_and_spikes_occur_at_the_configured_rates() -> None:
    faults = FaultConfig(gap_rate=0.06, stuck_rate=0.03, spike_rate=0.02)
    hours = [at(WEDNESDAY, h + 0.5) for h in range(24 * 30)]
    silent = stuck = spiked = spikeable = readings = 0
    for sensor in CITY.sensors:
        for moment in hours:
            observation = observe(CITY, sensor, moment, faults)
            if observation is None:
                silent += 1
                continue
            readings += 1
            stuck += observation.fault == "stuck"
            if any(a.spikeable for a in sensor.kind.attributes) and observation.fault != "stuck":
                spikeable += 1
                spiked += observation.fault == "spike"
    total = len(CITY.sensors) * len(hours)
    assert silent / total == pytest.approx(0.06, abs=0.015)
    assert stuck / readings == pytest.approx(0.03, abs=0.006)
    assert spiked / spikeable == pytest.approx(0.02, abs=0.006)


def test_gaps_last_whole_hours_and_no_faults_means_none() -> None:
    faults = FaultConfig(gap_rate=0.2, stuck_rate=0.0, spike_rate=0.0, max_gap_hours=3)
    sensor = CITY.sensors[0]
    for hour in range(24 * 14):
        start = at(WEDNESDAY, hour)
        states = {is_silent(CITY, sensor, start + timedelta(minutes=m), faults)
                  for m in (0, 20, 59)}
        assert len(states) == 1  # silent for the whole hour or not at all
    for moment in (at(WEDNESDAY, h / 2) for h in range(96)):
        for each in CITY.sensors:
            observation = observe(CITY, each, moment, NO_FAULTS)
            assert observation is not None and observation.fault is None
            assert observation.values == clean_values(CITY, each, moment)


def test_a_stuck_sensor_repeats_the_same_values_all_hour() -> None:
    faults = FaultConfig(gap_rate=0.0, stuck_rate=1.0, spike_rate=0.0)
    sensor = of_kind("aq")[0]
    observations = [observe(CITY, sensor, at(WEDNESDAY, 8 + m / 60), faults)
                    for m in range(0, 60, 5)]
    assert all(o is not None and o.fault == "stuck" for o in observations)
    values = [o.values for o in observations if o is not None]
    assert len({orjson.dumps(v) for v in values}) == 1
    assert clean_values(CITY, sensor, at(WEDNESDAY, 8.5)) != values[6]


def test_a_spike_multiplies_one_value() -> None:
    faults = FaultConfig(gap_rate=0.0, stuck_rate=0.0, spike_rate=1.0)
    sensor = of_kind("aq")[0]
    moment = at(WEDNESDAY, 10)
    observation = observe(CITY, sensor, moment, faults)
    assert observation is not None and observation.fault == "spike"
    clean = clean_values(CITY, sensor, moment)
    changed = [k for k in clean if clean[k] != observation.values[k]]
    assert len(changed) == 1 and changed[0] in ("pm25", "pm10", "no2")
    assert observation.values[changed[0]] > 3 * clean[changed[0]]


# --- device payloads ----------------------------------------------------------------------

def test_device_payloads_use_shipped_sdm_contexts_and_names() -> None:
    for sensor in CITY.sensors[:6]:
        payload = device_payload(sensor)
        assert payload["@context"] in SHIPPED_CONTEXTS
        assert payload["transport"] == "HTTP"
        terms = RESOLVER.resolve(payload["@context"])
        assert not terms.expand(payload["entityType"]).startswith(DEFAULT_VOCAB)
        for attribute in payload["attributes"]:
            assert not terms.expand(attribute["name"]).startswith(DEFAULT_VOCAB), attribute
        provisioning = parse_device(payload, terms)  # the hub's own provisioning check
        assert provisioning.entity["id"] == sensor.entity_id
        assert provisioning.owner == SENSOR_OWNERS[sensor.kind.key]
        # No demo sensor collects personal data: none waits for the privacy board.
        assert provisioning.derived_tier is not RiskTier.HIGH


def test_district_entities_are_valid_ngsi_ld() -> None:
    for district in CITY.districts:
        body = district.entity()
        entity = parse_entity(body, RESOLVER.resolve(body["@context"]))
        assert entity["id"] == district.entity_id
        assert body["population"]["value"] == district.population


def test_reading_messages_carry_device_keys() -> None:
    sensor = of_kind("traffic")[0]
    moment = datetime(2024, 5, 15, 7, 0, 3, tzinfo=UTC)
    observation = observe(CITY, sensor, moment)
    assert observation is not None
    message = reading_message(observation)
    assert message["deviceId"] == sensor.device_id
    assert message["observedAt"] == "2024-05-15T07:00:03.000Z"
    assert set(message) == {"deviceId", "observedAt", "n", "v", "occ"}
    assert message["n"] == observation.values["intensity"]


def test_backfill_times_are_aligned_so_reruns_replay_the_same_instants() -> None:
    end = datetime(2024, 5, 15, 12, 7, 31, tzinfo=UTC)
    times = backfill_times(end, 2)
    assert times[0] == datetime(2024, 5, 15, 10, 10, tzinfo=UTC)
    assert times[-1] == datetime(2024, 5, 15, 12, 5, tzinfo=UTC)
    assert all(b - a == BACKFILL_STEP for a, b in itertools.pairwise(times))
    assert backfill_times(end + timedelta(seconds=20), 2) == times
    assert backfill_times(end, 0) == []


def test_silent_sensors_send_nothing() -> None:
    faults = FaultConfig(gap_rate=1.0, stuck_rate=0.0, spike_rate=0.0, max_gap_hours=1)
    assert list(messages_at(CITY, [at(WEDNESDAY, 9)], faults)) == []
    assert len(list(messages_at(CITY, [at(WEDNESDAY, 9)], NO_FAULTS))) == 48


# --- transport ----------------------------------------------------------------------------

OPERATOR_KEYS = {department: f"uh_{department}" for department in DEPARTMENTS}


class FakeHub:
    """Answers like the hub's ingest API and records what it was sent; checks that devices
    are provisioned by their department's operator and report with their own key."""

    def __init__(self, existing: set[str] | None = None, refuse: str | None = None) -> None:
        self.existing = existing or set()
        self.refuse = refuse
        self.batches: list[list[dict[str, Any]]] = []
        self.rotated: list[str] = []
        self.keys: dict[str, str] = {}  # device key -> device id

    def _issue(self, device_id: str, status: int) -> httpx.Response:
        key = f"uhd_{device_id}_{len(self.keys)}"
        self.keys[key] = device_id
        return httpx.Response(status, json={"deviceId": device_id, "deviceKey": key})

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/rotate-credential"):
            device_id = path.split("/")[-2]
            self.rotated.append(device_id)
            return self._issue(device_id, 200)
        body = orjson.loads(request.content)
        if path == "/ingest/v1/readings":
            sender = self.keys[request.headers["X-Device-Key"]]
            assert {message["deviceId"] for message in body} == {sender}
            self.batches.append(body)
            return httpx.Response(200, json={"accepted": 2 * len(body), "stored": len(body),
                                             "rejected": [{"reason": "test"}]})
        key = body.get("deviceId") or body.get("id")
        if key == self.refuse:
            return httpx.Response(400, json={"detail": f"{key} is not welcome"})
        owner = body.get("owner", "planning")
        assert request.headers["Authorization"] == f"ApiKey {OPERATOR_KEYS[owner]}"
        if key in self.existing:
            return httpx.Response(409, json={"detail": "exists"})
        self.existing.add(key)
        return self._issue(key, 201) if "deviceId" in body else httpx.Response(201)


def test_provisioning_counts_created_and_reused() -> None:
    city = build_city(3, sensors=12)
    fake = FakeHub(existing={city.sensors[0].device_id, city.districts[0].entity_id})
    with httpx.Client(transport=httpx.MockTransport(fake), base_url="http://hub") as client:
        first = CityFeeder(client, city, NO_FAULTS, OPERATOR_KEYS)
        report = first.provision()
        assert (report.created, report.existing) == (8 + 12 - 2, 2)
        assert fake.rotated == [city.sensors[0].device_id]  # its old key cannot be shown
        assert set(first.device_keys) == {s.device_id for s in city.sensors}
        again = CityFeeder(client, city, NO_FAULTS, OPERATOR_KEYS).provision()
        assert (again.created, again.existing) == (0, 20)
        assert len(fake.rotated) == 1 + 12


def test_provisioning_stops_on_a_refusal_with_the_hubs_reason() -> None:
    city = build_city(3, sensors=6)
    fake = FakeHub(refuse=city.sensors[2].device_id)
    with httpx.Client(transport=httpx.MockTransport(fake), base_url="http://hub") as client, \
            pytest.raises(DemoTransportError, match="is not welcome"):
        CityFeeder(client, city, NO_FAULTS, OPERATOR_KEYS).provision()


def test_backfill_sends_batches_and_sums_the_answers() -> None:
    city = build_city(3, sensors=12)
    fake = FakeHub()
    progress: list[tuple[int, int]] = []
    with httpx.Client(transport=httpx.MockTransport(fake), base_url="http://hub") as client:
        feeder = CityFeeder(client, city, NO_FAULTS, OPERATOR_KEYS, batch_size=5)
        feeder.provision()
        report = feeder.backfill(datetime(2024, 5, 15, 12, tzinfo=UTC), 1,
                                 on_progress=lambda d, t: progress.append((d, t)))
    sent = [m for batch in fake.batches for m in batch]
    assert len(sent) == 12 * 12 == report.messages
    assert all(len(batch) <= 5 for batch in fake.batches)  # one device's readings each
    assert len(fake.batches) == 12 * 3
    assert (report.accepted, report.stored, report.rejected) == (2 * 144, 144, len(fake.batches))
    assert progress[-1] == (12 * 3, 12 * 3)
    assert len({(m["deviceId"], m["observedAt"]) for m in sent}) == 144


def test_a_failed_batch_raises() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"detail": "database down"})

    with httpx.Client(transport=httpx.MockTransport(broken), base_url="http://hub") as client, \
            pytest.raises(DemoTransportError, match="database down"):
        feeder = CityFeeder(client, CITY, NO_FAULTS, OPERATOR_KEYS)
        feeder.device_keys = {s.device_id: "uhd_x" for s in CITY.sensors}
        feeder.tick(at(WEDNESDAY, 9), SendReport())


def test_readings_of_an_unprovisioned_device_are_not_sent() -> None:
    with httpx.Client(transport=httpx.MockTransport(FakeHub()), base_url="http://hub") as client, \
            pytest.raises(DemoTransportError, match="has no key: provision it first"):
        CityFeeder(client, CITY, NO_FAULTS, OPERATOR_KEYS).tick(at(WEDNESDAY, 9), SendReport())


# --- against the real hub -----------------------------------------------------------------

def test_the_city_streams_into_a_real_hub(public_client: TestClient, client: TestClient,
                                          hub: Hub) -> None:
    """Operators provision, devices backfill with their own keys through the ingest API; a
    rerun (new operator keys, rotated device keys) reuses and stores nothing. A city
    operator (``client``) then reads what arrived."""
    city = build_city(5, sensors=12)
    feeder = CityFeeder(public_client, city, NO_FAULTS, operator_keys(hub))
    first = feeder.provision()
    assert (first.created, first.existing) == (8 + 12, 0)
    end = datetime.now(UTC)
    report = feeder.backfill(end, 1)
    attributes = sum(len(s.kind.attributes) for s in city.sensors)
    assert report.rejected == 0, report.reasons
    assert report.stored == report.accepted == attributes * 12
    again = CityFeeder(public_client, city, NO_FAULTS, operator_keys(hub))
    assert again.provision().existing == 20
    assert set(again.device_keys.values()).isdisjoint(feeder.device_keys.values())
    replay = again.backfill(end, 1)
    assert (replay.accepted, replay.stored) == (report.accepted, 0)
    for kind in KINDS:
        listed = client.get("/ngsi-ld/v1/entities", params={"type": kind.entity_type},
                            headers={"Link": f'<{kind.context}>; rel="http://www.w3.org/ns/'
                                             'json-ld#context"; type="application/ld+json"'})
        assert listed.status_code == 200 and len(listed.json()) == 2, kind.entity_type
