"""File import: NGSI-LD JSON, GeoJSON and CSV time series into the hub.

Entity files (NGSI-LD, GeoJSON) are upserted through the entity service, so they are
validated like API writes. CSV time series become readings that go through the ingest
pipeline in batches, like device data: replays store nothing twice, and a bad row is
counted, dead-lettered and skipped without costing the rest of the file its place.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import IO, Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from urbanhub.hub.runtime import Hub
from urbanhub.ingest.pipeline import Reading, Rejected
from urbanhub.model.caller import Caller
from urbanhub.model.devices import Sender
from urbanhub.model.errors import AlreadyExists, BadRequestData, UrbanhubError
from urbanhub.ngsild.context import TermMap, is_iri
from urbanhub.ngsild.entity import DEFAULT_DATASET, ENTITY_MEMBERS, Entity, parse_entity
from urbanhub.ngsild.timeutil import format_datetime

#: Called with the number of input bytes consumed since the previous call.
ProgressCallback = Callable[[int], None]
CALLER = Caller.system("import")
#: An administrator runs the import: the gate still refuses readings for devices that are
#: not active.
IMPORT_SENDER = Sender.component("import")
SOURCE = "file"
MISSING = frozenset({"", "NA", "N/A", "NaN", "nan", "null", "NULL"})
_UNSAFE = re.compile(r"""[<>"'=;()\s\\]+""")
_MAX_ERRORS = 20


class ImportFailed(UrbanhubError):
    """A file that cannot be imported at all (unknown format, bad mapping, unreadable)."""

    title = "Import failed"
    status = 400


@dataclass
class ImportReport:
    """Counts of one import (or the sum of several): nothing is dropped silently."""

    rows: int = 0  # CSV rows read, or entities / features found
    skipped: int = 0  # CSV rows outside --since/--until
    missing: int = 0  # empty or "NA" CSV values left out
    readings: int = 0  # readings that passed the ingest gate
    stored: int = 0  # of those, new to history
    duplicates: int = 0  # readings history already had (a re-import)
    rejected: int = 0  # rows, entities or readings refused (all dead-lettered)
    entities: int = 0  # entities created (CSV) or upserted (NGSI-LD, GeoJSON)
    errors: list[str] = field(default_factory=list)  # the first reasons for rejections

    def add(self, other: ImportReport) -> None:
        for item in fields(self):
            if item.name == "errors":
                self.errors.extend(other.errors[:_MAX_ERRORS - len(self.errors)])
            else:
                setattr(self, item.name, getattr(self, item.name) + getattr(other, item.name))

    def note(self, reason: str) -> None:
        if len(self.errors) < _MAX_ERRORS:
            self.errors.append(reason)


# --- CSV mapping --------------------------------------------------------------------------

@dataclass(frozen=True)
class ColumnMapping:
    """One CSV column that becomes one attribute's readings."""

    column: str
    name: str
    unit_code: str | None = None
    convert: Callable[[str], float] = float  # raises ValueError for a bad value


@dataclass
class CsvMapping:
    """How rows of a time-series CSV become entities and readings.

    The entity comes from ``id_column`` (an IRI, or a value put into
    ``urn:ngsi-ld:{type}:{value}``) or from ``id_template`` (``str.format`` over the row).
    The time comes from ``time_column`` or from year, month, day, hour columns; times
    without an offset are local to ``timezone``. ``static`` gives the attributes of an
    entity created on first sight (location, name…), from its id and first row.
    """

    entity_type: str
    attributes: list[ColumnMapping]
    id_column: str | None = None
    id_template: str | None = None
    time_column: str | None = None
    time_parts: tuple[str, str, str, str] | None = None
    timezone: tzinfo = UTC
    context: Any = None
    static: Callable[[str, dict[str, str]], dict[str, Any]] | None = None
    since: datetime | None = None
    until: datetime | None = None
    missing: frozenset[str] = MISSING

    def check(self, header: list[str]) -> None:
        """Refuse a mapping that does not fit the file before reading any row."""
        if (self.id_column is None) == (self.id_template is None):
            raise ImportFailed("Give exactly one of --id-column and --id-template.")
        if (self.time_column is None) == (self.time_parts is None):
            raise ImportFailed("Give exactly one of --time-column and year/month/day/hour "
                               "columns.")
        if not self.attributes:
            raise ImportFailed("Map at least one column to an attribute (--attr COLUMN=name).")
        wanted = [m.column for m in self.attributes]
        wanted += [self.id_column] if self.id_column else re.findall(
            r"{([^{}:!]+)", self.id_template or "")
        wanted += [self.time_column] if self.time_column else list(self.time_parts or ())
        absent = [column for column in wanted if column not in header]
        if absent:
            raise ImportFailed(f"Columns not in the file: {', '.join(absent)} "
                               f"(it has {', '.join(header)}).")

    def entity_id(self, row: dict[str, str]) -> str:
        if self.id_template is not None:
            value = self.id_template.format_map(row)
        else:
            value = (row.get(self.id_column or "") or "").strip()
            if not value:
                raise ValueError(f"empty {self.id_column}")
            if not is_iri(value):
                value = f"urn:ngsi-ld:{self.entity_type}:{value}"
        value = _UNSAFE.sub("-", value.strip())
        if not is_iri(value):
            raise ValueError(f"entity id {value!r} is not a URI")
        return value

    def observed_at(self, row: dict[str, str]) -> datetime:
        if self.time_parts is not None:
            year, month, day, hour = (int(row[column]) for column in self.time_parts)
            return datetime(year, month, day, hour, tzinfo=self.timezone).astimezone(UTC)
        return local_datetime(row[self.time_column or ""], self.timezone)


def local_datetime(text: str, zone: tzinfo) -> datetime:
    """An ISO 8601 date or date-time; without an offset it is local time in ``zone``."""
    raw = text.strip()
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    moment = datetime.fromisoformat(raw)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(UTC)


def parse_timezone(text: str) -> tzinfo:
    """``UTC``, an offset (``+08:00``, ``UTC+8``) or an IANA name (``Asia/Shanghai``)."""
    raw = text.strip()
    match = re.fullmatch(r"(?:UTC|GMT)?\s*([+-])(\d{1,2})(?::?(\d{2}))?", raw)
    if raw.upper() in ("UTC", "Z", "GMT"):
        return UTC
    if match:
        sign = -1 if match.group(1) == "-" else 1
        offset = timedelta(hours=int(match.group(2)), minutes=int(match.group(3) or 0))
        return timezone(sign * offset)
    try:
        return ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ImportFailed(f"Unknown time zone {text!r}: use UTC, an offset like +08:00 or "
                           "an IANA name.") from exc


def parse_attr_option(text: str) -> ColumnMapping:
    """``COLUMN=name[:unitCode]`` as given to ``--attr``."""
    column, sep, target = text.partition("=")
    name, _, unit = target.partition(":")
    if not sep or not column.strip() or not name.strip():
        raise ImportFailed(f"--attr {text!r} must look like COLUMN=name or COLUMN=name:unitCode.")
    return ColumnMapping(column.strip(), name.strip(), unit.strip() or None)


def parse_bound(text: str, zone: tzinfo) -> datetime:
    """A --since/--until value: a date or date-time, local to the mapping's time zone."""
    try:
        day = date.fromisoformat(text.strip())
        return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)
    except ValueError:
        pass
    try:
        return local_datetime(text, zone)
    except ValueError as exc:
        raise ImportFailed(f"{text!r} is not an ISO 8601 date or date-time.") from exc


# --- the Beijing PRSA preset ------------------------------------------------------------

#: Beijing monitoring stations (approximate, to about 1 km): latitude, longitude, area.
BEIJING_STATIONS: dict[str, tuple[float, float, str]] = {
    "Aotizhongxin": (39.982, 116.397, "urban"),
    "Changping": (40.217, 116.230, "suburban"),
    "Dingling": (40.292, 116.220, "suburban"),
    "Dongsi": (39.929, 116.417, "urban"),
    "Guanyuan": (39.929, 116.339, "urban"),
    "Gucheng": (39.914, 116.184, "urban"),
    "Huairou": (40.328, 116.628, "suburban"),
    "Nongzhanguan": (39.937, 116.461, "urban"),
    "Shunyi": (40.127, 116.655, "suburban"),
    "Tiantan": (39.886, 116.407, "urban"),
    "Wanliu": (39.987, 116.287, "urban"),
    "Wanshouxigong": (39.878, 116.352, "urban"),
}
_COMPASS = ("N", "NNE", "NE", "ENE", "E", "ESE", "SE", "SSE",
            "S", "SSW", "SW", "WSW", "W", "WNW", "NW", "NNW")


def compass_degrees(text: str) -> float:
    """A 16-point compass direction as SDM windDirection degrees (-180..180, 0 = north)."""
    degrees = _COMPASS.index(text.strip().upper()) * 22.5
    return degrees - 360 if degrees > 180 else degrees


def _beijing_static(entity_id: str, row: dict[str, str]) -> dict[str, Any]:
    station = row.get("station", "")
    attrs: dict[str, Any] = {
        "name": {"type": "Property", "value": station},
        "typeofLocation": {"type": "Property", "value": "outdoor"},
        "dataProvider": {"type": "Property",
                         "value": "UCI Beijing Multi-Site Air Quality (CC BY 4.0)"},
    }
    known = BEIJING_STATIONS.get(station)
    if known is not None:
        latitude, longitude, area = known
        attrs["location"] = {"type": "GeoProperty",
                             "value": {"type": "Point", "coordinates": [longitude, latitude]}}
        attrs["areaServed"] = {"type": "Property", "value": f"Beijing ({area})"}
    return attrs


def beijing_prsa_mapping() -> CsvMapping:
    """The UCI Beijing PRSA files: one AirQualityObserved entity per station, hourly."""
    gq = "GQ"  # microgram per cubic metre
    return CsvMapping(
        entity_type="AirQualityObserved",
        id_template="urn:ngsi-ld:AirQualityObserved:beijing-{station}",
        time_parts=("year", "month", "day", "hour"),
        timezone=timezone(timedelta(hours=8), "Asia/Shanghai"),
        context="https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/"
                "master/context.jsonld",
        attributes=[
            ColumnMapping("PM2.5", "pm25", gq), ColumnMapping("PM10", "pm10", gq),
            ColumnMapping("SO2", "so2", gq), ColumnMapping("NO2", "no2", gq),
            ColumnMapping("CO", "co", gq), ColumnMapping("O3", "o3", gq),
            ColumnMapping("TEMP", "temperature", "CEL"),
            ColumnMapping("PRES", "pressure", "A97"),  # hectopascal
            ColumnMapping("DEWP", "dewPoint", "CEL"),
            ColumnMapping("RAIN", "precipitation", "MMT"),
            ColumnMapping("wd", "windDirection", "DD", convert=compass_degrees),
            ColumnMapping("WSPM", "windSpeed", "MTS"),
        ],
        static=_beijing_static,
    )


PRESETS: dict[str, Callable[[], CsvMapping]] = {"beijing-prsa": beijing_prsa_mapping}


# --- reading files ------------------------------------------------------------------------

class _Tracked:
    """Reports how far into the file (in stored, possibly compressed, bytes) reading got."""

    def __init__(self, raw: IO[bytes], progress: ProgressCallback | None) -> None:
        self.raw = raw
        self.progress = progress
        self.reported = 0

    def update(self) -> None:
        if self.progress is not None:
            position = self.raw.tell()
            if position > self.reported:
                self.progress(position - self.reported)
                self.reported = position


def _open_text(path: Path) -> tuple[IO[str], IO[bytes]]:
    raw = path.open("rb")
    head = raw.read(2)
    raw.seek(0)
    binary = cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb")) if head == b"\x1f\x8b" \
        else raw
    return io.TextIOWrapper(binary, encoding="utf-8-sig", newline=""), raw


def detect_format(path: Path) -> str:
    """``csv``, ``geojson`` or ``ngsild`` from the name, or from the content for .json."""
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".csv", ".tsv")):
        return "csv"
    if name.endswith(".geojson"):
        return "geojson"
    if name.endswith((".jsonl", ".ndjson", ".jsonld")):
        return "ngsild"
    if name.endswith(".json"):
        text, raw = _open_text(path)
        with raw, text:
            head = text.read(4096)
        return "geojson" if re.search(r'"type"\s*:\s*"FeatureCollection"', head) else "ngsild"
    raise ImportFailed(f"Cannot tell the format of {path.name}: name it .csv, .csv.gz, "
                       ".geojson, .json, .jsonld or .jsonl, or pass --format.")


def _rejected(reason: str, payload: Any, path: Path, index: int | None) -> Rejected:
    body = payload if isinstance(payload, bytes) else orjson.dumps(
        payload, option=orjson.OPT_NON_STR_KEYS, default=str)
    return Rejected(reason, body, SOURCE, topic=path.name, index=index)


def _dead_letter(hub: Hub, rejected: list[Rejected]) -> None:
    if rejected:
        hub.ingest.ingest([], rejected, sender=IMPORT_SENDER)


# --- CSV ----------------------------------------------------------------------------------

@dataclass
class _Row:
    line: int
    entity_id: str
    raw: dict[str, str]
    readings: list[Reading]


class _CsvBatcher:
    """Collects rows into batches of readings, creates missing entities, ingests."""

    def __init__(self, hub: Hub, path: Path, mapping: CsvMapping, terms: TermMap,
                 report: ImportReport) -> None:
        self.hub = hub
        self.path = path
        self.mapping = mapping
        self.terms = terms
        self.report = report
        self.known: set[str] = set()
        self.refused: dict[str, str] = {}  # entity id -> why it could not be created
        self.rows: list[_Row] = []
        self.rejected: list[Rejected] = []
        self.size = 0

    def add(self, row: _Row) -> None:
        self.rows.append(row)
        self.size += len(row.readings)

    def reject(self, reason: str, raw: dict[str, str], line: int) -> None:
        self.report.rejected += 1
        self.report.note(f"{self.path.name} line {line}: {reason}")
        self.rejected.append(_rejected(reason, raw, self.path, line))

    def flush(self) -> None:
        self._ensure_entities()
        readings: list[Reading] = []
        for row in self.rows:
            if row.entity_id in self.refused:
                self.reject(self.refused[row.entity_id], row.raw, row.line)
            else:
                readings.extend(row.readings)
        if readings or self.rejected:
            answer = self.hub.ingest.ingest(readings, self.rejected, sender=IMPORT_SENDER)
            self.report.readings += answer.accepted
            self.report.stored += answer.stored
            self.report.duplicates += answer.accepted - answer.stored
            refused_by_gate = len(answer.rejected) - len(self.rejected)
            self.report.rejected += refused_by_gate
            for item in answer.rejected[len(self.rejected):][:3]:
                self.report.note(f"{self.path.name}: {item.reason}")
        self.rows = []
        self.rejected = []
        self.size = 0

    def _ensure_entities(self) -> None:
        first_rows: dict[str, _Row] = {}
        for row in self.rows:
            if row.entity_id not in self.known and row.entity_id not in self.refused:
                first_rows.setdefault(row.entity_id, row)
        if not first_rows:
            return
        with self.hub.store.read() as conn:
            self.known.update(self.hub.store.existing(conn, first_rows))
        for entity_id, row in first_rows.items():
            if entity_id in self.known:
                continue
            payload: dict[str, Any] = {"id": entity_id, "type": self.mapping.entity_type}
            if self.mapping.static is not None:
                payload.update(self.mapping.static(entity_id, row.raw))
            try:
                self.hub.entities.create(CALLER, parse_entity(payload, self.terms))
            except AlreadyExists:
                pass
            except UrbanhubError as exc:
                self.refused[entity_id] = f"entity {entity_id} could not be created: {exc.detail}"
                continue
            self.known.add(entity_id)
            self.report.entities += 1


def import_csv(hub: Hub, path: Path, mapping: CsvMapping, *, batch_size: int = 5000,
               progress: ProgressCallback | None = None) -> ImportReport:
    """Import a time-series CSV (or .csv.gz) as readings through the ingest pipeline."""
    report = ImportReport()
    terms = hub.contexts.resolve(mapping.context)
    columns = [(m, terms.expand(m.name)) for m in mapping.attributes]
    text, raw = _open_text(path)
    tracker = _Tracked(raw, progress)
    with raw, text:
        reader = csv.DictReader(text)
        mapping.check(list(reader.fieldnames or []))
        batcher = _CsvBatcher(hub, path, mapping, terms, report)
        for line, row in enumerate(reader, start=2):
            report.rows += 1
            try:
                entity_id = mapping.entity_id(row)
                moment = mapping.observed_at(row)
            except (ValueError, KeyError, TypeError) as exc:
                batcher.reject(f"bad entity id or time: {exc}", row, line)
                continue
            if (mapping.since is not None and moment < mapping.since) or (
                    mapping.until is not None and moment >= mapping.until):
                report.skipped += 1
                continue
            parsed = _row_readings(row, columns, entity_id, moment, mapping.missing)
            if isinstance(parsed, str):
                batcher.reject(parsed, row, line)
                continue
            readings, missing = parsed
            report.missing += missing
            if readings:
                batcher.add(_Row(line, entity_id, row, readings))
            if batcher.size >= batch_size:
                batcher.flush()
                tracker.update()
        batcher.flush()
        tracker.update()
    return report


def _row_readings(row: dict[str, str], columns: list[tuple[ColumnMapping, str]], entity_id: str,
                  moment: datetime, missing: frozenset[str]) -> tuple[list[Reading], int] | str:
    """The readings of one row, or why the row is bad."""
    readings: list[Reading] = []
    left_out = 0
    stamp = format_datetime(moment)
    for column, name in columns:
        text = (row.get(column.column) or "").strip()
        if text in missing:
            left_out += 1
            continue
        try:
            value = column.convert(text)
        except (ValueError, TypeError):
            return f"{column.column} value {text!r} is not valid"
        if not math.isfinite(value):
            return f"{column.column} value {text!r} is not a finite number"
        instance: dict[str, Any] = {"type": "Property", "value": value, "observedAt": stamp}
        if column.unit_code:
            instance["unitCode"] = column.unit_code
        readings.append(Reading(entity_id, name, DEFAULT_DATASET, moment, instance, float(value)))
    return readings, left_out


# --- NGSI-LD and GeoJSON ------------------------------------------------------------------

def _upsert(hub: Hub, path: Path, items: list[tuple[int, Any]], default_context: Any,
            report: ImportReport) -> None:
    """Parse and upsert entities one by one; refusals are counted and dead-lettered."""
    parsed: list[Entity] = []
    originals: dict[str, tuple[int | None, Any]] = {}
    rejected: list[Rejected] = []
    for index, item in items:
        try:
            context = item.get("@context", default_context) if isinstance(item, dict) else None
            entity = parse_entity(item, hub.contexts.resolve(context))
        except UrbanhubError as exc:
            report.rejected += 1
            report.note(f"{path.name} item {index}: {exc.detail}")
            rejected.append(_rejected(exc.detail, item, path, index))
            continue
        parsed.append(entity)
        originals[entity["id"]] = (index, item)
    result = hub.entities.batch(CALLER, "upsert", parsed, lambda entity: entity)
    report.entities += len(result.succeeded)
    for entity_id, error in result.failed:
        position, original = originals.get(entity_id, (None, {"id": entity_id}))
        detail = error.detail
        report.rejected += 1
        report.note(f"{path.name} entity {entity_id}: {detail}")
        rejected.append(_rejected(detail, original, path, position))
    _dead_letter(hub, rejected)


def _json_items(path: Path, report: ImportReport,
                rejected: list[Rejected]) -> list[tuple[int, Any]]:
    """Entities of a JSON document (object or array) or of JSON Lines, numbered from 1."""
    text, raw = _open_text(path)
    with raw, text:
        body = text.read()
    lines_only = path.name.lower().removesuffix(".gz").endswith((".jsonl", ".ndjson"))
    if not lines_only:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            lines_only = True
        else:
            documents = document if isinstance(document, list) else [document]
            return list(enumerate(documents, start=1))
    items: list[tuple[int, Any]] = []
    for number, line in enumerate(body.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append((number, orjson.loads(line)))
        except orjson.JSONDecodeError as exc:
            report.rows += 1
            report.rejected += 1
            report.note(f"{path.name} line {number}: not JSON ({exc})")
            rejected.append(_rejected(f"not JSON: {exc}", line.encode(), path, number))
    return items


def import_ngsild(hub: Hub, path: Path, *, context: Any = None, batch_size: int = 500,
                  progress: ProgressCallback | None = None) -> ImportReport:
    """Upsert NGSI-LD entities from a JSON object, a JSON array or JSON Lines."""
    report = ImportReport()
    rejected: list[Rejected] = []
    items = _json_items(path, report, rejected)
    _dead_letter(hub, rejected)
    report.rows += len(items)
    _upsert_in_batches(hub, path, items, context, report, batch_size, progress)
    return report


def import_geojson(hub: Hub, path: Path, *, entity_type: str, id_property: str | None = None,
                   context: Any = None, batch_size: int = 500,
                   progress: ProgressCallback | None = None) -> ImportReport:
    """One entity per feature: properties become Properties, the geometry its location."""
    report = ImportReport()
    text, raw = _open_text(path)
    with raw, text:
        try:
            document = orjson.loads(text.read())
        except orjson.JSONDecodeError as exc:
            raise ImportFailed(f"{path.name} is not JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("type") != "FeatureCollection" or \
            not isinstance(document.get("features"), list):
        raise ImportFailed(f"{path.name} is not a GeoJSON FeatureCollection.")
    items: list[tuple[int, Any]] = []
    rejected: list[Rejected] = []
    for index, feature in enumerate(document["features"], start=1):
        report.rows += 1
        try:
            items.append((index, feature_entity(feature, index, entity_type, id_property,
                                                path.stem, context)))
        except BadRequestData as exc:
            report.rejected += 1
            report.note(f"{path.name} feature {index}: {exc.detail}")
            rejected.append(_rejected(exc.detail, feature, path, index))
    _dead_letter(hub, rejected)
    _upsert_in_batches(hub, path, items, context, report, batch_size, progress)
    return report


def _upsert_in_batches(hub: Hub, path: Path, items: list[tuple[int, Any]], context: Any,
                       report: ImportReport, batch_size: int,
                       progress: ProgressCallback | None) -> None:
    size = path.stat().st_size
    done = 0
    for start in range(0, len(items), batch_size):
        _upsert(hub, path, items[start:start + batch_size], context, report)
        if progress is not None and items:
            reached = size * min(len(items), start + batch_size) // len(items)
            progress(reached - done)
            done = reached
    if progress is not None and done < size:
        progress(size - done)


def feature_entity(feature: Any, index: int, entity_type: str, id_property: str | None,
                   stem: str, context: Any = None) -> dict[str, Any]:
    """A GeoJSON feature as an NGSI-LD entity (normalized form).

    Property names an entity reserves (id, type, location…) are kept as ``featureId``,
    ``featureType``…; null properties are left out, as NGSI-LD has no null values.
    """
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise BadRequestData("not a GeoJSON Feature")
    properties = feature.get("properties") or {}
    if not isinstance(properties, dict):
        raise BadRequestData("feature properties must be an object")
    if id_property is not None:
        key = properties.get(id_property)
        if key is None or key == "":
            raise BadRequestData(f"feature has no {id_property!r} property")
    else:
        key = feature.get("id", f"{stem}-{index}")
    ident = str(key).strip()
    if not is_iri(ident):
        ident = f"urn:ngsi-ld:{entity_type}:{_UNSAFE.sub('-', ident)}"
    entity: dict[str, Any] = {"id": ident, "type": entity_type}
    if context is not None:
        entity["@context"] = context
    for name, value in properties.items():
        if value is None:
            continue
        safe = _UNSAFE.sub("_", str(name)).strip("_") or "property"
        if safe in ENTITY_MEMBERS or safe.lstrip("@") in ("id", "type", "location", "scope",
                                                          "context"):
            safe = "feature" + safe.lstrip("@")[:1].upper() + safe.lstrip("@")[1:]
        entity[safe] = {"type": "Property", "value": value}
    if feature.get("geometry"):
        entity["location"] = {"type": "GeoProperty", "value": feature["geometry"]}
    return entity


# --- entry point --------------------------------------------------------------------------

@dataclass
class ImportOptions:
    """What ``urbanhub import`` was told, for every format (each uses what applies)."""

    format: str | None = None
    entity_type: str | None = None
    id_property: str | None = None
    context: Any = None
    mapping: CsvMapping | None = None
    batch_size: int = 5000


def import_file(hub: Hub, path: Path, options: ImportOptions,
                progress: ProgressCallback | None = None) -> ImportReport:
    """Import one file, picking the importer from ``options.format`` or the file name."""
    if not path.is_file():
        raise ImportFailed(f"{path} is not a readable file.")
    kind = options.format or detect_format(path)
    if kind == "csv":
        if options.mapping is None:
            raise ImportFailed("A CSV import needs a mapping: --preset, or --type with "
                               "--id-column/--id-template, a time and --attr options.")
        return import_csv(hub, path, options.mapping, batch_size=options.batch_size,
                          progress=progress)
    if kind == "geojson":
        if not options.entity_type:
            raise ImportFailed("A GeoJSON import needs --type (the entity type of features).")
        return import_geojson(hub, path, entity_type=options.entity_type,
                              id_property=options.id_property, context=options.context,
                              progress=progress)
    if kind == "ngsild":
        return import_ngsild(hub, path, context=options.context, progress=progress)
    raise ImportFailed(f"Unknown format {kind!r}: use csv, geojson or ngsild.")


def iter_paths(paths: list[Path]) -> Iterator[Path]:
    """Files as given, with directories expanded to the files they hold."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.iterdir() if p.is_file())
        else:
            yield path

