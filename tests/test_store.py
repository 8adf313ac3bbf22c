"""The store's write path: history once per reading, rollups equal to the raw data,
current state the newest reading — for new batches, replays and in-batch duplicates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from urbanhub.hub.runtime import Hub
from urbanhub.store.entities import HistoryRow
from urbanhub.store.tables import attributes, history, rollup_hourly

PM25 = "https://smartdatamodels.org/dataModel.Environment/pm25"
T0 = datetime(2025, 3, 31, 22, 30, tzinfo=UTC)  # batches cross an hour and a month boundary


def readings(entity: str, start: int, count: int) -> list[HistoryRow]:
    rows = []
    for n in range(start, start + count):
        moment = T0 + timedelta(minutes=10 * n)
        rows.append(HistoryRow(entity, PM25, "", moment,
                               {"type": "Property", "value": float(n),
                                "observedAt": moment.isoformat().replace("+00:00", "Z")},
                               float(n)))
    return rows


def write(hub: Hub, rows: list[HistoryRow]) -> int:
    with hub.store.write() as conn:
        return hub.store.apply_readings(conn, rows, datetime.now(UTC))


def test_batches_replays_and_duplicates_store_each_reading_once(hub: Hub) -> None:
    now = datetime.now(UTC)
    with hub.store.write() as conn:
        for name in ("urn:ngsi-ld:S:a", "urn:ngsi-ld:S:b"):
            hub.store.insert_entity(conn, {"id": name, "type": ["urn:T"], "attrs": {}}, now)
    assert write(hub, readings("urn:ngsi-ld:S:a", 0, 30)) == 30
    # a replay overlapping new readings, with a duplicate inside the batch
    mixed = readings("urn:ngsi-ld:S:a", 20, 20) + readings("urn:ngsi-ld:S:a", 35, 1)
    assert write(hub, mixed) == 10
    assert write(hub, readings("urn:ngsi-ld:S:a", 0, 40)) == 0
    # an older reading does not replace the current state
    assert write(hub, readings("urn:ngsi-ld:S:b", 5, 1) + readings("urn:ngsi-ld:S:b", 2, 1)) == 2
    with hub.store.read() as conn:
        assert conn.scalar(select(func.count()).select_from(history).where(
            history.c.entity_id == "urn:ngsi-ld:S:a")) == 40
        raw = conn.execute(select(history.c.observed_at, history.c.value_num).where(
            history.c.entity_id == "urn:ngsi-ld:S:a")).all()
        expected: dict[datetime, list[float]] = {}
        for moment, value in raw:
            expected.setdefault(moment.replace(minute=0, second=0, microsecond=0),
                                []).append(value)
        rolled = {row.hour: row for row in conn.execute(select(rollup_hourly).where(
            rollup_hourly.c.entity_id == "urn:ngsi-ld:S:a"))}
        assert set(rolled) == set(expected)
        for hour, values in expected.items():
            assert rolled[hour].n == len(values)
            assert rolled[hour].total == sum(values)
            assert rolled[hour].total_sq == sum(v * v for v in values)
            assert (rolled[hour].minimum, rolled[hour].maximum) == (min(values), max(values))
        current = dict(conn.execute(select(attributes.c.entity_id, attributes.c.value_num)).all())
    assert current == {"urn:ngsi-ld:S:a": 39.0, "urn:ngsi-ld:S:b": 5.0}
