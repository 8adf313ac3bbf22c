"""The store's write path: history once per reading, rollups equal to the raw data,
current state the newest reading — for new batches, replays and in-batch duplicates."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select, text

from urbanhub.hub.runtime import Hub
from urbanhub.store.entities import HistoryRow
from urbanhub.store.history import instances, rollup_aggregates
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


def _plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # PostgreSQL's plans
def test_a_rollup_read_scans_only_the_hours_asked_for(hub: Hub) -> None:
    """Reading one day of a sensor with more history (and two datasetIds) touches that
    day's rollup entries only: the index bounds the scan by hour instead of filtering
    every hour the sensor has, so the cost does not grow with the length of history."""
    now = datetime.now(UTC)
    sensor = "urn:ngsi-ld:S:long"
    with hub.store.write() as conn:
        hub.store.insert_entity(conn, {"id": sensor, "type": ["urn:T"], "attrs": {}}, now)
    rows = [replace(row, dataset_id=dataset) for row in readings(sensor, 0, 6 * 24 * 5)
            for dataset in ("", "urn:ngsi-ld:Dataset:spare")]
    write(hub, rows)
    day = T0.replace(minute=0) + timedelta(days=2)
    statements: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, sql: str, params: Any, *_: Any) -> None:
        statements.append((sql, params))

    with hub.store.read() as conn:
        event.listen(conn, "before_cursor_execute", record)
        found = rollup_aggregates(conn, [sensor], [PM25], day, day + timedelta(days=1),
                                  origin=day, step_us=3_600_000_000)
        event.remove(conn, "before_cursor_execute", record)
    assert [(s.dataset_id, len(s.periods), sum(s.n)) for s in found] == [
        ("", 24, 144), ("urn:ngsi-ld:Dataset:spare", 24, 144)]
    sql, params = statements[-1]
    with hub.engine.connect() as conn:
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")  # the table is tiny
        plan = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", params).scalar()
        scans = [node for node in _plan_nodes(plan[0]["Plan"])
                 if node.get("Relation Name") == "rollup_hourly"]
        keys = conn.exec_driver_sql(
            "SELECT array_agg(a.attname ORDER BY k.n) FROM pg_index i CROSS JOIN LATERAL"
            " unnest(i.indkey[0:i.indnkeyatts - 1]) WITH ORDINALITY AS k(attnum, n)"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
            " WHERE i.indexrelid = %(index)s::regclass",
            {"index": scans[0]["Index Name"] if scans else "-"}).scalar()
    assert [s["Node Type"] for s in scans] == ["Index Only Scan"]
    assert scans[0].get("Rows Removed by Filter", 0) == 0
    # PostgreSQL 15 bounds a B-tree scan by its leading equalities and the range after
    # them: with hour right after entity and attribute, only the day's entries are read.
    assert keys == ["entity_id", "name", "hour"]
    assert "hour" in scans[0]["Index Cond"]


def test_last_n_gives_the_newest_instances_of_every_series(hub: Hub) -> None:
    """lastN against an independent computation from every instance in the range: per
    entity, attribute and datasetId, with and without attributes named and a time range
    (both backends find the series by a skip scan and read each one's newest backwards)."""
    now = datetime.now(UTC)
    sensors = ["urn:ngsi-ld:S:n1", "urn:ngsi-ld:S:n2", "urn:ngsi-ld:S:n3"]
    other = "https://smartdatamodels.org/dataModel.Environment/no2"
    with hub.store.write() as conn:
        for sensor in sensors:
            hub.store.insert_entity(conn, {"id": sensor, "type": ["urn:T"], "attrs": {}}, now)
    rows = [replace(row, name=name, dataset_id=dataset)
            for sensor, count in zip(sensors[:2], (40, 7), strict=True)
            for row in readings(sensor, 0, count)
            for name, dataset in ((PM25, ""), (PM25, "urn:ngsi-ld:Dataset:b"), (other, ""))
            if not (sensor == sensors[1] and dataset)]
    write(hub, rows)
    middle = T0 + timedelta(minutes=10 * 20)
    with hub.store.read() as conn:
        for names in (None, [PM25], [PM25, other], [other, "urn:x:absent"]):
            for start, end in ((None, None), (None, middle), (middle, None),
                               (T0 + timedelta(minutes=25), middle)):
                everything = instances(conn, sensors, names, start, end)
                for last_n in (1, 3, 100):
                    series: dict[tuple[str, str, str], list[datetime]] = {}
                    for item in everything:
                        series.setdefault((item.entity_id, item.name, item.dataset_id),
                                          []).append(item.observed_at)
                    expected = sorted((key[0], key[1], moment, key[2])
                                      for key, moments in series.items()
                                      for moment in sorted(moments)[-last_n:])
                    found = instances(conn, sensors, names, start, end, last_n=last_n)
                    assert [(i.entity_id, i.name, i.observed_at, i.dataset_id)
                            for i in found] == expected, (names, start, end, last_n)
                    assert [i.instance["value"] for i in found] == [
                        float((i.observed_at - T0) // timedelta(minutes=10)) for i in found]


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # PostgreSQL storage
def test_current_state_stays_compact_under_a_stream_of_readings(hub: Hub) -> None:
    """Each reading rewrites its entity's and attribute's current-state rows: they stay on
    their pages (HOT updates, pruned as pages are read), so the tables do not grow with the
    number of readings, even without VACUUM (autovacuum is off on the CI machine)."""
    now = datetime.now(UTC)
    sensors = [f"urn:ngsi-ld:S:{n}" for n in range(400)]  # pages full of rows
    with hub.store.write() as conn:
        for sensor in sensors:
            hub.store.insert_entity(conn, {"id": sensor, "type": ["urn:T"], "attrs": {}}, now)

    def sizes() -> tuple[int, int]:
        with hub.store.read() as conn:
            return tuple(int(conn.scalar(text(f"SELECT pg_relation_size('{table}')")) or 0)
                         for table in ("entities", "attributes"))  # type: ignore[return-value]

    for batch in range(5):
        write(hub, [row for sensor in sensors for row in readings(sensor, batch * 6, 6)])
    settled = sizes()
    for batch in range(5, 25):
        write(hub, [row for sensor in sensors for row in readings(sensor, batch * 6, 6)])
    # 8,000 more updates of each table: a page or two, not four times the size
    assert all(after <= 1.1 * before for after, before in zip(sizes(), settled, strict=True))
