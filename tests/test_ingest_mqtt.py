"""MQTT ingest through the local Mosquitto broker, on SQLite and PostgreSQL.

Each test uses its own topic root and client id, and removes its persistent session from
the broker at the end, so tests never see each other's messages.
"""

from __future__ import annotations

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

from tests.conftest import operator_headers
from tests.test_devices import ENV_LINK, SDM, device_body
from urbanhub.api.app import create_app
from urbanhub.hub.runtime import Hub
from urbanhub.ingest.mqtt import MqttAdapter
from urbanhub.ingest.pipeline import IngestPipeline
from urbanhub.model.caller import Caller
from urbanhub.store.db import make_engine
from urbanhub.store.entities import EntityStore

pytestmark = pytest.mark.mqtt
BROKER = "mqtt://127.0.0.1:1883"
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


def provision(hub: Hub, device_id: str = "aq-0001") -> None:
    body = device_body(device_id)
    terms = hub.contexts.resolve(body.pop("@context"))
    hub.devices.provision(Caller.system("test"), body, terms)


def stored(hub: Hub, name: str = "pm25", entity_id: str = EID) -> list[Any]:
    with hub.store.read() as conn:
        return hub.store.history_rows(conn, [entity_id], [SDM + name], None, None)


def test_publish_then_read_through_ngsi_ld(mqtt_hub: Hub) -> None:
    root = mqtt_hub.settings.mqtt_topic_root
    with TestClient(create_app(mqtt_hub.settings, hub=mqtt_hub),
                    headers=operator_headers(mqtt_hub)) as client:
        assert client.post("/ingest/v1/devices", json=device_body()).status_code == 201
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
    with TestClient(create_app(mqtt_hub.settings, hub=mqtt_hub),
                    headers=operator_headers(mqtt_hub)) as client:
        assert client.post("/ingest/v1/devices", json=device_body()).status_code == 201
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
    failing = MqttAdapter(mqtt_hub.settings, IngestPipeline(broken, mqtt_hub.metrics),
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
        assert client.post("/ingest/v1/devices", json=device_body()).status_code == 201
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
