"""Rollup compaction (PostgreSQL): past days' hourly rollups moved into day rows answer
every aggregate exactly as before, late readings of a compacted day still count, and
erasure, the CLI and the schedule know about day rows."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from tests.test_temporal_api import (
    DAY,
    ENV_LINK,
    ROLLUP,
    S1,
    S2,
    T,
    _close,
    iso,
    post,
    reading,
    temporal,
)
from urbanhub.cli import app as cli_app
from urbanhub.config import Settings, get_settings
from urbanhub.hub.runtime import Hub
from urbanhub.store.erasure import delete_entities
from urbanhub.store.tables import rollup_daily, rollup_hourly

pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)

OTHER = "urn:ngsi-ld:Dataset:b"
#: (aggrPeriodDuration, start, end, lastN): whole days, ranges cut inside days, periods
#: that do not divide a day, one period for the whole range, and lastN.
QUERIES: list[tuple[str | None, datetime, datetime, int | None]] = [
    ("PT1H", DAY, DAY + timedelta(days=3), None),
    ("PT3H", DAY + timedelta(hours=5), DAY + timedelta(days=1, hours=7), None),
    ("P1D", DAY, DAY + timedelta(days=3), None),
    ("PT5H", DAY + timedelta(hours=2), DAY + timedelta(days=2, hours=22), None),
    (None, DAY + timedelta(hours=13), DAY + timedelta(days=2, hours=1), None),
    ("PT1H", DAY + timedelta(hours=20), DAY + timedelta(days=1, hours=4), 3),
]


def three_days(client: TestClient) -> None:
    """Readings every 20 minutes for three days, with gaps; S1 also in a second dataset,
    S2 also measures no2."""
    rng = random.Random(7)
    for entity_id in (S1, S2):
        moments = [DAY + timedelta(minutes=20 * i) for i in range(3 * 72)
                   if rng.random() > 0.15]
        body = temporal(entity_id, pm25=[reading(round(rng.uniform(0, 90), 2), iso(m))
                                         for m in moments])
        if entity_id == S1:
            body["pm25"] += [reading(rng.randint(0, 9), iso(m + timedelta(minutes=5)),
                                     datasetId=OTHER) for m in moments[::7]]
        else:
            body["no2"] = [reading(rng.uniform(10, 60), iso(m)) for m in moments[::3]]
        assert post(client, body).status_code == 201


def aggregates(client: TestClient) -> list[Any]:
    found = []
    for duration, start, end, last_n in QUERIES:
        params = {"type": "Sensor", "options": "aggregatedValues", "aggrMethods": ROLLUP,
                  "timerel": "between", "timeAt": iso(start), "endTimeAt": iso(end)}
        if duration:
            params["aggrPeriodDuration"] = duration
        if last_n:
            params["lastN"] = str(last_n)
        response = client.get(T, params=params, headers=ENV_LINK)
        assert response.status_code == 200, response.text
        found.append(response.json())
    return found


def assert_same(got: list[Any], want: list[Any]) -> None:
    assert len(got) == len(want)
    for query, (answer, expected) in enumerate(zip(got, want, strict=True)):
        assert [e["id"] for e in answer] == [e["id"] for e in expected]
        for entity, other in zip(answer, expected, strict=True):
            assert entity.keys() == other.keys(), query
            for name in ("pm25", "no2"):
                if name not in other:
                    continue
                groups = entity[name] if isinstance(entity[name], list) else [entity[name]]
                wanted = other[name] if isinstance(other[name], list) else [other[name]]
                assert len(groups) == len(wanted), (query, name)
                for group, want_group in zip(groups, wanted, strict=True):
                    assert group.get("datasetId") == want_group.get("datasetId")
                    for method in ROLLUP.split(","):
                        assert _close(group[method], want_group[method]), (
                            query, entity["id"], name, method)


def raw_aggregates(client: TestClient, hub: Hub) -> list[Any]:
    hub.temporal.use_rollups = False
    try:
        return aggregates(client)
    finally:
        hub.temporal.use_rollups = True


def count(hub: Hub, table: Any) -> int:
    with hub.store.read() as conn:
        return int(conn.scalar(select(func.count()).select_from(table)) or 0)


def test_compacted_days_answer_as_their_hours_did(client: TestClient, hub: Hub) -> None:
    three_days(client)
    hours = count(hub, rollup_hourly)
    before = aggregates(client)
    assert_same(before, raw_aggregates(client, hub))

    # the third day ended less than a day before "now": not compacted yet by default
    hub.compaction.clock = lambda: DAY + timedelta(days=3, hours=12)
    assert hub.compaction.pending_days() == [DAY, DAY + timedelta(days=1)]
    done = hub.compaction.run(hub.compaction.pending_days(DAY + timedelta(days=3)))
    assert [d.day for d in done] == [DAY + timedelta(days=n) for n in range(3)]
    assert sum(d.hours for d in done) == hours
    # S1 pm25 in two datasets, S2 pm25 and no2: four series, each a row a day
    assert [d.rows for d in done] == [4, 4, 4]
    assert count(hub, rollup_hourly) == 0
    assert count(hub, rollup_daily) == 12
    assert_same(aggregates(client), before)
    assert hub.compaction.run(hub.compaction.pending_days(DAY + timedelta(days=9))) == []

    # late readings of a compacted day: a new hour and more readings in hours it has
    late = temporal(S1, pm25=[reading(500, iso(DAY + timedelta(days=1, hours=10, minutes=7))),
                              reading(-3, iso(DAY + timedelta(days=1, hours=2, minutes=59))),
                              reading(7, iso(DAY + timedelta(days=2, hours=23, minutes=1)),
                                      datasetId=OTHER)])
    assert post(client, late).status_code == 204
    assert count(hub, rollup_hourly) == 3
    with_late = raw_aggregates(client, hub)
    assert_same(aggregates(client), with_late)  # day rows and hourly rows add up
    merged = hub.compaction.run(hub.compaction.pending_days(DAY + timedelta(days=3)))
    assert [(d.day, d.hours, d.rows) for d in merged] == [
        (DAY + timedelta(days=1), 2, 1), (DAY + timedelta(days=2), 1, 1)]
    assert (count(hub, rollup_hourly), count(hub, rollup_daily)) == (0, 12)
    assert_same(aggregates(client), with_late)


def test_day_rows_keep_hours_in_step(client: TestClient, hub: Hub) -> None:
    """Arrays of a day row after a merge: hours ascending and unique, every figure in
    step, counts and extremes combined (not overwritten)."""
    base = DAY + timedelta(days=1)
    first = temporal(S1, pm25=[reading(v, iso(base + timedelta(hours=h, minutes=10)))
                               for h, v in ((3, 4.0), (7, 9.0), (8, 1.0))])
    assert post(client, first).status_code == 201
    hub.compaction.run([base])
    second = temporal(S1, pm25=[reading(v, iso(base + timedelta(hours=h, minutes=40)))
                                for h, v in ((7, 2.0), (1, 5.0))])
    assert post(client, second).status_code == 204
    hub.compaction.run([base])
    with hub.store.read() as conn:
        row = conn.execute(select(rollup_daily)).one()
    assert row.day == base
    assert row.hours == [1, 3, 7, 8]
    assert row.n == [1, 1, 2, 1]
    assert row.total == [5.0, 4.0, 11.0, 1.0]
    assert row.total_sq == [25.0, 16.0, 85.0, 1.0]
    assert (row.minimum, row.maximum) == ([5.0, 4.0, 2.0, 1.0], [5.0, 4.0, 9.0, 1.0])


def test_erasure_deletes_day_rows_and_counts_their_hours(client: TestClient, hub: Hub) -> None:
    three_days(client)
    hub.compaction.run(hub.compaction.pending_days(DAY + timedelta(days=2)))
    with hub.store.read() as conn:
        s1_hours = conn.scalar(select(func.sum(func.cardinality(rollup_daily.c.hours))).where(
            rollup_daily.c.entity_id == S1))
        s1_hourly = conn.scalar(select(func.count()).select_from(rollup_hourly).where(
            rollup_hourly.c.entity_id == S1))
    assert s1_hours and s1_hourly  # two days compacted, the third still hourly
    with hub.store.write() as conn:
        erased = delete_entities(conn, [S1])
    assert erased.rollup_hours == s1_hours + s1_hourly
    with hub.store.read() as conn:
        left = set(conn.scalars(select(rollup_daily.c.entity_id).distinct()))
    assert left == {S2}


def test_the_cli_compacts_past_days(client: TestClient, hub: Hub,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    three_days(client)
    monkeypatch.setenv("URBANHUB_DATABASE_URL", hub.settings.database_url)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        bad = runner.invoke(cli_app, ["db", "compact", "--before", "tomorrow"])
        assert bad.exit_code == 2
        assert "not a date" in bad.output
        done = runner.invoke(cli_app, ["db", "compact", "--before",
                                       f"{DAY + timedelta(days=2):%Y-%m-%d}"])
        assert done.exit_code == 0, done.output
        assert "compacted 2 days" in done.output
        with hub.store.read() as conn:
            days = set(conn.scalars(select(rollup_daily.c.day).distinct()))
            hourly_days = {h.date() for h in conn.scalars(select(rollup_hourly.c.hour))}
        assert days == {DAY, DAY + timedelta(days=1)}
        assert hourly_days == {(DAY + timedelta(days=2)).date()}
    finally:
        get_settings.cache_clear()


def test_the_schedule_runs_on_postgresql_only(hub: Hub, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    schedule = hub.compaction_schedule()
    assert schedule is not None and schedule.interval_s == 3600.0
    assert schedule.run_once() == []  # nothing to compact is no failure
    monkeypatch.setattr(hub.settings, "compaction_interval_s", 0)
    assert hub.compaction_schedule() is None

    embedded = Hub(Settings(database_url=f"sqlite:///{tmp_path / 'hub.db'}", mqtt_url=None))
    try:
        assert embedded.compaction_schedule() is None
        assert embedded.compaction.pending_days() == []
    finally:
        embedded.close()
    monkeypatch.setenv("URBANHUB_DATABASE_URL", embedded.settings.database_url)
    get_settings.cache_clear()
    try:
        said = CliRunner().invoke(cli_app, ["db", "compact"])
    finally:
        get_settings.cache_clear()
    assert said.exit_code == 0, said.output
    assert "nothing to compact" in said.output
