"""MQTT adapter: subscribes to the device topics and feeds the ingest pipeline in batches.

Delivery guarantee: QoS 1 on a persistent MQTT 5 session with a stable client id, and
manual acknowledgements sent only after the batch holding a message is committed. A crash
or restart therefore loses nothing: the broker keeps unacknowledged and queued messages
and delivers them to the next hub that connects with the same client id.

Threads: paho's network loop only appends messages to a bounded buffer; a worker thread
maps and stores them every ``ingest_batch_size`` messages or ``ingest_flush_interval_s``
seconds. The MQTT 5 Receive Maximum (``mqtt_max_pending``) stops the broker from sending
more unacknowledged QoS 1 messages than the buffer holds; QoS 0 floods block the network
loop instead, so TCP pushes back on the broker. See docs/ingest.md.

Both threads share one GIL, so every microsecond the network thread spends on a message is
taken from storing: ``_HubClient`` receives the common PUBLISH without paho's per-message
objects and acknowledges a batch in one write.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from sqlalchemy import text

from urbanhub.config import Settings
from urbanhub.hub.metrics import Metrics
from urbanhub.ingest.pipeline import IngestPipeline, Rejected
from urbanhub.ingest.readings import Message, ReadingMapper
from urbanhub.model.devices import Sender

log = logging.getLogger("urbanhub.ingest.mqtt")

_NO_ACK = -1
_RETRY_MAX_S = 5.0
_RECV_CHUNK = 65536
_READ_BURST = 1000
_PUBACK = struct.Struct("!BBH")  # MQTT 5 PUBACK, reason "success" left out (remaining length 2)
#: The broker authenticated the publisher and its ACL ties each device to its own topics
#: (``urbanhub devices mosquitto-config``), so the topic's device id is taken as proven.
MQTT_SENDER = Sender.component("mqtt")


class _HubClient(mqtt.Client):
    """paho's client with a cheap receive path for the hub's messages and batched PUBACKs.

    With MQTT 5, paho builds a ``Properties`` and an ``MQTTMessage`` object for every PUBLISH
    and looks up topic callbacks: about 26 µs a message here against 6 µs for decoding it
    directly, and that time is taken from the storing thread (one GIL). Reads are buffered
    and go on while packets wait (see ``loop_read``, ``_sock_recv``). A PUBLISH at QoS 0
    or 1 without properties (what devices send) goes straight to ``deliver``; anything else
    takes paho's own path to ``on_message``. Acknowledgements of a batch are queued as one
    write instead of one wake-up and one ``send`` per message. This relies on paho 2.x
    internals (``_in_packet``, ``_handle_publish``, ``_packet_queue``); the MQTT tests cover
    both receive paths and the acknowledgements.
    """

    deliver: Callable[[bytes, bytes, int, int], None]  # topic, payload, qos, packet id

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._received = b""  # bytes read from the socket that paho has not asked for yet
        self._received_at = 0

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        """Read every packet that has arrived, not paho's one per ``select()`` wake-up.

        Stops when the socket has nothing more, or after ``_READ_BURST`` packets once the
        bytes already read are used up (so acknowledgements and pings still go out, and
        no read packet waits for the next ``select()``).
        """
        if self._sock is None:
            return mqtt.MQTTErrorCode.MQTT_ERR_NO_CONN
        count = 0
        while True:
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == mqtt.MQTTErrorCode.MQTT_ERR_AGAIN or self._sock is None:
                return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
            count += 1
            if count >= _READ_BURST and self._received_at >= len(self._received):
                return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS

    def _sock_recv(self, bufsize: int) -> bytes:
        """paho asks for a packet's first byte, its length and its body in three calls; a
        system call each cost more than decoding the message. Serve them from one read of up
        to ``_RECV_CHUNK`` bytes."""
        if self._received_at >= len(self._received):
            data = super()._sock_recv(_RECV_CHUNK)  # BlockingIOError when nothing waits
            if len(data) <= bufsize:
                return data
            self._received, self._received_at = data, 0
        start = self._received_at
        chunk = self._received[start:start + bufsize]
        self._received_at = start + len(chunk)
        return chunk

    def _sock_close(self) -> None:
        self._received, self._received_at = b"", 0  # a new connection starts afresh
        super()._sock_close()

    def _handle_publish(self) -> mqtt.MQTTErrorCode:
        packet = self._in_packet["packet"]
        qos = (self._in_packet["command"] >> 1) & 3
        topic_end = 2 + (packet[0] << 8 | packet[1]) if len(packet) >= 2 else 0
        props_at = topic_end + 2 * qos
        if qos == 2 or not topic_end or len(packet) <= props_at or packet[props_at]:
            return super()._handle_publish()  # properties, QoS 2 or malformed: paho decides
        mid = packet[topic_end] << 8 | packet[topic_end + 1] if qos else 0
        self.deliver(bytes(packet[2:topic_end]), bytes(packet[props_at + 1:]), qos, mid)
        return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS

    def ack_all(self, mids: list[int]) -> None:
        """PUBACK every packet id in one queued write (``ack`` wakes the loop per message)."""
        if mids:
            pack = _PUBACK.pack
            self._packet_queue(mqtt.PUBACK, b"".join([pack(mqtt.PUBACK, 2, mid) for mid in mids]),
                               0, 0)


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError(f"URBANHUB_MQTT_URL must be mqtt:// or mqtts://, got {url!r}")
        tls = parts.scheme in ("mqtts", "ssl")
        return cls(parts.hostname or "127.0.0.1", parts.port or (8883 if tls else 1883), tls,
                   unquote(parts.username) if parts.username else None,
                   unquote(parts.password) if parts.password else None)

    def display(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


class MqttAdapter:
    """One persistent subscription of the hub; ``start`` once, ``stop`` on shutdown."""

    def __init__(self, settings: Settings, pipeline: IngestPipeline, mapper: ReadingMapper,
                 metrics: Metrics) -> None:
        if not settings.mqtt_url:
            raise ValueError("MQTT is disabled (URBANHUB_MQTT_URL is empty)")
        self.address = BrokerAddress.parse(settings.mqtt_url)
        self.client_id = settings.mqtt_client_id
        self.root = settings.mqtt_topic_root
        self.pipeline = pipeline
        self.mapper = mapper
        self.metrics = metrics
        self.batch_size = max(1, settings.ingest_batch_size)
        self.flush_interval = settings.ingest_flush_interval_s
        self.max_pending = min(65535, max(settings.mqtt_max_pending, 2 * self.batch_size))
        self.session_expiry_s = settings.mqtt_session_expiry_s
        self.keepalive_s = settings.mqtt_keepalive_s
        self._buffer: list[Message] = []
        self._acks: list[int] = []  # parallel to _buffer: generation << 16 | mid, or _NO_ACK
        self._first_at = 0.0
        self._cond = threading.Condition()
        self._stopping = False
        self._abandon = threading.Event()
        self._disconnected = threading.Event()
        self._generation = 0
        self._connected = False
        self._last_error: str | None = None
        self._worker: threading.Thread | None = None
        self._client = self._make_client()

    # --- lifecycle -----------------------------------------------------------------------

    def _make_client(self) -> _HubClient:
        client = _HubClient(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                            protocol=mqtt.MQTTv5)
        client.manual_ack_set(True)
        client.reconnect_delay_set(min_delay=1, max_delay=5)
        if self.address.username:
            client.username_pw_set(self.address.username, self.address.password)
        if self.address.tls:
            client.tls_set()
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.deliver = self._receive
        return client

    def start(self) -> None:
        """Connect in the background; a broker that is down is retried until it is up."""
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = self.session_expiry_s
        properties.ReceiveMaximum = self.max_pending
        self._client.connect_async(self.address.host, self.address.port,
                                   keepalive=self.keepalive_s, clean_start=False,
                                   properties=properties)
        self._worker = threading.Thread(target=self._run, name="urbanhub-mqtt-ingest",
                                        daemon=True)
        self._worker.start()
        self._client.loop_start()
        log.info("MQTT ingest from %s as %s", self.address.display(), self.client_id)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop taking messages, commit and acknowledge what is buffered, then disconnect.

        Messages that arrive meanwhile stay unacknowledged in the broker's session, and so
        does a batch that cannot be committed within ``timeout_s``: the next start gets them.
        """
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._worker is not None:
            self._worker.join(timeout_s)
            if self._worker.is_alive():
                self._abandon.set()
                self._worker.join(_RETRY_MAX_S)
        if self._connected:
            self._client.disconnect()
            self._disconnected.wait(timeout_s)
        self._client.loop_stop()
        self._connected = False

    def status(self) -> dict[str, Any]:
        """Broker state for /health."""
        state: dict[str, Any] = {"status": "up" if self._connected else "down",
                                 "url": self.address.display(), "clientId": self.client_id,
                                 "pending": len(self._buffer)}
        if self._last_error and not self._connected:
            state["error"] = self._last_error
        return state

    # --- paho callbacks (network thread) ---------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _userdata: Any, flags: Any, reason: Any,
                    _properties: Any) -> None:
        if reason.is_failure:
            self._last_error = f"connection refused: {reason}"
            return
        self._generation = (self._generation + 1) & 0x7FFF
        options = SubscribeOptions(qos=1)
        client.subscribe([(f"{self.root}/devices/#", options),
                          (f"{self.root}/ngsi-ld/#", options)])
        self._connected = True
        self._last_error = None
        self.metrics.add("mqtt_connects")
        log.info("MQTT connected (session present: %s)", flags.session_present)

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: Any) -> None:
        self._last_error = f"cannot connect to {self.address.display()}"

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any,
                       _properties: Any) -> None:
        self._connected = False
        self._disconnected.set()
        if not self._stopping:
            self._last_error = f"disconnected: {reason}"
            log.warning("MQTT disconnected: %s", reason)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        """A message paho decoded itself (with properties); the rest come through ``deliver``."""
        self._receive(msg._topic, msg.payload, msg.qos, msg.mid)  # bytes: may not be UTF-8

    def _receive(self, topic: bytes, payload: bytes | bytearray, qos: int, mid: int) -> None:
        """Buffer one message; while the buffer is full the network thread waits here."""
        ack = (self._generation << 16 | mid) if qos else _NO_ACK
        with self._cond:
            buffer = self._buffer
            while len(buffer) >= self.max_pending and not self._stopping:
                self._cond.wait(0.5)
                buffer = self._buffer
            if self._stopping:
                return  # left unacknowledged: the broker delivers it again after restart
            if not buffer:
                self._first_at = time.monotonic()
            buffer.append((topic, payload, time.time()))
            self._acks.append(ack)
            if len(buffer) == self.batch_size:
                self._cond.notify_all()

    # --- worker thread -----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    pending = len(self._buffer)
                    if pending >= self.batch_size or (pending and (
                            self._stopping
                            or time.monotonic() - self._first_at >= self.flush_interval)):
                        break
                    if self._stopping:
                        return
                    wait = self.flush_interval if not pending else (
                        self._first_at + self.flush_interval - time.monotonic())
                    self._cond.wait(max(wait, 0.001))
                if pending <= self.batch_size:  # hand the lists over instead of copying
                    messages, self._buffer = self._buffer, []
                    acks, self._acks = self._acks, []
                else:
                    messages = self._buffer[:self.batch_size]
                    acks = self._acks[:self.batch_size]
                    del self._buffer[:self.batch_size]
                    del self._acks[:self.batch_size]
                self._first_at = time.monotonic()
                self._cond.notify_all()
            if not self._store(messages):
                return  # abandoned at shutdown: unacknowledged, so redelivered later
            self._acknowledge(acks)

    def _store(self, messages: list[Message]) -> bool:
        """Commit one batch, retrying until it is stored; False if abandoned at shutdown."""
        delay = 0.1
        attempts = 0
        while True:
            try:
                if attempts >= 2 and self._database_up():
                    self._store_one_by_one(messages)  # the batch itself is what fails
                else:
                    self._store_batch(messages)
                return True
            except Exception:  # the consumer must survive every failure; retried below
                attempts += 1
                self.metrics.add("mqtt_flush_errors")
                log.exception("MQTT batch of %d messages not stored (attempt %d)",
                              len(messages), attempts)
            if self._abandon.wait(delay):
                return False
            delay = min(delay * 2, _RETRY_MAX_S)

    def _store_batch(self, messages: list[Message]) -> None:
        batch = self.mapper.mqtt_messages(messages, self.root)
        report = self.pipeline.ingest(batch.readings, batch.rejected, batch.origins,
                                      sender=MQTT_SENDER)
        self.metrics.add("mqtt_messages", len(messages))
        self.metrics.add("mqtt_dead_letters", len(report.rejected))

    def _store_one_by_one(self, messages: list[Message]) -> None:
        """Isolate the message that breaks its batch and dead-letter it with the error."""
        for message in messages:
            try:
                self._store_batch([message])
            except Exception as exc:  # this one message cannot be stored: dead-letter it
                topic = message[0].decode("utf-8", "backslashreplace")
                log.exception("MQTT message on %s cannot be stored", topic)
                self.pipeline.ingest([], [Rejected(f"could not be stored: {exc}", bytes(message[1]),
                                                   "mqtt", topic)], sender=MQTT_SENDER)
                self.metrics.add("mqtt_messages")
                self.metrics.add("mqtt_dead_letters")

    def _database_up(self) -> bool:
        try:
            with self.pipeline.store.read() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:  # any failure means "not reachable" here
            return False

    def _acknowledge(self, acks: list[int]) -> None:
        """Acknowledge committed messages received on the current connection.

        Messages from an earlier connection are redelivered by the broker on reconnect,
        and their packet ids may already name other messages, so they are not acknowledged.
        """
        generation = self._generation
        self._client.ack_all([value & 0xFFFF for value in acks
                              if value >= 0 and value >> 16 == generation])
