"""The ``urbanhub`` command: help, db upgrade, import, and the demo as a real process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from urbanhub.cli import app
from urbanhub.config import Settings, get_settings
from urbanhub.hub.runtime import Hub
from urbanhub.model.caller import Caller
from urbanhub.sim.city import KINDS

runner = CliRunner()
LINK = '<{}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'


@pytest.fixture
def sqlite_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point the CLI at a fresh SQLite file (settings are cached per process)."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("URBANHUB_DATABASE_URL", url)
    monkeypatch.setenv("URBANHUB_MQTT_URL", "")
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def test_help_lists_every_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "demo", "import", "db"):
        assert command in result.output
    assert "--backfill-hours" in runner.invoke(app, ["demo", "--help"]).output
    assert "--preset" in runner.invoke(app, ["import", "--help"]).output


def test_db_upgrade_creates_then_keeps_the_schema(sqlite_env: str) -> None:
    first = runner.invoke(app, ["db", "upgrade"])
    assert first.exit_code == 0, first.output
    assert "empty ->" in first.output
    second = runner.invoke(app, ["db", "upgrade"])
    assert second.exit_code == 0
    assert "empty" not in second.output


def test_import_csv_and_geojson_with_a_summary(sqlite_env: str, tmp_path: Path) -> None:
    readings = tmp_path / "noise.csv"
    readings.write_text("meter,time,db\n"
                        "n1,2024-05-01 08:00,61.5\n"
                        "n1,2024-05-01 09:00,oops\n"
                        "n2,2024-05-01 08:00,55\n")
    zones = tmp_path / "zones.geojson"
    zones.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"zone": "quiet-1", "limit": 50},
         "geometry": {"type": "Point", "coordinates": [4.9, 52.3]}}]}))
    result = runner.invoke(app, [
        "import", str(readings), str(zones), "--type", "NoiseLevelObserved",
        "--id-column", "meter", "--time-column", "time", "--timezone", "+02:00",
        "--attr", "db=LAeq:2N", "--id-property", "zone", "--context",
        "https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/master/"
        "context.jsonld"])
    assert result.exit_code == 0, result.output
    assert "import summary" in result.output
    assert "noise.csv" in result.output and "zones.geojson" in result.output
    assert "rejected: noise.csv line 3" in result.output

    hub = Hub(Settings(database_url=sqlite_env, mqtt_url=None))
    try:
        caller = Caller.system("test")
        zone = hub.queries.get_entity(caller, "urn:ngsi-ld:NoiseLevelObserved:quiet-1")
        assert zone["attrs"]
        with hub.store.read() as conn:
            rows = hub.store.history_rows(conn, ["urn:ngsi-ld:NoiseLevelObserved:n1"], [
                "https://smartdatamodels.org/dataModel.Environment/LAeq"], None, None)
        assert [(r.observed_at.hour, r.value_num) for r in rows] == [(6, 61.5)]
    finally:
        hub.close()


def test_import_refuses_bad_options_and_missing_files(sqlite_env: str, tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_text("a,b\n1,2\n")
    unknown = runner.invoke(app, ["import", str(data), "--preset", "nowhere"])
    assert unknown.exit_code == 2 and "Unknown preset" in unknown.output
    mixed = runner.invoke(app, ["import", str(data), "--preset", "beijing-prsa", "--attr", "a=b"])
    assert mixed.exit_code == 2 and "fixes the mapping" in mixed.output
    absent = runner.invoke(app, ["import", str(tmp_path / "absent.csv")])
    assert absent.exit_code == 2 and "not found" in absent.output
    no_mapping = runner.invoke(app, ["import", str(data)])
    assert no_mapping.exit_code == 1 and "needs a mapping" in no_mapping.output
    garbage = tmp_path / "broken.json"
    garbage.write_bytes(b"\xff\xfe\x00garbage")
    unreadable = runner.invoke(app, ["import", str(garbage)])
    assert unreadable.exit_code == 1 and "cannot read it" in unreadable.output


# --- the demo as a real process -----------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def test_demo_starts_streams_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "URBANHUB_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}"}
    env.pop("URBANHUB_MQTT_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "urbanhub.cli", "demo", "--port", str(port), "--sensors", "12",
         "--backfill-hours", "2", "--interval", "1"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=10) as client:
            wait_for(lambda: client.get("/health").status_code == 200, 30, "/health")

            def count(kind_type: str, context: str) -> int:
                response = client.get("/ngsi-ld/v1/entities",
                                      params={"type": kind_type, "limit": 100},
                                      headers={"Link": LINK.format(context)})
                return len(response.json()) if response.status_code == 200 else 0

            # The public sees the open datasets' sensors; parking and waste are internal.
            internal = {"ParkingSpot", "WasteContainer"}
            for kind in KINDS:
                if kind.entity_type not in internal:
                    wait_for(lambda k=kind: count(k.entity_type, k.context) == 2, 30,
                             kind.entity_type)
            assert all(count(k.entity_type, k.context) == 0 for k in KINDS
                       if k.entity_type in internal)
            assert count("District", "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"
                         ) == 8

            def latest() -> str:
                context = KINDS[0].context
                response = client.get("/ngsi-ld/v1/entities",
                                      params={"type": "AirQualityObserved", "attrs": "pm25"},
                                      headers={"Link": LINK.format(context)})
                return max(e["pm25"]["observedAt"] for e in response.json() if "pm25" in e)

            first = latest()
            wait_for(lambda: latest() > first, 15, "new live readings")
            second = latest()
            wait_for(lambda: latest() > second, 15, "more live readings")
    finally:
        process.send_signal(signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
            pytest.fail(f"the demo did not stop on SIGINT:\n{output}")
    assert process.returncode == 0, output
    assert f"{base}/docs" in output and f"{base}/health" in output and "key     uh_" in output
    assert "backfill:" in output and "stopped after" in output
    assert "Traceback" not in output
