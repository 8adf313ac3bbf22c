"""File import on SQLite and PostgreSQL: Beijing PRSA CSV, GeoJSON, NGSI-LD, bad input."""

from __future__ import annotations

import csv
import gzip
import json
import statistics
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EXTERNAL
from urbanhub.hub.runtime import Hub
from urbanhub.ingest.importer import (
    BEIJING_STATIONS,
    ColumnMapping,
    CsvMapping,
    ImportFailed,
    ImportOptions,
    beijing_prsa_mapping,
    compass_degrees,
    detect_format,
    feature_entity,
    import_csv,
    import_file,
    import_geojson,
    import_ngsild,
    parse_attr_option,
    parse_bound,
    parse_timezone,
)
from urbanhub.model.caller import Caller
from urbanhub.store.dead_letters import list_dead_letters

BEIJING = EXTERNAL / "beijing-air-quality"
AOTI = BEIJING / "PRSA_Data_Aotizhongxin_20130301-20170228.csv.gz"
ENV = "https://smartdatamodels.org/dataModel.Environment/"
ENV_CONTEXT = ("https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/"
               "master/context.jsonld")
STATION = "urn:ngsi-ld:AirQualityObserved:beijing-Aotizhongxin"
COLUMNS = {"PM2.5": ENV + "pm25", "PM10": ENV + "pm10", "SO2": ENV + "so2", "NO2": ENV + "no2",
           "CO": ENV + "co", "O3": ENV + "o3", "TEMP": ENV + "temperature",
           "RAIN": ENV + "precipitation", "WSPM": ENV + "windSpeed", "wd": ENV + "windDirection"}
SHANGHAI = parse_timezone("+08:00")
CALLER = Caller.system("test")


def history(hub: Hub, entity_id: str, name: str | None = None) -> list[Any]:
    with hub.store.read() as conn:
        return hub.store.history_rows(conn, [entity_id], [name] if name else None, None, None)


def dead_letters(hub: Hub) -> list[dict[str, Any]]:
    with hub.store.read() as conn:
        return list_dead_letters(conn, limit=1000)


# --- the Beijing PRSA preset against an independent count ---------------------------------

@pytest.fixture(scope="module")
def aoti_2014() -> list[dict[str, str]]:
    if not AOTI.exists():
        pytest.skip("the shared Beijing data set is not available")
    with gzip.open(AOTI, "rt", newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["year"] == "2014"]


def test_beijing_station_year_matches_an_independent_count(
        hub: Hub, aoti_2014: list[dict[str, str]]) -> None:
    mapping = beijing_prsa_mapping()
    mapping.since = parse_bound("2014-01-01", mapping.timezone)
    mapping.until = parse_bound("2015-01-01", mapping.timezone)
    report = import_csv(hub, AOTI, mapping, batch_size=7000)

    expected = {column: sum(row[column] != "NA" for row in aoti_2014) for column in COLUMNS}
    stored = Counter(row.name for row in history(hub, STATION))
    for column, iri in COLUMNS.items():
        assert stored[iri] == expected[column], column
    assert report.rows == 35064
    assert report.skipped == 35064 - len(aoti_2014) == 35064 - 8760
    assert report.rejected == 0 and report.entities == 1
    terms = hub.contexts.resolve(mapping.context)
    measured = {terms.expand(m.name) for m in mapping.attributes}
    assert report.stored == report.readings == sum(stored[iri] for iri in measured)
    assert report.missing == sum(row[c] == "NA" for row in aoti_2014
                                 for c in (*COLUMNS, "PRES", "DEWP"))

    # Hourly readings -> daily means, in Beijing local days, against the csv module.
    by_day: dict[tuple[int, int, int], list[float]] = defaultdict(list)
    for row in aoti_2014:
        if row["PM2.5"] != "NA":
            by_day[(int(row["year"]), int(row["month"]), int(row["day"]))].append(
                float(row["PM2.5"]))
    for year, month, day in [(2014, 1, 1), (2014, 2, 25), (2014, 7, 14), (2014, 12, 31)]:
        start = datetime(year, month, day, tzinfo=SHANGHAI)
        with hub.store.read() as conn:
            rows = hub.store.history_rows(conn, [STATION], [ENV + "pm25"], start,
                                          start + timedelta(days=1))
        assert len(rows) == len(by_day[(year, month, day)])
        assert statistics.fmean(r.value_num for r in rows) == pytest.approx(
            statistics.fmean(by_day[(year, month, day)]), abs=1e-9)

    first = history(hub, STATION, ENV + "pm25")[0]
    assert first.observed_at == datetime(2013, 12, 31, 16, tzinfo=UTC)  # 00:00 in Beijing
    instance = first.instance if isinstance(first.instance, dict) else json.loads(first.instance)
    assert instance["unitCode"] == "GQ"

    entity = hub.queries.get_entity(CALLER, STATION)
    assert entity["type"] == [ENV + "AirQualityObserved"]
    latitude, longitude, _ = BEIJING_STATIONS["Aotizhongxin"]
    location = entity["attrs"]["https://uri.etsi.org/ngsi-ld/location"][""]["value"]
    assert location == {"type": "Point", "coordinates": [longitude, latitude]}

    again = import_csv(hub, AOTI, mapping)
    assert again.stored == 0 and again.entities == 0
    assert again.duplicates == again.readings == report.readings
    assert Counter(row.name for row in history(hub, STATION)) == stored


def test_preset_station_table_matches_the_shared_coordinates() -> None:
    table = BEIJING / "stations.csv"
    if not table.exists():
        pytest.skip("the shared Beijing data set is not available")
    with table.open(newline="") as handle:
        for row in csv.DictReader(handle):
            assert BEIJING_STATIONS[row["station"]] == (
                float(row["latitude"]), float(row["longitude"]), row["area"])


def test_compass_points_become_sdm_degrees() -> None:
    assert compass_degrees("N") == 0
    assert compass_degrees("ene") == 67.5
    assert compass_degrees("S") == 180
    assert compass_degrees("NNW") == -22.5
    with pytest.raises(ValueError):
        compass_degrees("up")


# --- CSV with bad rows, generic mapping ---------------------------------------------------

def write_gz(path: Path, text: str) -> Path:
    with gzip.open(path, "wt", newline="") as handle:
        handle.write(text)
    return path


def meter_mapping(**extra: Any) -> CsvMapping:
    return CsvMapping(entity_type="AirQualityObserved", id_column="sensor", time_column="time",
                      timezone=parse_timezone("Europe/Madrid"), context=ENV_CONTEXT,
                      attributes=[parse_attr_option("pm=pm25:GQ"),
                                  parse_attr_option("temp=temperature:CEL")], **extra)


def test_bad_rows_are_counted_dead_lettered_and_skipped(hub: Hub, tmp_path: Path) -> None:
    path = write_gz(tmp_path / "meters.csv.gz", (
        "sensor,time,pm,temp\n"
        "m1,2024-01-15T10:00:00,12.5,3.5\n"     # naive: Madrid local time (UTC+1)
        "m1,2024-01-15T11:00:00,abc,3.0\n"      # bad value
        "m1,yesterday,10,3.0\n"                 # bad time
        ",2024-01-15T12:00:00,10,3.0\n"         # no entity
        "m1,2024-01-15T13:00:00Z,NA,inf\n"      # a non-finite value rejects the row
        "m2,2024-07-01T10:00:00,8,NA\n"         # summer: UTC+2, missing temperature
        "urn:ngsi-ld:AirQualityObserved:m3,2024-01-15T10:00:00+00:00,9,1\n"))
    report = import_csv(hub, path, meter_mapping())
    assert (report.rows, report.rejected, report.missing, report.entities) == (7, 4, 1, 3)
    assert report.stored == 5
    assert len(report.errors) == 4 and any("abc" in e for e in report.errors)

    letters = dead_letters(hub)
    assert len(letters) == 4
    assert {d["source"] for d in letters} == {"file"}
    assert {d["topic"] for d in letters} == {"meters.csv.gz"}
    assert any(b'"abc"' in bytes(d["payload"]) for d in letters)

    m1 = history(hub, "urn:ngsi-ld:AirQualityObserved:m1", ENV + "pm25")
    assert [r.observed_at for r in m1] == [datetime(2024, 1, 15, 9, tzinfo=UTC)]
    m2 = history(hub, "urn:ngsi-ld:AirQualityObserved:m2")
    assert [r.observed_at for r in m2] == [datetime(2024, 7, 1, 8, tzinfo=UTC)]
    assert history(hub, "urn:ngsi-ld:AirQualityObserved:m3", ENV + "temperature")[0].value_num \
        == 1.0


def test_csv_with_time_parts_template_and_window(hub: Hub, tmp_path: Path) -> None:
    path = tmp_path / "counts.csv"
    path.write_text("site,y,m,d,h,cars\n"
                    "a,2024,3,1,0,10\n"
                    "a,2024,3,1,1,12\n"
                    "a,2024,3,2,0,14\n"
                    "b,2024,3,1,1,9\n")
    zone = parse_timezone("UTC")
    mapping = CsvMapping(entity_type="TrafficCount", id_template="urn:ngsi-ld:TrafficCount:{site}",
                         time_parts=("y", "m", "d", "h"),
                         attributes=[ColumnMapping("cars", "intensity")],
                         since=parse_bound("2024-03-01T01:00", zone),
                         until=parse_bound("2024-03-02", zone))
    report = import_csv(hub, path, mapping)
    assert (report.rows, report.skipped, report.stored, report.entities) == (4, 2, 2, 2)
    rows = history(hub, "urn:ngsi-ld:TrafficCount:a")
    assert [(r.observed_at.hour, r.value_num) for r in rows] == [(1, 12.0)]


def test_an_entity_the_model_refuses_rejects_its_rows(hub: Hub, tmp_path: Path) -> None:
    """A static attribute breaking the Smart Data Model: rows of that entity are refused."""
    path = tmp_path / "bins.csv"
    path.write_text("bin,time,fill\nb1,2024-01-01T00:00:00Z,0.5\nb1,2024-01-01T01:00:00Z,0.6\n")
    mapping = CsvMapping(
        entity_type="WasteContainer", id_column="bin", time_column="time",
        context="https://raw.githubusercontent.com/smart-data-models/dataModel.WasteManagement/"
                "master/context.jsonld",
        attributes=[ColumnMapping("fill", "fillingLevel")],
        static=lambda _id, _row: {"storedWasteKind": {"type": "Property", "value": "lava"}})
    report = import_csv(hub, path, mapping)
    assert (report.rejected, report.stored, report.entities) == (2, 0, 0)
    assert "could not be created" in report.errors[0]
    assert len(dead_letters(hub)) == 2


def test_mapping_errors_are_refused_before_reading(tmp_path: Path, hub: Hub) -> None:
    path = tmp_path / "x.csv"
    path.write_text("sensor,time,pm\nm1,2024-01-01T00:00:00Z,1\n")
    with pytest.raises(ImportFailed, match="temp"):
        import_csv(hub, path, meter_mapping())
    both = CsvMapping(entity_type="T", id_column="sensor", id_template="x:{sensor}",
                      time_column="time", attributes=[ColumnMapping("pm", "pm")])
    with pytest.raises(ImportFailed, match="exactly one"):
        import_csv(hub, path, both)
    with pytest.raises(ImportFailed, match="needs a mapping"):
        import_file(hub, path, ImportOptions())
    assert dead_letters(hub) == []


@pytest.mark.parametrize("text", ["pm25", "=pm25", "PM2.5=", ""])
def test_bad_attr_options(text: str) -> None:
    with pytest.raises(ImportFailed):
        parse_attr_option(text)


def test_time_zones_and_bounds() -> None:
    assert parse_timezone("UTC+8").utcoffset(None) == timedelta(hours=8)
    assert parse_timezone("-03:30").utcoffset(None) == timedelta(hours=-3, minutes=-30)
    madrid = parse_timezone("Europe/Madrid")
    assert parse_bound("2024-07-01", madrid) == datetime(2024, 6, 30, 22, tzinfo=UTC)
    with pytest.raises(ImportFailed):
        parse_timezone("Mars/Olympus")
    with pytest.raises(ImportFailed):
        parse_bound("soon", UTC)


# --- GeoJSON ------------------------------------------------------------------------------

def test_geojson_features_become_entities(hub: Hub, tmp_path: Path) -> None:
    features: dict[str, Any] = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [
            [[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]},
         "properties": {"code": "P1", "name": "Central Park", "area ha": 12.5, "type": "urban",
                        "closed": None, "facilities": ["toilets", "cafe"]}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [0.5, 0.5]},
         "properties": {"code": "P2", "name": "Pocket park"}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [0.5]},
         "properties": {"code": "P3"}},                       # invalid geometry
        {"type": "Feature", "geometry": None, "properties": {"name": "no code"}},
        {"type": "Polygon", "coordinates": []},              # not a feature
    ]}
    path = tmp_path / "parks.geojson"
    path.write_text(json.dumps(features))
    assert detect_format(path) == "geojson"
    report = import_geojson(hub, path, entity_type="Park", id_property="code")
    assert (report.rows, report.entities, report.rejected) == (5, 2, 3)
    assert len(dead_letters(hub)) == 3

    park = hub.queries.get_entity(CALLER, "urn:ngsi-ld:Park:P1")
    vocab = "https://uri.etsi.org/ngsi-ld/default-context/"
    attrs = park["attrs"]
    assert attrs[vocab + "area_ha"][""]["value"] == 12.5
    assert attrs[vocab + "featureType"][""]["value"] == "urban"
    assert attrs[vocab + "facilities"][""]["value"] == ["toilets", "cafe"]
    assert vocab + "closed" not in attrs
    assert attrs["https://uri.etsi.org/ngsi-ld/location"][""]["value"]["type"] == "Polygon"

    features["features"][1]["properties"]["name"] = "Pocket park (renamed)"
    path.write_text(json.dumps(features))
    again = import_geojson(hub, path, entity_type="Park", id_property="code")
    assert again.entities == 2
    renamed = hub.queries.get_entity(CALLER, "urn:ngsi-ld:Park:P2")
    assert renamed["attrs"][vocab + "name"][""]["value"] == "Pocket park (renamed)"


def test_feature_ids_fall_back_to_feature_id_then_position() -> None:
    feature: dict[str, Any] = {"type": "Feature", "id": "north 1", "geometry": None,
                               "properties": {}}
    assert feature_entity(feature, 4, "Zone", None, "zones")["id"] == "urn:ngsi-ld:Zone:north-1"
    del feature["id"]
    assert feature_entity(feature, 4, "Zone", None, "zones")["id"] == "urn:ngsi-ld:Zone:zones-4"


def test_not_a_feature_collection_is_refused(hub: Hub, tmp_path: Path) -> None:
    path = tmp_path / "thing.geojson"
    path.write_text('{"type": "Feature"}')
    with pytest.raises(ImportFailed, match="FeatureCollection"):
        import_geojson(hub, path, entity_type="X")


# --- NGSI-LD ------------------------------------------------------------------------------

def test_ngsild_array_and_real_sdm_examples(hub: Hub, tmp_path: Path) -> None:
    examples = [json.loads((EXTERNAL / "smart-data-models" / kind /
                            "example-normalized.jsonld").read_text())
                for kind in ("AirQualityObserved", "ParkingSpot", "WasteContainer")]
    path = tmp_path / "examples.json"
    path.write_text(json.dumps(examples))
    assert detect_format(path) == "ngsild"
    report = import_ngsild(hub, path)
    assert (report.rows, report.entities, report.rejected) == (3, 3, 0), report.errors
    stored = hub.queries.get_entity(CALLER, examples[0]["id"])
    assert stored["attrs"][ENV + "no2"][""]["value"] == 69


def test_ngsild_json_lines_with_bad_lines(hub: Hub, tmp_path: Path) -> None:
    good = {"id": "urn:ngsi-ld:Building:b1", "type": "Building",
            "height": {"type": "Property", "value": 30}}
    lines = [json.dumps(good),
             "{not json",
             json.dumps({"id": "not a uri", "type": "Building"}),
             json.dumps({"id": "urn:ngsi-ld:AirQualityObserved:x", "type": "AirQualityObserved",
                         "pm25": -4, "@context": ENV_CONTEXT}),  # SDM: pm25 >= 0
             "",
             json.dumps({**good, "id": "urn:ngsi-ld:Building:b2"})]
    path = tmp_path / "buildings.jsonl"
    path.write_text("\n".join(lines))
    report = import_ngsild(hub, path)
    assert (report.rows, report.entities, report.rejected) == (5, 2, 3)
    assert len(dead_letters(hub)) == 3
    assert any("pm25" in e for e in report.errors)
    assert hub.queries.get_entity(CALLER, "urn:ngsi-ld:Building:b2")["id"]


def test_single_entity_file_through_import_file(hub: Hub, tmp_path: Path) -> None:
    path = tmp_path / "one.jsonld"
    path.write_text(json.dumps({"id": "urn:ngsi-ld:Building:solo", "type": "Building",
                                "floors": 3}))
    seen: list[int] = []
    report = import_file(hub, path, ImportOptions(), seen.append)
    assert report.entities == 1
    assert sum(seen) == path.stat().st_size


def test_unknown_format_and_missing_file(hub: Hub, tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(ImportFailed, match="format"):
        import_file(hub, path, ImportOptions())
    with pytest.raises(ImportFailed, match="not a readable file"):
        import_file(hub, tmp_path / "absent.csv", ImportOptions())
