"""Ingest and query benchmark: Urbanhub beside raw baselines measured in the same run.

Prints, per backend: readings/s through HTTP batch ingest next to a raw bulk insert of the
same rows into a bare indexed table (PostgreSQL COPY, SQLite executemany); MQTT messages/s
through the hub next to a bare paho subscriber that only counts, fed by the same publisher;
the median latency of GET one entity; a q-query over 10,000 entities; and (PostgreSQL) the
hourly average per sensor over one day with 10 million history rows.

Usage: .venv/bin/python bench/ingest.py [--backend sqlite|postgres|both] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
import psycopg

ENV_CONTEXT = ("https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/"
               "master/context.jsonld")
LINK = {"Link": f'<{ENV_CONTEXT}>; rel="http://www.w3.org/ns/json-ld#context"; '
                'type="application/ld+json"'}
PG_ADMIN = os.environ.get("URBANHUB_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
ATTRS = ("pm25", "pm10", "no2", "o3")
SDM_ENV = "https://smartdatamodels.org/dataModel.Environment/"
START = datetime(2025, 1, 1, tzinfo=UTC)


BENCH_PURPOSE = "benchmarking"


def api_key(key: str) -> dict[str, str]:
    """The bench's credentials: the CDO's key, and a registered purpose for reading the
    (uncatalogued, so internal) data it writes."""
    return {"Authorization": f"ApiKey {key}", "Urbanhub-Purpose": BENCH_PURPOSE}


def register_purpose(client: httpx.Client) -> None:
    response = client.post("/catalog/v1/purposes", json={
        "id": BENCH_PURPOSE, "kind": "operations", "description": "Measuring the hub."})
    if response.status_code not in (201, 409):
        raise RuntimeError(f"registering the purpose failed: {response.status_code} "
                           f"{response.text}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bootstrap_key(database_url: str) -> str:
    """The API key of a CDO created on the bench database: the hub serves only authenticated
    writers, and the CDO's organisation then owns (and may feed) every device."""
    env = dict(os.environ, URBANHUB_DATABASE_URL=database_url, URBANHUB_LOG_LEVEL="WARNING")
    done = subprocess.run([sys.executable, "-m", "urbanhub.cli", "admin", "bootstrap",
                           "--organisation-id", "bench", "--organisation-name", "Bench",
                           "--subject", "bench", "--expires-days", "1"], env=env,
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


@contextmanager
def hub_server(database_url: str, topic_root: str, broker_port: int) -> Iterator[str]:
    """`urbanhub serve` in a subprocess; yields its base URL once /health answers."""
    port = free_port()
    env = dict(os.environ, URBANHUB_DATABASE_URL=database_url,
               URBANHUB_MQTT_URL=f"mqtt://127.0.0.1:{broker_port}",
               URBANHUB_MQTT_TOPIC_ROOT=topic_root,
               URBANHUB_MQTT_CLIENT_ID=f"bench-{topic_root}", URBANHUB_LOG_FORMAT="json",
               URBANHUB_LOG_LEVEL="WARNING")
    process = subprocess.Popen([sys.executable, "-m", "urbanhub.cli", "serve", "--port",
                                str(port)], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError("the hub did not start")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextmanager
def postgres_database() -> Iterator[str]:
    name = f"urbanhub_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def provision(client: httpx.Client, devices: int) -> list[str]:
    ids = [f"bench-{i:05d}" for i in range(devices)]
    for number, device_id in enumerate(ids):
        point = {"type": "Point", "coordinates": [116.3 + number % 100 / 1000, 39.9]}
        response = client.post("/ingest/v1/devices", json={
            "deviceId": device_id, "entityId": f"urn:ngsi-ld:AirQualityObserved:{device_id}",
            "entityType": "AirQualityObserved", "@context": ENV_CONTEXT, "transport": "MQTT",
            "attributes": [{"object_id": a, "name": a, "type": "Property", "unitCode": "GQ"}
                           for a in ATTRS],
            "staticAttributes": {"location": {"type": "GeoProperty", "value": point}}})
        if response.status_code not in (201, 409):
            raise RuntimeError(f"provisioning failed: {response.status_code} {response.text}")
    return ids


def measurement_batches(devices: list[str], readings: int, batch_readings: int,
                        start: datetime = START) -> list[bytes]:
    """Pre-serialised request bodies: each measurement carries one value per attribute."""
    per_message = len(ATTRS)
    messages = readings // per_message
    bodies: list[bytes] = []
    batch: list[dict[str, object]] = []
    for n in range(messages):
        device = devices[n % len(devices)]
        moment = start + timedelta(seconds=60 * (n // len(devices)))
        batch.append({"deviceId": device, "observedAt": moment.isoformat().replace(
            "+00:00", "Z"), **{a: float((n * 7 + i) % 500) / 3 for i, a in enumerate(ATTRS)}})
        if len(batch) * per_message >= batch_readings:
            bodies.append(orjson.dumps(batch))
            batch = []
    if batch:
        bodies.append(orjson.dumps(batch))
    return bodies


def http_ingest_rate(base: str, key: str, bodies: list[bytes],
                     senders: int) -> tuple[float, int]:
    """Readings/s stored through POST /ingest/v1/readings by ``senders`` concurrent clients
    (gateways post in parallel, with their organisation's API key; one client alone leaves
    the database idle while the hub parses)."""
    stored = [0] * senders

    def send(index: int) -> None:
        with httpx.Client(base_url=base, timeout=120, headers=api_key(key)) as client:
            for body in bodies[index::senders]:
                response = client.post("/ingest/v1/readings", content=body,
                                       headers={"Content-Type": "application/json"})
                response.raise_for_status()
                stored[index] += int(response.json()["stored"])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(senders)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(stored) / (time.perf_counter() - started), sum(stored)


def raw_rows(bodies: list[bytes]) -> list[tuple[str, str, datetime, float]]:
    """The same readings as rows of an equivalent bare table: entity URN, attribute IRI,
    time, value (what the hub keys history by)."""
    rows = []
    for body in bodies:
        for message in orjson.loads(body):
            moment = datetime.fromisoformat(message["observedAt"].replace("Z", "+00:00"))
            entity = f"urn:ngsi-ld:AirQualityObserved:{message['deviceId']}"
            rows.extend((entity, SDM_ENV + a, moment, message[a]) for a in ATTRS)
    return rows


def raw_copy_rate(database_url: str, rows: list[tuple[str, str, datetime, float]]) -> float:
    """PostgreSQL COPY into a bare table with a (sensor, attribute, time) index."""
    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE raw_readings (sensor text, attr text, t timestamptz,"
                     " v float8)")
        conn.execute("CREATE INDEX ON raw_readings (sensor, attr, t)")
        conn.commit()
        started = time.perf_counter()
        for start in range(0, len(rows), 10_000):
            with conn.cursor() as cursor, cursor.copy(
                    "COPY raw_readings FROM STDIN") as copy:
                for row in rows[start:start + 10_000]:
                    copy.write_row(row)
            conn.commit()
        return len(rows) / (time.perf_counter() - started)


def raw_sqlite_rate(path: Path, rows: list[tuple[str, str, datetime, float]]) -> float:
    """SQLite executemany into a bare table with the same index, same batch size."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE raw_readings (sensor TEXT, attr TEXT, t TEXT, v REAL)")
    conn.execute("CREATE INDEX ix_raw ON raw_readings (sensor, attr, t)")
    text_rows = [(s, a, t.isoformat(), v) for s, a, t, v in rows]
    started = time.perf_counter()
    for start in range(0, len(text_rows), 10_000):
        with conn:
            conn.executemany("INSERT INTO raw_readings VALUES (?, ?, ?, ?)",
                             text_rows[start:start + 10_000])
    rate = len(rows) / (time.perf_counter() - started)
    conn.close()
    return rate


@contextmanager
def private_broker() -> Iterator[int]:
    """A Mosquitto of the benchmark's own, configured as docs/ingest.md asks of deployments:
    the system broker's default max_queued_messages (1000) drops messages to any subscriber
    that falls behind, and would measure the broker, not the hub."""
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "mosquitto.conf"
        config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                          "max_queued_messages 0\nmax_inflight_messages 0\n"
                          "persistence false\n")
        broker = subprocess.Popen(["mosquitto", "-c", str(config)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.05)
            yield port
        finally:
            broker.terminate()
            broker.wait(timeout=10)


def publish(port: int, topic_of: list[str], payloads: list[bytes], qos: int) -> float:
    """Publish every payload from one paho client; returns the publishing time."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex}")
    client.max_queued_messages_set(0)
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    started = time.perf_counter()
    pending = []
    for topic, payload in zip(topic_of, payloads, strict=True):
        info = client.publish(topic, payload, qos=qos)
        if qos:
            pending.append(info)
            if len(pending) >= 1000:
                for item in pending:
                    item.wait_for_publish(30)
                pending.clear()
    for item in pending:
        item.wait_for_publish(30)
    elapsed = time.perf_counter() - started
    client.loop_stop()
    client.disconnect()
    return elapsed


def mqtt_messages(root: str, devices: list[str], count: int, offset_minutes: int,
                  ) -> tuple[list[str], list[bytes]]:
    topics, payloads = [], []
    for n in range(count):
        device = devices[n % len(devices)]
        moment = START + timedelta(minutes=offset_minutes, seconds=n // len(devices))
        topics.append(f"{root}/devices/{device}/attrs")
        payloads.append(orjson.dumps({"pm25": n % 300, "observedAt": moment.isoformat()}))
    return topics, payloads


def _count_messages(port: int, root: str, qos: int, expected: int, ready: Any,
                    result: Any) -> None:
    """The bare subscriber, in a process of its own (as the hub is): it only counts."""
    received = 0
    last = 0.0

    def on_message(_c: object, _u: object, _m: object) -> None:
        nonlocal received, last
        received += 1
        last = time.time()

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bare-{uuid.uuid4().hex}")
    sub.on_message = on_message
    sub.connect("127.0.0.1", port)
    sub.subscribe(f"{root}/#", qos=qos)
    sub.loop_start()
    time.sleep(0.5)
    ready.set()
    seen, quiet_since = -1, time.time()
    while received < expected and time.time() - quiet_since < 3:
        if received != seen:
            seen, quiet_since = received, time.time()
        time.sleep(0.01)
    sub.loop_stop()
    result.put((received, last))


def bare_subscriber_rate(port: int, root: str, topics: list[str], payloads: list[bytes],
                         qos: int, *, own_process: bool) -> tuple[float, int]:
    """Messages/s of a bare paho subscriber (MQTT 3.1.1, automatic acks) and how many
    arrived, timed from the first publish to the last message received. In its own process
    it is limited by the publisher only; sharing the publisher's process (and its GIL) is the
    set-up of the issue's reference figure (~21,000 msg/s)."""
    context = multiprocessing.get_context("spawn")
    ready, result = context.Event(), context.Queue()
    args = (port, root, qos, len(payloads), ready, result)
    process: Any = (context.Process(target=_count_messages, args=args) if own_process
                    else threading.Thread(target=_count_messages, args=args))
    process.start()
    ready.wait(30)
    started = time.time()
    publish(port, topics, payloads, qos)
    received, last = result.get(timeout=600)
    process.join(30)
    return (received / (last - started) if received else 0.0), received


def stored_counter(client: httpx.Client) -> int:
    return int(client.get("/health").json().get("ingest", {}).get("readings_stored", 0))


def hub_mqtt_rate(port: int, client: httpx.Client, topics: list[str], payloads: list[bytes],
                  qos: int) -> tuple[float, int]:
    """Messages/s through the hub (one reading each, counted once stored) and how many."""
    before = stored_counter(client)
    started = time.perf_counter()
    publish(port, topics, payloads, qos)
    seen, quiet_since, finished = -1, time.perf_counter(), time.perf_counter()
    while time.perf_counter() - quiet_since < 3:
        stored = stored_counter(client) - before
        if stored != seen:
            seen, quiet_since, finished = stored, time.perf_counter(), time.perf_counter()
        if stored >= len(payloads):
            break
        time.sleep(0.01)
    return seen / (finished - started), seen


def median_ms(call: object, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()  # type: ignore[operator]
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def create_query_entities(client: httpx.Client, count: int) -> None:
    batch = []
    for i in range(count):
        batch.append({"id": f"urn:ngsi-ld:BenchSensor:{i:06d}", "type": "BenchSensor",
                      "temperature": {"type": "Property", "value": i % 40},
                      "status": {"type": "Property", "value": "ok" if i % 10 else "fault"}})
        if len(batch) == 500:
            client.post("/ngsi-ld/v1/entityOperations/upsert", json=batch).raise_for_status()
            batch = []
    if batch:
        client.post("/ngsi-ld/v1/entityOperations/upsert", json=batch).raise_for_status()


def load_history(database_url: str, sensors: int, rows: int) -> float:
    """Fill history and its hourly rollups with ``rows`` readings by SQL (fast to set up)."""
    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    per_sensor = rows // sensors
    started = time.perf_counter()
    with psycopg.connect(url) as conn:
        for month in range(3):
            day = START + timedelta(days=31 * month)
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS history_y{day.year:04d}m{day.month:02d} PARTITION OF"
                f" history FOR VALUES FROM ('{day:%Y-%m}-01') TO ('"
                f"{(day.replace(day=28) + timedelta(days=4)).replace(day=1):%Y-%m-%d}')")
        conn.execute(
            "INSERT INTO history (entity_id, name, dataset_id, observed_at, value_num, instance,"
            " recorded_at) SELECT 'urn:ngsi-ld:BenchSensor:' || lpad(s::text, 6, '0'),"
            " 'https://uri.etsi.org/ngsi-ld/default-context/temperature', '',"
            " %s::timestamptz + make_interval(mins => m * 10), (s + m) %% 40,"
            " '{\"type\":\"Property\",\"value\":' || ((s + m) %% 40) || '}', now()"
            " FROM generate_series(0, %s) s, generate_series(0, %s) m",
            (START, sensors - 1, per_sensor - 1))
        conn.execute(
            "INSERT INTO rollup_hourly SELECT entity_id, name, dataset_id,"
            " date_trunc('hour', observed_at), count(*), sum(value_num),"
            " sum(value_num * value_num), min(value_num), max(value_num) FROM history WHERE"
            " value_num IS NOT NULL"
            " GROUP BY 1, 2, 3, 4 ORDER BY 4"  # hour by hour on disk, as ingest writes them
            " ON CONFLICT DO NOTHING")
        conn.commit()
    return time.perf_counter() - started


def compact_rollups(database_url: str) -> float:
    """Fold the loaded days' hourly rollups into day rows, as the schedule inside `serve`
    does for days that ended more than a day ago (the bench's are in 2025), then VACUUM
    ANALYZE, as autovacuum would (visibility map for index-only reads, statistics), and a
    CHECKPOINT, so the gigabytes just written are not being flushed while queries are
    timed."""
    started = time.perf_counter()
    env = dict(os.environ, URBANHUB_DATABASE_URL=database_url, URBANHUB_LOG_LEVEL="WARNING")
    subprocess.run([sys.executable, "-m", "urbanhub.cli", "db", "compact"], env=env,
                   check=True, capture_output=True)
    with psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://"),
                         autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")
    return time.perf_counter() - started


def hourly_day_aggregate(client: httpx.Client, sensors: int) -> float:
    """Hourly average per sensor over one day, every sensor, through the temporal API."""
    day = START + timedelta(days=3)  # inside the loaded data (1,000 readings, 10 min apart)
    started = time.perf_counter()
    seen = 0
    for offset in range(0, sensors, 1000):
        response = client.get("/ngsi-ld/v1/temporal/entities", params={
            "type": "BenchSensor", "attrs": "temperature", "timerel": "between",
            "timeAt": day.isoformat(), "endTimeAt": (day + timedelta(days=1)).isoformat(),
            "aggrMethods": "avg", "aggrPeriodDuration": "PT1H", "options": "aggregatedValues",
            "limit": 1000, "offset": offset}, timeout=120)
        response.raise_for_status()
        seen += len(orjson.loads(response.content))  # a client's fast parser, not stdlib json
    elapsed = time.perf_counter() - started
    if seen != sensors:
        raise RuntimeError(f"aggregate returned {seen} sensors, expected {sensors}")
    return elapsed


def ingest_figures(backend: str, database_url: str, tmp: str, base: str, key: str,
                   client: httpx.Client, broker: int, root: str, devices: list[str],
                   readings: int, mqtt_count: int) -> None:
    """Print the ingest figures: HTTP batches beside the raw bulk insert, MQTT beside bare
    subscribers. Its readings and messages (hundreds of MB) are garbage once it returns."""
    bodies = measurement_batches(devices, readings, 20_000)
    rate, stored = http_ingest_rate(base, key, bodies, senders=1)
    parallel, _ = http_ingest_rate(base, key, measurement_batches(
        devices, readings, 20_000, START + timedelta(days=20)), senders=4)
    rows = raw_rows(bodies)
    baseline = (raw_copy_rate(database_url, rows) if backend == "postgres"
                else raw_sqlite_rate(Path(tmp) / "raw.db", rows))
    label = "COPY" if backend == "postgres" else "executemany"
    print(f"HTTP batch ingest   {rate:>10,.0f} readings/s  ({stored:,} stored), with 4 "
          f"concurrent senders {parallel:>10,.0f}/s   raw {label} {baseline:>10,.0f}"
          f" rows/s   ratio {rate / baseline:.2f} / {parallel / baseline:.2f}", flush=True)
    for qos in (0, 1):
        topics, payloads = mqtt_messages(root, devices, mqtt_count, 60 * 24 * (qos + 1))
        bare_topics = [t.replace(root, f"{root}x", 1) for t in topics]
        shared, shared_got = bare_subscriber_rate(broker, f"{root}x", bare_topics,
                                                  payloads, qos, own_process=False)
        alone, alone_got = bare_subscriber_rate(broker, f"{root}x", bare_topics,
                                                payloads, qos, own_process=True)
        if min(shared_got, alone_got) < mqtt_count:
            print(f"  (bare subscribers received {shared_got:,} and {alone_got:,})")
        hub, hub_got = hub_mqtt_rate(broker, client, topics, payloads, qos)
        print(f"MQTT QoS {qos} ingest     {hub:>10,.0f} msgs/s ({hub_got:,}/{mqtt_count:,})"
              f"   bare subscriber: sharing the publisher's process {shared:>8,.0f}"
              f" msgs/s (ratio {hub / shared:.2f}), own process {alone:>8,.0f} msgs/s"
              f" (ratio {hub / alone:.2f})", flush=True)


def run_backend(backend: str, quick: bool) -> None:
    readings = 40_000 if quick else 400_000
    mqtt_count = 20_000 if quick else 50_000
    query_entities = 2_000 if quick else 10_000
    history_rows = 200_000 if quick else 10_000_000
    root = f"bench{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp, (
            postgres_database() if backend == "postgres" else _nothing(
                f"sqlite:///{Path(tmp) / 'hub.db'}")) as database_url:
        print(f"\n== {backend} ==", flush=True)
        key = bootstrap_key(database_url)
        with private_broker() as broker, hub_server(database_url, root, broker) as base, \
                httpx.Client(base_url=base, timeout=60, headers=api_key(key)) as client:
            register_purpose(client)
            devices = provision(client, 1000)
            ingest_figures(backend, database_url, tmp, base, key, client, broker, root, devices,
                           readings, mqtt_count)
            # The queries are timed from a client as light as a dashboard's: the ingest
            # phase's garbage is collected and what is left moved out of the collector's
            # sight, or its collections (2 million objects: +200 ms on the aggregate) would
            # be timed with the hub.
            gc.collect()
            gc.freeze()
            entity = f"/ngsi-ld/v1/entities/urn:ngsi-ld:AirQualityObserved:{devices[0]}"
            print(f"GET one entity      median {median_ms(lambda: client.get(entity), 300):.2f}"
                  " ms", flush=True)
            create_query_entities(client, query_entities)
            params = {"type": "BenchSensor", "q": "temperature>=20;status==\"ok\"",
                      "count": "true", "limit": 100}
            print(f"q over {query_entities:,} entities  median "
                  f"{median_ms(lambda: client.get('/ngsi-ld/v1/entities', params=params), 20):.1f}"
                  " ms (first page of 100 + count)", flush=True)
            if backend == "postgres":
                seconds = load_history(database_url, query_entities, history_rows)
                settled = compact_rollups(database_url)
                print(f"loaded {history_rows:,} history rows in {seconds:.0f} s; compacted their"
                      f" rollups, vacuumed and checkpointed in {settled:.0f} s", flush=True)
                runs = [hourly_day_aggregate(client, query_entities) * 1000 for _ in range(5)]
                print(f"hourly avg per sensor, one day, {query_entities:,} sensors over "
                      f"{history_rows:,} rows: median {statistics.median(runs):.0f} ms of 5 runs"
                      f" ({', '.join(f'{run:.0f}' for run in runs)})", flush=True)
            gc.unfreeze()


@contextmanager
def _nothing(value: str) -> Iterator[str]:
    yield value


def run_from_command_line(run: Callable[[str, bool], None], doc: str) -> None:
    """The command line of every benchmark: ``--backend`` sqlite, postgres or both, and
    ``--quick`` for a smoke run; ``run(backend, quick)`` runs one backend."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    args = parser.parse_args()
    for backend in ("sqlite", "postgres") if args.backend == "both" else (args.backend,):
        run(backend, args.quick)


if __name__ == "__main__":
    run_from_command_line(run_backend, __doc__ or "")
