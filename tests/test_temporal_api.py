"""NGSI-LD temporal API over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from urbanhub.hub.runtime import Hub
from urbanhub.hub.temporal import Aggregation, TemporalQuery, TimeQuery
from urbanhub.model.caller import Caller
from urbanhub.store import history

T = "/ngsi-ld/v1/temporal/entities"
LD = {"Content-Type": "application/ld+json"}
ENV_CONTEXT = ("https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/"
               "master/context.jsonld")
ENV_LINK = {"Link": f'<{ENV_CONTEXT}>; rel="http://www.w3.org/ns/json-ld#context"; '
                    'type="application/ld+json"'}
S1 = "urn:ngsi-ld:Sensor:s1"
S2 = "urn:ngsi-ld:Sensor:s2"
DAY = datetime(2024, 3, 1, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def at(hour: int, minute: int = 0) -> str:
    return iso(DAY + timedelta(hours=hour, minutes=minute))


def reading(value: Any, when: str, **extra: Any) -> dict[str, Any]:
    return {"type": "Property", "value": value, "observedAt": when, **extra}


def temporal(entity_id: str = S1, **attrs: Any) -> dict[str, Any]:
    return {"id": entity_id, "type": "Sensor", **attrs, "@context": ENV_CONTEXT}


def post(client: TestClient, body: dict[str, Any]) -> Any:
    return client.post(T, json=body, headers=LD)


def values(client: TestClient, entity_id: str = S1, **params: Any) -> list[Any]:
    """pm25 values of an entity's temporal representation, in the order returned."""
    response = client.get(f"{T}/{entity_id}", params=params, headers=ENV_LINK)
    assert response.status_code == 200, response.text
    return [i["value"] for i in response.json().get("pm25", [])]


def four_hours(client: TestClient) -> None:
    body = temporal(pm25=[reading(v, at(h)) for v, h in ((10, 10), (11, 11), (12, 12), (13, 13))],
                    no2=[reading(40, at(10)), reading(41, at(12))])
    assert post(client, body).status_code == 201


def test_post_creates_entity_with_newest_state_and_replays_store_nothing(
        client: TestClient) -> None:
    body = temporal(pm25=[reading(3, at(12)), reading(1, at(10)), reading(2, at(11))])
    created = post(client, body)
    assert created.status_code == 201
    assert created.headers["location"] == f"{T}/{S1}"
    current = client.get(f"/ngsi-ld/v1/entities/{S1}", params={"options": "keyValues"},
                         headers=ENV_LINK).json()
    assert current["pm25"] == 3
    assert values(client) == [1, 2, 3]

    assert post(client, body).status_code == 204
    assert values(client) == [1, 2, 3]
    count = client.get(f"{T}/{S1}", headers=ENV_LINK,
                       params={"options": "aggregatedValues", "aggrMethods": "totalCount,sum"})
    assert count.json()["pm25"]["totalCount"][0][0] == 3
    assert count.json()["pm25"]["sum"][0][0] == 6

    older = post(client, temporal(pm25=[reading(0, at(9))]))
    assert older.status_code == 204
    newer = post(client, temporal(pm25=[reading(4, at(13))]))
    assert newer.status_code == 204
    assert values(client) == [0, 1, 2, 3, 4]
    current = client.get(f"/ngsi-ld/v1/entities/{S1}", params={"options": "keyValues"},
                         headers=ENV_LINK).json()
    assert current["pm25"] == 4


def test_entity_api_writes_are_history(client: TestClient) -> None:
    entity = {"id": S1, "type": "Sensor",
              "pm25": reading(5, at(8), unitCode="GQ"), "@context": ENV_CONTEXT}
    assert client.post("/ngsi-ld/v1/entities", json=entity, headers=LD).status_code == 201
    for hour, value in ((9, 6), (10, 7)):
        patched = client.patch(f"/ngsi-ld/v1/entities/{S1}/attrs",
                               json={"pm25": reading(value, at(hour), unitCode="GQ")},
                               headers=ENV_LINK)
        assert patched.status_code == 204
    appended = client.post(f"/ngsi-ld/v1/entities/{S1}/attrs",
                           json={"pm25": reading(8, at(11), unitCode="GQ")}, headers=ENV_LINK)
    assert appended.status_code == 204

    response = client.get(f"{T}/{S1}", headers=ENV_LINK)
    body = response.json()
    assert body["id"] == S1 and body["type"] == "Sensor"
    assert ENV_CONTEXT in response.headers["link"]
    instances = body["pm25"]
    assert [(i["value"], i["observedAt"], i["unitCode"]) for i in instances] == [
        (5, at(8), "GQ"), (6, at(9), "GQ"), (7, at(10), "GQ"), (8, at(11), "GQ")]
    ids = [i["instanceId"] for i in instances]
    assert len(set(ids)) == 4 and all(i.startswith("urn:ngsi-ld:") for i in ids)
    again = client.get(f"{T}/{S1}", headers=ENV_LINK).json()
    assert [i["instanceId"] for i in again["pm25"]] == ids
    assert "createdAt" not in instances[0]

    with_sys = client.get(f"{T}/{S1}", params={"options": "sysAttrs"}, headers=ENV_LINK).json()
    assert "createdAt" in with_sys and "modifiedAt" in with_sys["pm25"][0]


def test_timerel_last_n_and_attrs_select_exact_instances(client: TestClient) -> None:
    four_hours(client)
    assert values(client) == [10, 11, 12, 13]
    assert values(client, timerel="before", timeAt=at(12)) == [10, 11]
    assert values(client, timerel="after", timeAt=at(12)) == [12, 13]
    assert values(client, timerel="between", timeAt=at(11), endTimeAt=at(13)) == [11, 12]
    assert values(client, timerel="between", timeAt=at(10, 30), endTimeAt=at(11, 30)) == [11]
    assert values(client, lastN=2) == [12, 13]
    assert values(client, lastN=10) == [10, 11, 12, 13]
    assert values(client, lastN=1, timerel="before", timeAt=at(12)) == [11]

    both = client.get(f"{T}/{S1}", params={"lastN": 1}, headers=ENV_LINK).json()
    assert [i["value"] for i in both["no2"]] == [41]
    only = client.get(f"{T}/{S1}", params={"attrs": "no2"}, headers=ENV_LINK).json()
    assert "pm25" not in only and [i["value"] for i in only["no2"]] == [40, 41]
    after = client.get(f"{T}/{S1}", params={"attrs": "no2", "timerel": "after",
                                            "timeAt": at(13)}, headers=ENV_LINK).json()
    assert after == {"id": S1, "type": "Sensor"}


def test_temporal_values_per_attribute_type_and_dataset(client: TestClient) -> None:
    body = temporal(
        pm25=[reading(1.5, at(10)), reading(2.5, at(11)),
              reading(9, at(10), datasetId="urn:ngsi-ld:Dataset:b")],
        refDevice=[{"type": "Relationship", "object": "urn:ngsi-ld:Device:a",
                    "observedAt": at(10)},
                   {"type": "Relationship", "object": "urn:ngsi-ld:Device:b",
                    "observedAt": at(11)}])
    assert post(client, body).status_code == 201
    simple = client.get(f"{T}/{S1}", params={"options": "temporalValues"},
                        headers=ENV_LINK).json()
    assert simple["refDevice"] == {"type": "Relationship", "objects": [
        ["urn:ngsi-ld:Device:a", at(10)], ["urn:ngsi-ld:Device:b", at(11)]]}
    assert sorted(simple["pm25"], key=lambda g: g.get("datasetId", "")) == [
        {"type": "Property", "values": [[1.5, at(10)], [2.5, at(11)]]},
        {"type": "Property", "datasetId": "urn:ngsi-ld:Dataset:b", "values": [[9, at(10)]]}]
    via_format = client.get(f"{T}/{S1}", params={"format": "temporalValues"},
                            headers=ENV_LINK).json()
    assert via_format == simple


def test_context_handling_matches_entity_routes(client: TestClient) -> None:
    four_hours(client)
    plain = client.get(f"{T}/{S1}").json()
    assert plain["type"] == "Sensor"  # default vocabulary: the same in every context
    assert "https://smartdatamodels.org/dataModel.Environment/pm25" in plain
    ld = client.get(f"{T}/{S1}", headers={**ENV_LINK, "Accept": "application/ld+json"})
    assert ld.headers["content-type"] == "application/ld+json"
    assert ld.json()["@context"] == ENV_CONTEXT and "pm25" in ld.json()
    assert client.get(f"{T}/{S1}", headers={"Accept": "text/csv"}).status_code == 406


def test_query_selects_entities_and_counts(client: TestClient) -> None:
    four_hours(client)
    other = temporal(S2, pm25=[reading(20, at(10)), reading(21, at(11))])
    assert post(client, other).status_code == 201
    assert client.post(T, json={"id": "urn:ngsi-ld:Street:x", "type": "Street",
                                "width": [reading(7, at(10))]}).status_code == 201

    response = client.get(T, params={"type": "Sensor", "count": "true",
                                     "timerel": "after", "timeAt": at(11), "attrs": "pm25"},
                          headers=ENV_LINK)
    assert response.status_code == 200
    assert response.headers["ngsild-results-count"] == "2"
    body = {e["id"]: [i["value"] for i in e["pm25"]] for e in response.json()}
    assert body == {S1: [11, 12, 13], S2: [21]}

    page = client.get(T, params={"type": "Sensor", "limit": 1, "offset": 1,
                                 "lastN": 1}, headers=ENV_LINK).json()
    assert [(e["id"], [i["value"] for i in e["pm25"]]) for e in page] == [(S2, [21])]
    by_pattern = client.get(T, params={"idPattern": "Street"}).json()
    assert [e["id"] for e in by_pattern] == ["urn:ngsi-ld:Street:x"]
    by_id = client.get(T, params={"id": S2, "options": "temporalValues"},
                       headers=ENV_LINK).json()
    assert by_id[0]["pm25"] == {"type": "Property", "values": [[20, at(10)], [21, at(11)]]}


def test_missing_entity_is_404_and_a_deleted_entitys_history_stays_readable(
        client: TestClient, hub: Hub) -> None:
    missing = client.get(f"{T}/urn:ngsi-ld:X:none")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["type"].endswith("ResourceNotFound")
    four_hours(client)
    assert client.delete(f"/ngsi-ld/v1/entities/{S1}").status_code == 204
    # The deleted entity's history stays, readable by whoever may read its dataset (its
    # tombstone keeps the dataset and the types); the entity itself is gone.
    assert client.get(f"/ngsi-ld/v1/entities/{S1}").status_code == 404
    gone = client.get(f"{T}/{S1}", params={"lastN": 1}, headers=ENV_LINK)
    assert gone.status_code == 200, gone.text
    assert gone.json()["type"] == "Sensor"
    assert [i["value"] for i in gone.json()["pm25"]] == [13]
    kept = hub.temporal.get_entity(Caller.system("test"), S1, TemporalQuery(last_n=1))
    assert kept.current is None
    pm25 = next(name for name in kept.instances if name.endswith("pm25"))
    assert [i.instance["value"] for i in kept.instances[pm25]] == [13]


# --- aggregation ---------------------------------------------------------------------------

def _series(seed: int) -> list[tuple[datetime, float]]:
    """Irregular readings over two days, with repeated values for distinctCount."""
    rng = random.Random(seed)
    moments: set[datetime] = set()
    while len(moments) < 160:
        moments.add(DAY + timedelta(minutes=rng.randrange(0, 48 * 60), seconds=rng.randrange(60)))
    return [(m, round(rng.uniform(0, 50), 1) if rng.random() < 0.8 else 7.5)
            for m in sorted(moments)]


def _expected(series: list[tuple[datetime, float]], origin: datetime, step: timedelta | None,
              end: datetime) -> dict[str, list[list[Any]]]:
    """An independent computation: plain Python over the readings, period by period."""
    buckets: dict[datetime, list[float]] = {}
    for moment, value in series:
        if origin <= moment < end:
            start = origin + step * ((moment - origin) // step) if step else origin
            buckets.setdefault(start, []).append(value)
    out: dict[str, list[list[Any]]] = {m: [] for m in (
        "totalCount", "distinctCount", "sum", "sumsq", "avg", "min", "max", "stddev")}
    for start in sorted(buckets):
        vals = buckets[start]
        stop = min(start + step, end) if step else end
        mean = sum(vals) / len(vals)
        figures = {"totalCount": len(vals), "distinctCount": len(set(vals)), "sum": sum(vals),
                   "sumsq": sum(v * v for v in vals), "avg": mean, "min": min(vals),
                   "max": max(vals),
                   "stddev": math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))}
        for method, figure in figures.items():
            out[method].append([figure, iso(start).replace("Z", ".000Z"),
                                iso(stop).replace("Z", ".000Z")])
    return out


def _close(got: list[list[Any]], want: list[list[Any]]) -> bool:
    return len(got) == len(want) and all(
        g[1:] == w[1:] and g[0] == pytest.approx(w[0], rel=1e-9, abs=1e-9)
        for g, w in zip(got, want, strict=True))


@pytest.fixture
def two_sensors(client: TestClient) -> dict[str, list[tuple[datetime, float]]]:
    data = {S1: _series(1), S2: _series(2)}
    for entity_id, series in data.items():
        body = temporal(entity_id, pm25=[reading(v, iso(m)) for m, v in series])
        assert post(client, body).status_code == 201
    return data


ALL = "totalCount,distinctCount,sum,sumsq,avg,min,max,stddev"
ROLLUP = "totalCount,sum,sumsq,avg,min,max,stddev"


@pytest.mark.parametrize(("duration", "start", "end"), [
    ("PT1H", DAY, DAY + timedelta(days=2)),
    ("P1D", DAY, DAY + timedelta(days=2)),
    (None, DAY + timedelta(hours=5), DAY + timedelta(hours=29)),
    ("PT1H", DAY + timedelta(hours=3, minutes=30), DAY + timedelta(hours=20)),
    ("PT25M", DAY + timedelta(minutes=7), DAY + timedelta(hours=9)),
])
def test_aggregates_match_independent_computation(
        client: TestClient, two_sensors: dict[str, list[tuple[datetime, float]]],
        duration: str | None, start: datetime, end: datetime) -> None:
    params = {"type": "Sensor", "options": "aggregatedValues", "aggrMethods": ALL,
              "timerel": "between", "timeAt": iso(start), "endTimeAt": iso(end)}
    if duration:
        params["aggrPeriodDuration"] = duration
    response = client.get(T, params=params, headers=ENV_LINK)
    assert response.status_code == 200, response.text
    step = {"PT1H": timedelta(hours=1), "P1D": timedelta(days=1),
            "PT25M": timedelta(minutes=25), None: None}[duration]
    for entity in response.json():
        want = _expected(two_sensors[entity["id"]], start, step, end)
        got = entity["pm25"]
        assert got["type"] == "Property"
        for method, periods in want.items():
            assert _close(got[method], periods), (method, got[method][:3], periods[:3])


@pytest.mark.parametrize("duration", ["PT1H", "PT3H", "P1D", None])
def test_rollup_path_equals_raw_path(client: TestClient,
                                     two_sensors: dict[str, list[tuple[datetime, float]]],
                                     duration: str | None) -> None:
    hub: Hub = client.app.state.hub  # type: ignore[attr-defined]
    params = {"type": "Sensor", "options": "aggregatedValues",
              "aggrMethods": ROLLUP, "timerel": "between", "timeAt": at(0),
              "endTimeAt": at(48)}
    if duration:
        params["aggrPeriodDuration"] = duration
    query = TemporalQuery(TimeQuery.parse("between", at(0), at(48), None),
                          aggregation=Aggregation.parse(ROLLUP.split(","), duration))
    assert hub.temporal.rollup_eligible(query)
    fast = client.get(T, params=params, headers=ENV_LINK).json()
    hub.temporal.use_rollups = False
    assert not hub.temporal.rollup_eligible(query)
    slow = client.get(T, params=params, headers=ENV_LINK).json()
    hub.temporal.use_rollups = True
    assert len(fast) == len(slow) == 2
    for quick, raw in zip(fast, slow, strict=True):
        for method in ROLLUP.split(","):
            assert _close(quick["pm25"][method], raw["pm25"][method]), method
    with_distinct = Aggregation.parse(ALL.split(","), duration)
    assert not hub.temporal.rollup_eligible(TemporalQuery(query.time, aggregation=with_distinct))


def test_named_attributes_have_their_rollups_read_alongside_the_entities(
        client: TestClient, two_sensors: dict[str, list[tuple[datetime, float]]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With attrs, rollups are read while the page loads; what comes back is what raw
    history gives, also once an entity's attribute holds text now (then no rollups)."""
    hub: Hub = client.app.state.hub  # type: ignore[attr-defined]
    read_early = []
    original = hub.temporal._read_rollups
    monkeypatch.setattr(hub.temporal, "_read_rollups",
                        lambda *args: read_early.append(args[0]) or original(*args))
    params = {"type": "Sensor", "attrs": "pm25,no2", "options": "aggregatedValues",
              "aggrMethods": ROLLUP, "aggrPeriodDuration": "PT3H", "timerel": "between",
              "timeAt": at(0), "endTimeAt": at(30)}

    def both_paths() -> tuple[list[Any], list[Any]]:
        fast = client.get(T, params=params, headers=ENV_LINK).json()
        hub.temporal.use_rollups = False
        try:
            return fast, client.get(T, params=params, headers=ENV_LINK).json()
        finally:
            hub.temporal.use_rollups = True

    fast, raw = both_paths()
    assert read_early == [[S1, S2]]
    assert [e["id"] for e in fast] == [S1, S2] and "no2" not in fast[0]
    for quick, slow in zip(fast, raw, strict=True):
        for method in ROLLUP.split(","):
            assert _close(quick["pm25"][method], slow["pm25"][method]), method
    text_now = client.patch(f"/ngsi-ld/v1/entities/{S2}/attrs",
                            json={"pm25": reading("sensor fault", at(47))}, headers=ENV_LINK)
    assert text_now.status_code == 204
    fast, raw = both_paths()
    assert len(read_early) == 2  # read, then set aside: pm25 is no longer all numbers
    assert fast == raw
    assert fast[1]["pm25"]["totalCount"][0][0] == raw[1]["pm25"]["totalCount"][0][0] > 0


def test_aggregates_keep_entities_attributes_and_datasets_apart(client: TestClient) -> None:
    """Several entities, attributes and datasetIds in one query, on both paths, with lastN."""
    other = "urn:ngsi-ld:Dataset:b"
    for entity_id, base in ((S1, 0), (S2, 100)):
        body = temporal(entity_id,
                        pm25=[reading(base + h, at(h)) for h in range(3)]
                        + [reading(base + 50 + h, at(h, 10), datasetId=other) for h in range(3)],
                        no2=[reading(base + 10 * h, at(h, 30)) for h in range(3)])
        assert post(client, body).status_code == 201
    hub: Hub = client.app.state.hub  # type: ignore[attr-defined]
    params = {"type": "Sensor", "options": "aggregatedValues", "aggrMethods": "sum,max",
              "aggrPeriodDuration": "PT1H", "timerel": "between", "timeAt": at(0),
              "endTimeAt": at(3), "lastN": "2"}

    def hours(*figures: float) -> list[list[Any]]:
        return [[f, at(h).replace("Z", ".000Z"), at(h + 1).replace("Z", ".000Z")]
                for h, f in zip((1, 2), figures, strict=True)]

    for rollups in (True, False):
        hub.temporal.use_rollups = rollups
        got = {e["id"]: e for e in client.get(T, params=params, headers=ENV_LINK).json()}
        for entity_id, base in ((S1, 0), (S2, 100)):
            default, in_other = got[entity_id]["pm25"]
            assert default == {"type": "Property", "sum": hours(base + 1, base + 2),
                               "max": hours(base + 1, base + 2)}
            assert in_other == {"type": "Property", "datasetId": other,
                                "sum": hours(base + 51, base + 52),
                                "max": hours(base + 51, base + 52)}
            assert got[entity_id]["no2"]["sum"] == hours(base + 10, base + 20)
    hub.temporal.use_rollups = True


@pytest.mark.parametrize("step", [timedelta(hours=1), timedelta(hours=3), None])
def test_rollup_query_per_entity_of_the_page(client: TestClient, step: timedelta | None) -> None:
    """The rollups answer only for the entities asked, each once, in key order, with the
    figures raw history gives; entities without history or out of the range have none."""
    other = "urn:ngsi-ld:Dataset:b"
    outside = "urn:ngsi-ld:Sensor:s3"
    for number, entity_id in enumerate((S1, S2, outside)):
        late = 100 if entity_id == outside else 0
        body = temporal(entity_id,
                        pm25=[reading(number * 10 + h, at(late + h, 20)) for h in range(5)]
                        + [reading(h / 4, at(late + h, 40), datasetId=other) for h in range(2)],
                        no2=[reading(h + 0.5, at(late + h, 5)) for h in range(4)])
        assert post(client, body).status_code == 201
    hub: Hub = client.app.state.hub  # type: ignore[attr-defined]
    names = [f"https://smartdatamodels.org/dataModel.Environment/{n}" for n in ("pm25", "no2")]
    ids = [S2, "urn:ngsi-ld:Sensor:none", S1, outside, S2]
    start, end = DAY, DAY + timedelta(hours=6)
    step_us = int(step.total_seconds()) * 1_000_000 if step else None
    with hub.store.read() as conn:
        fast = history.rollup_aggregates(conn, ids, names, start, end, origin=start,
                                         step_us=step_us)
        slow = history.raw_aggregates(conn, ids, names, start, end, origin=start,
                                      step_us=step_us, distinct=False)
    keys = [(s.entity_id, s.name, s.dataset_id) for s in fast]
    assert len(keys) == len(set(keys)) == 6
    assert {k[0] for k in keys} == {S1, S2}
    assert sorted(keys) == sorted((s.entity_id, s.name, s.dataset_id) for s in slow)
    by_key = {(s.entity_id, s.name, s.dataset_id): s for s in slow}
    for series in fast:
        raw = by_key[(series.entity_id, series.name, series.dataset_id)]
        assert list(series.periods) == sorted(series.periods)
        assert (series.periods, series.instances, series.n, series.total, series.total_sq,
                series.minimum, series.maximum) == (
            raw.periods, raw.instances, raw.n, raw.total, raw.total_sq, raw.minimum,
            raw.maximum)
    assert [k for k in keys if k[0] == S1] == sorted(k for k in keys if k[0] == S1)


def test_rollups_need_whole_hours() -> None:
    from urbanhub.hub.temporal import TemporalService

    service = TemporalService(store=None, queries=None)  # type: ignore[arg-type]

    def eligible(timerel: str | None, start: str | None, end: str | None,
                 duration: str | None, methods: str = "avg") -> bool:
        return service.rollup_eligible(TemporalQuery(
            TimeQuery.parse(timerel, start, end, None),
            aggregation=Aggregation.parse(methods.split(","), duration)))

    assert eligible("after", at(3), None, "PT2H")
    assert eligible(None, None, None, "P1D")
    assert not eligible("after", at(3, 30), None, "PT1H")
    assert not eligible("between", at(3), at(4, 15), "PT1H")
    assert not eligible(None, None, None, "PT30M")
    assert not eligible(None, None, None, None)  # open range: period bounds come from data
    assert not eligible("after", at(3), None, "PT1H", "avg,distinctCount")


def test_aggregation_without_range_aligns_to_epoch_and_last_n_keeps_newest_periods(
        client: TestClient) -> None:
    four_hours(client)
    body = client.get(f"{T}/{S1}", params={"options": "aggregatedValues", "aggrMethods": "avg",
                                          "aggrPeriodDuration": "PT2H"},
                      headers=ENV_LINK).json()
    assert body["pm25"]["avg"] == [[10.5, "2024-03-01T10:00:00.000Z", "2024-03-01T12:00:00.000Z"],
                                   [12.5, "2024-03-01T12:00:00.000Z", "2024-03-01T14:00:00.000Z"]]
    newest = client.get(f"{T}/{S1}", params={"options": "aggregatedValues", "lastN": 1,
                                            "aggrMethods": "max", "aggrPeriodDuration": "PT1H"},
                        headers=ENV_LINK).json()
    assert newest["pm25"]["max"] == [[13, "2024-03-01T13:00:00.000Z",
                                      "2024-03-01T14:00:00.000Z"]]
    whole = client.get(f"{T}/{S1}", params={"options": "aggregatedValues",
                                           "aggrMethods": "totalCount,min"},
                       headers=ENV_LINK).json()
    assert whole["pm25"] == {"type": "Property",
                             "totalCount": [[4, "2024-03-01T10:00:00.000Z",
                                             "2024-03-01T13:00:00.000Z"]],
                             "min": [[10, "2024-03-01T10:00:00.000Z",
                                      "2024-03-01T13:00:00.000Z"]]}


def test_non_numeric_attributes_count_but_have_no_numbers(client: TestClient) -> None:
    body = temporal(status=[reading("ok", at(10)), reading("ok", at(11)),
                            reading("fault", at(12))])
    assert post(client, body).status_code == 201
    got = client.get(f"{T}/{S1}", params={"options": "aggregatedValues",
                                         "aggrMethods": "totalCount,distinctCount,avg",
                                         "aggrPeriodDuration": "P1D", "timerel": "after",
                                         "timeAt": at(0)}, headers=ENV_LINK).json()
    day = ["2024-03-01T00:00:00.000Z", "2024-03-02T00:00:00.000Z"]
    assert got["status"] == {"type": "Property", "totalCount": [[3, *day]],
                             "distinctCount": [[2, *day]], "avg": [[None, *day]]}


# --- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize(("params", "needle"), [
    ({"timerel": "during", "timeAt": at(1)}, "timerel"),
    ({"timerel": "before"}, "timeAt"),
    ({"timerel": "after", "timeAt": "yesterday"}, "timeAt"),
    ({"timerel": "between", "timeAt": at(1)}, "endTimeAt"),
    ({"timerel": "between", "timeAt": at(2), "endTimeAt": at(1)}, "endTimeAt"),
    ({"timerel": "between", "timeAt": at(1), "endTimeAt": "soon"}, "endTimeAt"),
    ({"timeAt": at(1)}, "timerel"),
    ({"timerel": "after", "timeAt": at(1), "endTimeAt": at(2)}, "endTimeAt"),
    ({"timeproperty": "deletedAt"}, "timeproperty"),
    ({"lastN": "0"}, "lastN"),
    ({"lastN": "many"}, "lastN"),
    ({"lastN": "-2"}, "lastN"),
    ({"options": "fancy"}, "fancy"),
    ({"options": "temporalValues,aggregatedValues"}, "representation"),
    ({"format": "csv"}, "format"),
    ({"options": "aggregatedValues"}, "aggrMethods"),
    ({"options": "aggregatedValues", "aggrMethods": "avg,median"}, "median"),
    ({"aggrMethods": "avg"}, "aggregatedValues"),
    ({"options": "aggregatedValues", "aggrMethods": "avg", "aggrPeriodDuration": "1 hour"},
     "aggrPeriodDuration"),
    ({"options": "aggregatedValues", "aggrMethods": "avg", "aggrPeriodDuration": "PT0S"},
     "aggrPeriodDuration"),
    ({"attrs": ","}, "attrs"),
])
def test_bad_query_parameters_are_400_with_a_detail(client: TestClient, params: dict[str, str],
                                                    needle: str) -> None:
    four_hours(client)
    response = client.get(f"{T}/{S1}", params=params, headers=ENV_LINK)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
    assert needle in problem["detail"], problem


def test_bad_list_queries_are_rejected(client: TestClient) -> None:
    cases = [({"timerel": "after", "timeAt": at(1)}, 400, "at least one"),
             ({"type": "T", "limit": "zero"}, 400, "limit"),
             ({"type": "T", "limit": 0}, 400, "count"),
             ({"type": "T", "idPattern": "("}, 400, "idPattern"),
             ({"type": "T", "limit": 100000}, 403, "limit")]
    for params, status, needle in cases:
        response = client.get(T, params=params)
        assert response.status_code == status, (params, response.text)
        assert needle in response.json()["detail"]


def test_calendar_durations_are_not_supported(client: TestClient) -> None:
    four_hours(client)
    response = client.get(f"{T}/{S1}", params={"options": "aggregatedValues",
                                              "aggrMethods": "avg", "aggrPeriodDuration": "P1M"})
    assert response.status_code == 422
    assert "P1M" in response.json()["detail"]


@pytest.mark.parametrize(("body", "needle"), [
    ([], "JSON object"),
    ({"id": "not a uri", "type": "T", "p": [reading(1, at(1))]}, "not a valid URI"),
    ({"id": S1, "type": "T", "p": [{"type": "Property", "value": 1}]}, "observedAt"),
    ({"id": S1, "type": "T", "p": [reading(1, "noon")]}, "observedAt"),
    ({"id": S1, "type": "T", "p": []}, "no instances"),
    ({"id": S1, "type": "T", "p": [{"type": "Property"}]}, "value"),
    ({"id": S1, "p": [reading(1, at(1))]}, "type"),
])
def test_bad_temporal_bodies_are_400_and_store_nothing(client: TestClient, body: Any,
                                                       needle: str) -> None:
    response = client.post(T, json=body)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert needle in response.json()["detail"]
    assert client.get(f"{T}/{S1}").status_code == 404


# --- q and geo select entities on their current state --------------------------------------

def test_q_selects_entities_on_current_state(client: TestClient) -> None:
    four_hours(client)
    assert post(client, temporal(S2, pm25=[reading(99, at(10))])).status_code == 201
    response = client.get(T, params={"type": "Sensor", "q": "pm25>50"},
                          headers=ENV_LINK)
    assert response.status_code == 200, response.text
    assert [(e["id"], [i["value"] for i in e["pm25"]]) for e in response.json()] == [
        (S2, [99])]


def test_geo_query_selects_entities(client: TestClient) -> None:
    here = {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [2.35, 48.85]},
            "observedAt": at(10)}
    there = {**here, "value": {"type": "Point", "coordinates": [13.4, 52.5]}}
    assert post(client, temporal(S1, location=[here], pm25=[reading(1, at(10))])).status_code \
        == 201
    assert post(client, temporal(S2, location=[there], pm25=[reading(2, at(10))])).status_code \
        == 201
    response = client.get(T, params={"type": "Sensor", "georel": "near;maxDistance==5000",
                                     "geometry": "Point", "coordinates": "[2.35,48.85]",
                                     "attrs": "pm25"}, headers=ENV_LINK)
    assert response.status_code == 200, response.text
    assert [e["id"] for e in response.json()] == [S1]
