"""The hub driven by an unchanged NGSI-LD client library (ngsildclient) over real HTTP.

The hub runs under uvicorn on a local port, on SQLite and on PostgreSQL; the client is used
exactly as its documentation shows. What the client does that the hub refuses is a hub bug.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import uvicorn
from ngsildclient import Client, Entity
from ngsildclient.api.exceptions import (
    NgsiAlreadyExistsError,
    NgsiBadRequestDataError,
    NgsiResourceNotFoundError,
)

from tests.conftest import operator_headers
from urbanhub.api.app import create_app
from urbanhub.hub.runtime import Hub

ENV = ("https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/"
       "master/context.jsonld")
CORE = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"


@pytest.fixture
def broker(hub: Hub) -> Iterator[int]:
    """The real app under uvicorn on a free port of 127.0.0.1; yields the port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(hub.settings, hub=hub),
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield sock.getsockname()[1]
    server.should_exit = True
    thread.join(timeout=30)
    sock.close()


class ApiKeyAuth(requests.auth.AuthBase):
    """How a requests-based client (ngsildclient) sends an Urbanhub key and purpose."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers.update(self.headers)
        return request


@pytest.fixture
def client(broker: int, hub: Hub) -> Iterator[Any]:
    with Client(hostname="127.0.0.1", port=broker, verbose=False,
                custom_auth=ApiKeyAuth(operator_headers(hub))) as ngsi:
        yield ngsi


def air_quality(ref: str, pm25: float, no2: float = 22) -> Any:
    """A Smart Data Model AirQualityObserved built with the library's own helpers."""
    entity = Entity("AirQualityObserved", f"Riverton:{ref}", ctx=[ENV, CORE])
    entity.tprop("dateObserved", "2024-03-01T10:00:00Z")
    entity.prop("pm25", pm25, unitcode="GQ", observedat="2024-03-01T10:00:00Z")
    entity.prop("NO2", no2, unitcode="GQ", observedat="2024-03-01T10:00:00Z").prop(
        "accuracy", 0.95, nested=True)
    entity.gprop("location", (39.9, 116.4))
    entity.rel("refPointOfInterest", "PointOfInterest:Riverton:MarketSquare")
    return entity


def payload(entity: Any) -> dict[str, Any]:
    body: dict[str, Any] = entity.to_dict()
    return {k: v for k, v in body.items() if k != "@context"}


def test_create_retrieve_and_delete(client: Any) -> None:
    sent = air_quality("001", 12.5)
    assert client.create(sent) is True
    got = client.get(sent.id, ctx=ENV)
    assert payload(got) == payload(sent)
    assert client.exists(sent.id) is True
    with pytest.raises(NgsiAlreadyExistsError):
        client.create(sent)
    assert client.delete(sent) is True
    assert client.exists(sent.id) is False


def test_unknown_entity_is_the_clients_not_found(client: Any) -> None:
    with pytest.raises(NgsiResourceNotFoundError) as raised:
        client.get("urn:ngsi-ld:AirQualityObserved:Riverton:none")
    assert raised.value.problemdetails.status == 404
    with pytest.raises(NgsiResourceNotFoundError):
        client.entities.delete("urn:ngsi-ld:AirQualityObserved:Riverton:none")
    assert client.exists("urn:ngsi-ld:AirQualityObserved:Riverton:none") is False
    with pytest.raises(NgsiBadRequestDataError):
        client.get("not a uri")


def test_query_by_type_and_q_with_paging_and_count(client: Any) -> None:
    entities = [air_quality(f"{i:03d}", pm25=float(i)) for i in range(7)]
    result = client.create(entities)
    assert result.ok and result.n_ok == 7
    assert client.entities.count("AirQualityObserved", ctx=ENV) == 7
    # query() counts first, then walks pages of `limit` with offset
    found = client.query(type="AirQualityObserved", ctx=ENV, limit=3)
    assert sorted(e.id for e in found) == sorted(e.id for e in entities)
    dirty = client.query(type="AirQualityObserved", q="pm25>4", ctx=ENV)
    assert sorted(e["pm25.value"] for e in dirty) == [5.0, 6.0]
    head = client.query_head(type="AirQualityObserved", ctx=ENV, n=2)
    assert len(head) == 2
    # without the Smart Data Model context the type is another IRI: nothing matches
    assert client.count(type="AirQualityObserved") == 0


def test_single_update_and_upsert(client: Any) -> None:
    entity = air_quality("010", 12.5)
    client.create(entity)
    entity.prop("pm25", 30.0, unitcode="GQ", observedat="2024-03-01T11:00:00Z")
    assert client.update(entity) is True
    assert client.get(entity.id, ctx=ENV)["pm25.value"] == 30.0
    entity.prop("pm25", 31.0, unitcode="GQ", observedat="2024-03-01T12:00:00Z")
    assert client.upsert(entity) is True
    assert client.get(entity.id, ctx=ENV)["pm25.value"] == 31.0


def test_batch_upsert_update_and_delete(client: Any) -> None:
    first = [air_quality(f"b{i}", pm25=1.0) for i in range(3)]
    assert client.upsert(first).ok
    changed = [air_quality(f"b{i}", pm25=2.0) for i in range(4)]  # one is new
    result = client.upsert(changed, update=True)
    # 201 lists only the created entity (CIM 009 §6.15.3.1); the client counts that list
    assert result.ok and result.n_ok == 1
    assert all(client.get(e.id, ctx=ENV)["pm25.value"] == 2.0 for e in changed)

    keep = [air_quality(f"b{i}", pm25=3.0) for i in range(2)]
    # noOverwrite with only existing attributes: nothing to do, each entity reported (207)
    kept = client.update(keep, overwrite=False)
    assert kept.n_ok == 0 and [e["entityId"] for e in kept.errors] == [e.id for e in keep]
    assert client.get(keep[0].id, ctx=ENV)["pm25.value"] == 2.0
    assert client.update(keep).ok
    assert client.get(keep[0].id, ctx=ENV)["pm25.value"] == 3.0

    deleted = client.delete(changed)
    assert deleted.ok and deleted.n_ok == 4
    assert not any(client.exists(e.id) for e in changed)


def test_batch_errors_come_back_as_a_batch_result(client: Any) -> None:
    existing = air_quality("e1", 1.0)
    client.create(existing)
    partial = client.create([existing, air_quality("e2", 2.0)])
    assert partial.success == [air_quality("e2", 0).id]
    assert [e["entityId"] for e in partial.errors] == [existing.id]
    assert partial.errors[0]["error"]["type"].endswith("/AlreadyExists")
    # nothing succeeds: still a BatchOperationResult (207), which the client understands
    failed = client.create([existing])
    assert failed.n_ok == 0 and failed.n_err == 1
    gone = client.delete(["urn:ngsi-ld:AirQualityObserved:Riverton:none"])
    assert gone.n_err == 1 and gone.errors[0]["error"]["status"] == 404


def test_types_and_core_context_entities(client: Any) -> None:
    sensor = Entity("Sensor", "Riverton:s1")  # the library's default: the core context
    sensor.prop("temperature", 21.5, unitcode="CEL")
    client.create(sensor)
    client.create(air_quality("t1", 1.0))
    assert client.count(type="Sensor") == 1
    assert client.get(sensor.id)["temperature.value"] == 21.5
    types = client.types.list()
    assert "Sensor" in types
    assert "https://smartdatamodels.org/dataModel.Environment/AirQualityObserved" in types


def test_temporal_retrieval(client: Any) -> None:
    entity = air_quality("h1", 10.0)
    client.create(entity)
    for hour, value in ((11, 11.0), (12, 12.0)):
        entity.prop("pm25", value, unitcode="GQ", observedat=f"2024-03-01T{hour}:00:00Z")
        client.batch.update([entity])
    troe = client.temporal.get(entity.id, attrs=["pm25"], ctx=ENV)
    assert troe["id"] == entity.id
    values = sorted(troe["pm25"]["values"], key=lambda pair: pair[1])
    assert values == [[10.0, "2024-03-01T10:00:00Z"], [11.0, "2024-03-01T11:00:00Z"],
                      [12.0, "2024-03-01T12:00:00Z"]]


def test_temporal_query(client: Any) -> None:
    client.create(air_quality("h2", 10.0))
    troes = client.temporal.query(type="AirQualityObserved", ctx=ENV)
    assert [t["id"] for t in troes] == [air_quality("h2", 0).id]
