"""MQTT ingest through the local Mosquitto broker, on SQLite and PostgreSQL.

Each test uses its own topic root and client id, and removes its persistent session from
the broker at the end, so tests never see each other's messages.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from typer.testing import CliRunner

from tests.conftest import operator_headers
from tests.stakeholders import ensure_organisation
from tests.test_devices import ENV_LINK, SDM, audit_rows, device_body
from urbanhub.api.app import create_app
from urbanhub.cli import app as cli_app
from urbanhub.config import get_settings
from urbanhub.hub.runtime import Hub
from urbanhub.ingest.mqtt import MqttAdapter, _HubClient
from urbanhub.ingest.pipeline import IngestPipeline
from urbanhub.model.caller import Caller
from urbanhub.model.devices import DeviceStatus
from urbanhub.store.db import make_engine
from urbanhub.store.dead_letters import list_dead_letters
from urbanhub.store.entities import EntityStore

pytestmark = pytest.mark.mqtt
BROKER = "mqtt://127.0.0.1:1883"
SYSTEM = Caller.system("test")
EID = "urn:ngsi-ld:AirQualityObserved:aq-0001"


def wait_for(check: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def forget_session(client_id: str, port: int = 1883) -> None:
    """Connect once with a clean start and no expiry: the broker drops the session."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port, clean_start=True)
    client.loop_start()
    client.disconnect()
    client.loop_stop()


class Publisher:
    """A QoS 1 publisher that waits for every PUBACK before it reports done."""

    def __init__(self, port: int = 1883) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.infos: list[mqtt.MQTTMessageInfo] = []

    def send(self, topic: str, payload: bytes | str | float | None, qos: int = 1,
             properties: Properties | None = None) -> None:
        self.infos.append(self.client.publish(topic, payload, qos=qos, properties=properties))

    def close(self) -> None:
        for info in self.infos:
            info.wait_for_publish(10)
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def mqtt_hub(hub: Hub) -> Iterator[Hub]:
    """The hub set up for MQTT with a topic root and client id of its own."""
    tag = uuid.uuid4().hex[:10]
    hub.settings.mqtt_url = BROKER
    hub.settings.mqtt_topic_root = f"test-{tag}"
    hub.settings.mqtt_client_id = f"urbanhub-test-{tag}"
    hub.settings.ingest_flush_interval_s = 0.05
    yield hub
    forget_session(hub.settings.mqtt_client_id)


def provision(hub: Hub, device_id: str = "aq-0001", **extra: Any) -> str:
    """Provision a device of the environment department in-process; its device key."""
    ensure_organisation(hub)
    body = device_body(device_id, owner="environment", **extra)
    terms = hub.contexts.resolve(body.pop("@context"))
    return hub.devices.provision(SYSTEM, body, terms).key


def stored(hub: Hub, name: str = "pm25", entity_id: str = EID) -> list[Any]:
    with hub.store.read() as conn:
        return hub.store.history_rows(conn, [entity_id], [SDM + name], None, None)


def test_publish_then_read_through_ngsi_ld(mqtt_hub: Hub) -> None:
    root = mqtt_hub.settings.mqtt_topic_root
    provision(mqtt_hub)
    with TestClient(create_app(mqtt_hub.settings, hub=mqtt_hub),
                    headers=operator_headers(mqtt_hub)) as client:  # reads as a city operator
        wait_for(lambda: client.get("/health").json()["checks"]["broker"]["status"] == "up",
                 what="broker up")
        publisher = Publisher()
        publisher.send(f"{root}/devices/aq-0001/attrs",
                       orjson.dumps({"observedAt": "2024-03-01T10:00:00Z", "pm25": 12.3,
                                     "n": 40}))
        publisher.send(f"{root}/devices/aq-0001/attrs/pm25", b"13.5")
        publisher.send(f"{root}/ngsi-ld/entities", orjson.dumps([
            {"id": EID, "type": "AirQualityObserved",
             SDM + "no2": {"type": "Property", "value": 41,
                           "observedAt": "2024-03-01T10:01:00Z"}}]))
        publisher.close()

        def arrived() -> dict[str, Any] | None:
            entity: dict[str, Any] = client.get(f"/ngsi-ld/v1/entities/{EID}",
                                                headers=ENV_LINK).json()
            return entity if entity.get("pm25", {}).get("value") == 13.5 and entity.get(
                "no2", {}).get("value") == 41 else None

        entity = wait_for(arrived, what="readings in the entity")
        assert entity["pm25"]["unitCode"] == "GQ"
        assert [r.value_num for r in stored(mqtt_hub)] == [12.3, 13.5]
        assert [r.value_num for r in stored(mqtt_hub, "no2")] == [40.0, 41.0]
        health = client.get("/health").json()
        assert health["ingest"]["mqtt_messages"] == 3
        assert health["checks"]["broker"]["clientId"] == mqtt_hub.settings.mqtt_client_id


def test_malformed_messages_are_dead_lettered_and_consumer_goes_on(mqtt_hub: Hub) -> None:
    root = mqtt_hub.settings.mqtt_topic_root
    provision(mqtt_hub)
    with TestClient(create_app(mqtt_hub.settings, hub=mqtt_hub)) as client:
        wait_for(lambda: client.get("/health").json()["checks"]["broker"]["status"] == "up",
                 what="broker up")
        bad = [
            (f"{root}/devices/aq-0001/attrs", b"{not json", "not JSON"),
            (f"{root}/devices/aq-0001/attrs", b"\xff\x00\x01", "not JSON"),
            (f"{root}/devices/ghost/attrs", b'{"pm25": 1}', "unknown device 'ghost'"),
            (f"{root}/devices/aq-0001/attrs", b'{"so2": 1}', "'so2' is not declared"),
            (f"{root}/devices/aq-0001/attrs/so2", b"1", "'so2' is not declared"),
            (f"{root}/devices/aq-0001/status", b"{}", "is not"),
            (f"{root}/devices/aq-0001/attrs", b'{"pm25": "high"}', "expected a number"),
            (f"{root}/devices/aq-0001/attrs", b'{"pm25": 1, "observedAt": "noon"}', "noon"),
            (f"{root}/devices/aq-0001/attrs", b"[1, 2]", "JSON object"),
            (f"{root}/ngsi-ld/entities", b'{"id": "urn:x:y", "p": {"type": "Property"}}',
             "no 'value'"),
            (f"{root}/ngsi-ld/other", b"{}", "no ingest route"),
        ]
        publisher = Publisher()
        for topic, payload, _ in bad:
            publisher.send(topic, payload)
        publisher.send(f"{root}/devices/aq-0001/attrs",
                       b'{"pm25": 7, "observedAt": "2024-03-01T11:00:00Z"}')
        publisher.close()
        wait_for(lambda: stored(mqtt_hub), what="the valid message after the bad ones")
        letters = wait_for(lambda: (lambda got: got if len(got) >= len(bad) else None)(
            client.get("/ingest/v1/dead-letters", params={"limit": 50}).json()),
            what="dead letters")
        assert len(letters) == len(bad)
        assert {letter["source"] for letter in letters} == {"mqtt"}
        seen = {(letter["topic"], letter["reason"]) for letter in letters}
        for topic, _, reason in bad:
            assert any(t == topic and reason in r for t, r in seen), (topic, reason, seen)
        binary = next(letter for letter in letters if letter["payloadEncoding"] == "base64")
        assert binary["payload"] == "/wAB"
        health = client.get("/health").json()
        assert health["deadLetters"] == len(bad)
        assert health["ingest"]["mqtt_dead_letters"] == len(bad)
        assert health["ingest"]["mqtt_messages"] == len(bad) + 1


def _publish_series(root: str, start: int, stop: int, publisher: Publisher,
                    pause_s: float = 0.0) -> None:
    base = datetime(2024, 3, 1, tzinfo=UTC)
    for index in range(start, stop):
        at = (base + timedelta(seconds=index)).isoformat().replace("+00:00", "Z")
        publisher.send(f"{root}/devices/aq-0001/attrs",
                       orjson.dumps({"observedAt": at, "pm25": index}))
        if pause_s:
            time.sleep(pause_s)


def test_restart_while_publishing_loses_nothing(mqtt_hub: Hub) -> None:
    provision(mqtt_hub)
    root = mqtt_hub.settings.mqtt_topic_root
    total = 600
    first = mqtt_hub.mqtt_adapter()
    assert first is not None
    first.start()
    wait_for(lambda: first.status()["status"] == "up", what="first adapter up")
    publisher = Publisher()
    sender = threading.Thread(target=_publish_series,
                              args=(root, 0, total, publisher, 0.002))
    sender.start()
    wait_for(lambda: len(stored(mqtt_hub)) >= 100, what="some readings before the restart")
    first.stop()  # graceful: commits and acknowledges what it holds; the rest stays queued
    before = len(stored(mqtt_hub))
    time.sleep(0.2)  # the broker queues what is published meanwhile
    second = mqtt_hub.mqtt_adapter()
    assert second is not None
    second.start()
    try:
        sender.join(30)
        publisher.close()
        wait_for(lambda: len(stored(mqtt_hub)) >= total, timeout=30, what="every reading")
        time.sleep(0.3)  # a duplicate delivery would show up now
        rows = stored(mqtt_hub)
        assert before < total
        assert sorted(r.value_num for r in rows) == [float(i) for i in range(total)]
        assert mqtt_hub.metrics.snapshot()["readings_stored"] == total
    finally:
        second.stop()


def test_uncommitted_batch_is_redelivered_after_a_crash(mqtt_hub: Hub, tmp_path: Path) -> None:
    """A hub that cannot commit never acknowledges: the next one gets every message."""
    provision(mqtt_hub)
    root = mqtt_hub.settings.mqtt_topic_root
    broken = EntityStore(make_engine(f"sqlite:///{tmp_path}/missing/dir/hub.db"))
    failing = MqttAdapter(mqtt_hub.settings, IngestPipeline(broken, mqtt_hub.metrics,
                                                            mqtt_hub.devices, mqtt_hub.audit),
                          mqtt_hub.readings, mqtt_hub.metrics)
    failing.start()
    wait_for(lambda: failing.status()["status"] == "up", what="failing adapter up")
    publisher = Publisher()
    _publish_series(root, 0, 20, publisher)
    publisher.close()
    wait_for(lambda: mqtt_hub.metrics.snapshot().get("mqtt_flush_errors", 0) >= 2,
             what="failed flushes")
    failing.stop(timeout_s=0.2)  # the batch is abandoned without acknowledgement
    assert stored(mqtt_hub) == []
    healthy = mqtt_hub.mqtt_adapter()
    assert healthy is not None
    healthy.start()
    try:
        wait_for(lambda: len(stored(mqtt_hub)) == 20, what="redelivered readings")
        assert sorted(r.value_num for r in stored(mqtt_hub)) == [float(i) for i in range(20)]
    finally:
        healthy.stop()


def test_every_publish_form_is_stored_and_acknowledged_once(mqtt_hub: Hub) -> None:
    """QoS 0, QoS 1, and MQTT 5 properties (paho's own receive path) all arrive; the
    acknowledgements reach the broker, so a hub with the same session gets nothing again."""
    provision(mqtt_hub)
    root = mqtt_hub.settings.mqtt_topic_root
    first = mqtt_hub.mqtt_adapter()
    assert first is not None
    first.start()
    wait_for(lambda: first.status()["status"] == "up", what="adapter up")
    with_properties = Properties(PacketTypes.PUBLISH)
    with_properties.ContentType = "application/json"
    with_properties.UserProperty = ("site", "north")
    publisher = Publisher()
    _publish_series(root, 0, 50, publisher)
    for index in range(50, 60):
        at = f"2024-03-01T00:01:{index - 50:02d}Z"
        publisher.send(f"{root}/devices/aq-0001/attrs",
                       orjson.dumps({"observedAt": at, "pm25": index}), qos=index % 2,
                       properties=with_properties)
    publisher.send(f"{root}/devices/aq-0001/attrs/pm25", b"60", qos=0)
    publisher.close()
    wait_for(lambda: len(stored(mqtt_hub)) == 61, what="every reading")
    first.stop()
    assert sorted(r.value_num for r in stored(mqtt_hub)) == [float(i) for i in range(61)]
    second = mqtt_hub.mqtt_adapter()
    assert second is not None
    second.start()
    try:
        wait_for(lambda: second.status()["status"] == "up", what="second adapter up")
        time.sleep(0.5)  # an unacknowledged message would be redelivered by now
        assert mqtt_hub.metrics.snapshot()["mqtt_messages"] == 61
    finally:
        second.stop()


def test_topic_that_is_not_utf8_is_dead_lettered(hub: Hub) -> None:
    """Brokers should refuse such topics; if one gets through it is refused, not fatal."""
    batch = hub.readings.mqtt_messages([(b"urbanhub/devices/\xff/attrs", b'{"pm25": 1}', 0.0),
                                        (b"urbanhub/\xfe", b"{}", 0.0)], "urbanhub")
    assert batch.readings == []
    assert [r.topic for r in batch.rejected] == ["urbanhub/devices/\\xff/attrs",
                                                  "urbanhub/\\xfe"]
    assert "unknown device" in batch.rejected[0].reason
    assert "no ingest route" in batch.rejected[1].reason


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs the mosquitto binary")
def test_broker_down_at_start_then_back(mqtt_hub: Hub, tmp_path: Path) -> None:
    port = _free_port()
    mqtt_hub.settings.mqtt_url = f"mqtt://127.0.0.1:{port}"
    root = mqtt_hub.settings.mqtt_topic_root
    with TestClient(create_app(mqtt_hub.settings, hub=mqtt_hub),
                    headers=operator_headers(mqtt_hub)) as client:
        health = client.get("/health")
        assert health.status_code == 200
        assert health.json()["checks"]["broker"]["status"] == "down"
        provision(mqtt_hub)
        config = tmp_path / "mosquitto.conf"
        config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
        broker = subprocess.Popen(["mosquitto", "-c", str(config)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: client.get("/health").json()["checks"]["broker"]["status"]
                     == "up", timeout=20, what="reconnection")
            publisher = Publisher(port)
            publisher.send(f"{root}/devices/aq-0001/attrs/pm25", b"3.5")
            publisher.close()
            wait_for(lambda: stored(mqtt_hub), what="reading after reconnection")
        finally:
            broker.terminate()
            broker.wait(10)


def test_readings_of_devices_that_may_not_write_are_dead_lettered(mqtt_hub: Hub) -> None:
    """The broker let them through (it allows anyone here): the hub's gate refuses them,
    dead-letters each message and audits the batch."""
    provision(mqtt_hub)
    provision(mqtt_hub, "cam-0001", entityId="urn:ngsi-ld:AirQualityObserved:cam-0001",
              attributes=[{"object_id": "pic", "name": "image"}])
    mqtt_hub.devices.set_status(SYSTEM, "aq-0001", DeviceStatus.SUSPENDED, "battery leak")
    root = mqtt_hub.settings.mqtt_topic_root
    adapter = mqtt_hub.mqtt_adapter()
    assert adapter is not None
    adapter.start()
    try:
        wait_for(lambda: adapter.status()["status"] == "up", what="adapter up")
        publisher = Publisher()
        publisher.send(f"{root}/devices/aq-0001/attrs",
                       b'{"pm25": 1, "observedAt": "2024-03-01T10:00:00Z"}')
        publisher.send(f"{root}/devices/aq-0001/attrs/pm25", b"2")
        publisher.send(f"{root}/devices/cam-0001/attrs/pic", b'"data:image/png;base64,AAAA"')
        publisher.send(f"{root}/ngsi-ld/entities", orjson.dumps({
            "id": EID, SDM + "pm25": {"type": "Property", "value": 3}}))
        publisher.close()

        def letters() -> list[dict[str, Any]]:
            with mqtt_hub.store.read() as conn:
                return list_dead_letters(conn, limit=10)

        found = wait_for(lambda: (lambda got: got if len(got) >= 4 else None)(letters()),
                         what="dead letters")
        assert sorted(letter["reason"] for letter in found) == [
            "device aq-0001 is suspended", "device aq-0001 is suspended",
            "device aq-0001 is suspended",
            "device cam-0001 awaits the privacy board's approval (high risk tier)"]
        assert stored(mqtt_hub) == []
        refused = [g for entry in audit_rows(mqtt_hub, "ingest.refused")
                   for g in entry["details"]["refused"]]
        assert {(g["device"], g["reason"]) for g in refused} == {
            ("aq-0001", "suspended"), ("cam-0001", "pending_approval")}
        assert sum(g["count"] for g in refused) == 4
        assert {e["actor"] for e in audit_rows(mqtt_hub, "ingest.")} == {"system:mqtt"}

        mqtt_hub.devices.set_status(SYSTEM, "aq-0001", DeviceStatus.ACTIVE)
        publisher = Publisher()
        publisher.send(f"{root}/devices/aq-0001/attrs/pm25", b"5")
        publisher.close()
        assert [r.value_num for r in wait_for(lambda: stored(mqtt_hub),
                                              what="a reading after reactivation")] == [5.0]
    finally:
        adapter.stop()


def _start_broker(folder: Path, port: int, settings: str) -> subprocess.Popen[bytes]:
    """A Mosquitto of the test's own; as root it keeps root (else it could not read the
    files the test wrote in its private folder)."""
    config = folder / "mosquitto.conf"
    user = pwd.getpwuid(os.getuid()).pw_name
    config.write_text(f"listener {port} 127.0.0.1\npersistence false\nuser {user}\n{settings}")
    broker = subprocess.Popen(["mosquitto", "-c", str(config)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    for _ in range(100):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return broker
        time.sleep(0.05)
    broker.terminate()
    raise AssertionError("the private Mosquitto did not start")


def _login(port: int, user: str | None, password: str | None) -> tuple[mqtt.Client, str]:
    """Connect as ``user``; the client (connected or not) and the broker's answer."""
    answers: list[str] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if user is not None:
        client.username_pw_set(user, password)
    client.on_connect = lambda _c, _u, _f, reason, _p: answers.append(str(reason))
    client.connect("127.0.0.1", port)
    client.loop_start()
    wait_for(lambda: answers, what=f"the broker's answer to {user}")
    return client, answers[0]


@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs the mosquitto binary")
def test_the_generated_mosquitto_config_authenticates_devices_and_confines_them(
        mqtt_hub: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    own_key = provision(mqtt_hub)
    provision(mqtt_hub, "aq-0002")
    suspended_key = provision(mqtt_hub, "aq-0003")
    mqtt_hub.devices.set_status(SYSTEM, "aq-0003", DeviceStatus.SUSPENDED)
    provision(mqtt_hub, "aq-0004", transport="HTTP")
    port = _free_port()
    root = mqtt_hub.settings.mqtt_topic_root
    mqtt_hub.settings.mqtt_url = f"mqtt://urbanhub:hub%20secret@127.0.0.1:{port}"
    monkeypatch.setenv("URBANHUB_DATABASE_URL", mqtt_hub.settings.database_url)
    monkeypatch.setenv("URBANHUB_MQTT_URL", mqtt_hub.settings.mqtt_url)
    monkeypatch.setenv("URBANHUB_MQTT_TOPIC_ROOT", root)
    get_settings.cache_clear()
    passwords, acl = tmp_path / "passwd", tmp_path / "acl"
    try:
        written = CliRunner().invoke(cli_app, ["devices", "mosquitto-config", "--passwords",
                                               str(passwords), "--acl", str(acl)])
    finally:
        get_settings.cache_clear()
    assert written.exit_code == 0, written.output
    assert "wrote 2 device accounts and the hub user urbanhub" in written.output
    assert "left out aq-0003: suspended" in written.output
    assert [line.split(":")[0] for line in passwords.read_text().splitlines()] == [
        "urbanhub", "aq-0001", "aq-0002"]
    assert oct(passwords.stat().st_mode & 0o777) == "0o640"
    assert f"user aq-0001\ntopic write {root}/devices/aq-0001/attrs\n" in acl.read_text()

    broker = _start_broker(tmp_path, port, f"allow_anonymous false\npassword_file {passwords}"
                                           f"\nacl_file {acl}\n")
    adapter = mqtt_hub.mqtt_adapter()
    assert adapter is not None
    adapter.start()  # the hub logs in with the user and password of URBANHUB_MQTT_URL
    clients: list[mqtt.Client] = []
    try:
        wait_for(lambda: adapter.status()["status"] == "up", what="the hub logged in")
        for user, password in (("aq-0001", own_key[:-1] + "x"), ("aq-0003", suspended_key),
                               ("aq-0001", None), (None, None)):
            refused, answer = _login(port, user, password)
            clients.append(refused)
            assert answer in ("Bad user name or password", "Not authorized"), (user, answer)
        device, answer = _login(port, "aq-0001", own_key)
        clients.append(device)
        assert answer == "Success"
        sent = [device.publish(f"{root}/devices/aq-0002/attrs/pm25", b"66", qos=1),
                device.publish(f"{root}/devices/aq-0001/status", b"{}", qos=1),
                device.publish(f"{root}/devices/aq-0001/attrs/pm25", b"11", qos=1)]
        for info in sent:
            info.wait_for_publish(10)
        wait_for(lambda: stored(mqtt_hub), what="the device's reading on its own topic")
        # Published before it on the same connection: the hub would have received it first.
        assert stored(mqtt_hub, entity_id="urn:ngsi-ld:AirQualityObserved:aq-0002") == []
        assert [r.value_num for r in stored(mqtt_hub)] == [11.0]
        assert mqtt_hub.metrics.snapshot()["mqtt_messages"] == 1
    finally:
        for client in clients:
            client.disconnect()
            client.loop_stop()
        adapter.stop()
        broker.terminate()
        broker.wait(10)


class _TrickleSocket:
    """A non-blocking socket whose bytes arrive in the given pieces, one piece per
    ``recv`` at most, with 'nothing yet' (BlockingIOError) where a piece is None."""

    def __init__(self, pieces: list[bytes | None]) -> None:
        self.pieces = pieces
        self.calls = 0

    def recv(self, size: int) -> bytes:
        self.calls += 1
        if not self.pieces:
            raise BlockingIOError
        piece = self.pieces[0]
        if piece is None:
            self.pieces.pop(0)
            raise BlockingIOError
        taken, rest = piece[:size], piece[size:]
        if rest:
            self.pieces[0] = rest
        else:
            self.pieces.pop(0)
        return taken

    def close(self) -> None:
        self.pieces = []


def _publish_packet(topic: bytes, payload: bytes) -> bytes:
    """An MQTT 5 PUBLISH at QoS 0 with no properties, as devices send it."""
    body = len(topic).to_bytes(2, "big") + topic + b"\x00" + payload
    assert len(body) < 128
    return bytes([0x30, len(body)]) + body


def test_the_receive_path_reads_many_packets_a_call_and_resumes_split_ones() -> None:
    """Packets several to a read, split across reads and across 'nothing yet' all arrive
    whole and in order, in far fewer system calls than paho's three a packet."""
    packets = [_publish_packet(f"root/devices/d{n}/attrs".encode(), b'{"pm25": %d}' % n)
               for n in range(300)]
    stream = b"".join(packets)
    cut = len(stream) // 3 + 5  # inside a packet
    sock = _TrickleSocket([stream[:cut], None, stream[cut:cut + 7], None, stream[cut + 7:]])
    client = _HubClient(mqtt.CallbackAPIVersion.VERSION2, client_id="t", protocol=mqtt.MQTTv5)
    delivered: list[tuple[bytes, bytes, int, int]] = []
    client.deliver = lambda *message: delivered.append(message)
    client._sock = sock  # type: ignore[assignment]
    for _ in range(5):
        assert client.loop_read() == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
    assert [(t, p) for t, p, _, _ in delivered] == [
        (f"root/devices/d{n}/attrs".encode(), b'{"pm25": %d}' % n) for n in range(300)]
    assert sock.calls < 20
