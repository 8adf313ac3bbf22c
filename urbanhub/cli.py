"""The ``urbanhub`` command."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer
import uvicorn
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from urbanhub.config import get_settings
from urbanhub.logs import configure_logging

if TYPE_CHECKING:
    from urbanhub.config import Settings
    from urbanhub.hub.runtime import Hub
    from urbanhub.ingest.importer import CsvMapping, ImportReport
    from urbanhub.store.audit import AuditLog

app = typer.Typer(help="Urbanhub: urban data platform with governance on the data path.",
                  no_args_is_help=True)
db_app = typer.Typer(help="Database schema management.", no_args_is_help=True)
app.add_typer(db_app, name="db")
audit_app = typer.Typer(help="Tamper-evident audit trail.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
admin_app = typer.Typer(help="Administration of the hub's identities.", no_args_is_help=True)
app.add_typer(admin_app, name="admin")
catalog_app = typer.Typer(help="Data catalog: purposes, datasets, assignment rules.",
                          no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")
devices_app = typer.Typer(help="The device registry.", no_args_is_help=True)
app.add_typer(devices_app, name="devices")
quality_app = typer.Typer(help="Data quality of datasets.", no_args_is_help=True)
app.add_typer(quality_app, name="quality")
console = Console(stderr=True)
output = Console()


@app.command()
def serve(host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
          port: int = typer.Option(8000, help="TCP port to listen on.")) -> None:
    """Run the hub (database from URBANHUB_DATABASE_URL; schema upgraded on start)."""
    from urbanhub.api.app import create_app
    from urbanhub.governance.oidc import OidcConfigError
    from urbanhub.hub.runtime import tune_gc_for_serving

    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    try:
        application = create_app(settings)
    except OidcConfigError as exc:
        console.print(f"[red]OIDC settings:[/] {exc}", highlight=False)
        raise typer.Exit(2) from exc
    console.print(f"[bold]Urbanhub[/] on http://{host}:{port}  database: "
                  f"{_redacted(settings.database_url)}")
    tune_gc_for_serving()
    uvicorn.run(application, host=host, port=port, log_config=None,
                log_level=settings.log_level.lower())


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Create the schema or upgrade it to the latest revision."""
    from urbanhub.store.db import current_revision, make_engine, upgrade

    settings = get_settings()
    engine = make_engine(settings.database_url)
    before = current_revision(engine)
    upgrade(engine, revision)
    after = current_revision(engine)
    console.print(f"database {_redacted(settings.database_url)}: {before or 'empty'} -> {after}")


@db_app.command("compact")
def db_compact(before: str | None = typer.Option(
        None, help="Compact the days that ended by this UTC date (YYYY-MM-DD); default: "
                   "those that ended more than a day ago, as the schedule inside `serve` "
                   "does.")) -> None:
    """Fold the hourly rollups of past days into one row per sensor and day (PostgreSQL):
    city-wide aggregates over those days read a twenty-fourth of the rows."""
    from datetime import UTC, datetime

    with _hub() as hub:
        if not hub.compaction.supported:
            output.print("SQLite keeps every hour in rollup_hourly: nothing to compact.")
            return
        until = None
        if before is not None:
            try:
                until = datetime.strptime(before, "%Y-%m-%d").replace(tzinfo=UTC)
            except ValueError as exc:
                console.print(f"[red]--before:[/] {before!r} is not a date (YYYY-MM-DD)",
                              highlight=False)
                raise typer.Exit(2) from exc
        days = hub.compaction.pending_days(until)
        with Progress(TextColumn("compacting rollups"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=console, transient=True) as progress:
            task = progress.add_task("compact", total=len(days))
            done = hub.compaction.run(days, done=lambda _day: progress.advance(task))
    hours = sum(day.hours for day in done)
    output.print(f"compacted {len(done):,} days: {hours:,} hourly rollups into "
                 f"{sum(day.rows for day in done):,} day rows")


@audit_app.command("verify")
def audit_verify(anchor: Path | None = typer.Option(
        None, exists=True, dir_okay=False,
        help="Head exported earlier by `urbanhub audit head`: also catches a chain rewritten "
             "or cut back behind it.")) -> None:
    """Check the whole audit chain; exit 1 naming the first bad entry."""
    from urbanhub.governance.audit import AuditError, ChainHead

    try:
        anchored = ChainHead.from_json(json.loads(anchor.read_text())) if anchor else None
    except (AuditError, ValueError) as exc:
        console.print(f"[red]cannot read the anchor {anchor}:[/] {exc}")
        raise typer.Exit(2) from exc
    with _audit_log() as log:
        head = log.head()
        with Progress(TextColumn("verifying audit trail"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=console, transient=True) as progress:
            task = progress.add_task("verify", total=head.seq if head else 0)
            report = log.verify(anchored, lambda n: progress.advance(task, n))
    output.print(report.message(), markup=False, highlight=False, soft_wrap=True)
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("head")
def audit_head() -> None:
    """Print the chain head (sequence, hash, time) as JSON, to anchor outside the hub."""
    with _audit_log() as log:
        typer.echo(json.dumps(log.export_head()))


@admin_app.command("bootstrap")
def admin_bootstrap(
        organisation_id: str = typer.Option(..., help="Id of the CDO's department, e.g. "
                                                      "'city-data-office'."),
        organisation_name: str = typer.Option(..., help="Name of the department."),
        subject: str = typer.Option(..., help="Subject id of the first CDO."),
        expires_days: int = typer.Option(30, min=1, help="Days until the CDO's key expires "
                                                         "(at most 365).")) -> None:
    """Create the first CDO (a department, its CDO member and an API key) and print the key.

    Refused once a CDO exists: later CDOs are appointed by a CDO through the API.
    """
    from datetime import timedelta

    from rich.markup import escape

    from urbanhub.governance.oidc import OidcConfigError
    from urbanhub.hub.runtime import Hub
    from urbanhub.model.errors import BadRequestData, UrbanhubError
    from urbanhub.model.governance import OrganisationKind
    from urbanhub.model.identity import Organisation

    try:
        organisation = Organisation(organisation_id, organisation_name,
                                    OrganisationKind.DEPARTMENT)
        hub = Hub(get_settings())
    except (BadRequestData, OidcConfigError) as exc:
        console.print(f"[red]{escape(str(exc))}[/]", highlight=False)
        raise typer.Exit(2) from exc
    try:
        hub.upgrade_schema()
        issued = hub.identities.bootstrap(organisation, subject, timedelta(days=expires_days))
    except UrbanhubError as exc:
        console.print(f"[red]bootstrap refused:[/] {escape(exc.detail)}", highlight=False)
        raise typer.Exit(1 if exc.status == 409 else 2) from exc
    finally:
        hub.close()
    record = issued.record
    console.print(f"created organisation {organisation.id} (department), CDO {record.subject} "
                  f"and API key {record.key_id} with scopes {', '.join(sorted(record.scopes))}, "
                  f"expiring {record.expires_at:%Y-%m-%d %H:%M} UTC", highlight=False)
    console.print("[bold yellow]The key follows. Store it now: it will not be shown again.[/]")
    output.print(issued.key, markup=False, highlight=False, soft_wrap=True)


@contextmanager
def _hub(settings: Settings | None = None) -> Iterator[Hub]:
    """A hub on the configured database with its schema created or upgraded, closed after
    use; each command says itself what an error means to its user."""
    from urbanhub.hub.runtime import Hub

    hub = Hub(settings or get_settings())
    try:
        hub.upgrade_schema()
        yield hub
    finally:
        hub.close()


@contextmanager
def _audit_log() -> Iterator[AuditLog]:
    """The audit trail of the configured database; exit 2 when it has none yet."""
    from sqlalchemy import inspect

    from urbanhub.store.audit import AuditLog
    from urbanhub.store.db import make_engine

    settings = get_settings()
    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table("audit_log"):
                console.print(f"[red]database {_redacted(settings.database_url)} has no "
                              "audit trail:[/] run `urbanhub db upgrade`")
                raise typer.Exit(2)
        yield AuditLog(engine)
    finally:
        engine.dispose()


@catalog_app.command("load")
def catalog_load(file: Path = typer.Argument(..., help="Catalog file (.yaml, .yml or .json) "
                                                      "with purposes and datasets.")) -> None:
    """Create or update the purposes and datasets of a file, all or nothing; what is already
    as the file says is left alone, so loading a file twice changes nothing."""
    import yaml

    from urbanhub.governance.catalog_documents import parse_catalog
    from urbanhub.model.caller import Caller
    from urbanhub.model.errors import UrbanhubError

    if file.suffix.lower() not in (".yaml", ".yml", ".json"):
        console.print(f"[red]{file}: give a .yaml, .yml or .json file[/]")
        raise typer.Exit(2)
    try:
        text = file.read_text(encoding="utf-8")
        payload = json.loads(text) if file.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        console.print(f"[red]{file}: cannot read it:[/] {exc}")
        raise typer.Exit(2) from exc
    try:
        with _hub() as hub:
            purposes, datasets = parse_catalog(payload, hub.contexts.resolve)
            report = hub.catalog.load(Caller.system("cli"), purposes, datasets)
    except UrbanhubError as exc:
        console.print(f"[red]{file.name}: nothing loaded:[/] {exc.detail}")
        raise typer.Exit(1) from exc
    table = Table(title=f"catalog {file.name}")
    for column in ("kind", "id", "result"):
        table.add_column(column)
    for kind, outcomes in (("purpose", report.purposes), ("dataset", report.datasets)):
        for ident, outcome in outcomes.items():
            table.add_row(kind, ident, outcome.value)
    output.print(table)
    output.print(f"entities moved to another dataset: {report.entities_moved:,}")


@catalog_app.command("list")
def catalog_list() -> None:
    """Datasets with their owner, classification, types and entity count; duplicates and
    uncatalogued entities are pointed out."""
    from urbanhub.model.caller import Caller

    with _hub() as hub:
        entries = hub.catalog.datasets()
        report = hub.catalog.report(Caller.system("cli"))
    table = Table(title="datasets")
    for column in ("id", "title", "owner", "classification", "entity types", "entities"):
        # Folded rather than cut short: an id with an ellipsis cannot be copied.
        table.add_column(column, justify="right" if column == "entities" else "left",
                         overflow="fold")
    for entry in entries:
        dataset = entry.dataset
        types = ", ".join(sorted(_last_segment(t) for t in dataset.entity_types))
        style = "yellow" if entry.built_in and entry.entity_count else None
        table.add_row(dataset.id, dataset.title, dataset.owner, dataset.classification.value,
                      types, f"{entry.entity_count:,}", style=style)
    output.print(table)
    if report.uncatalogued_entities:
        found = ", ".join(f"{_last_segment(t)} ({n:,})" for t, n in report.uncatalogued_types)
        output.print(f"[yellow]{report.uncatalogued_entities:,} entities match no assignment "
                     f"rule:[/] {found}")
    for duplicate in report.duplicates:
        output.print(f"[yellow]possible duplicates:[/] {duplicate.first} and "
                     f"{duplicate.second} both hold "
                     f"{', '.join(_last_segment(t) for t in duplicate.shared_types)}; "
                     f"{duplicate.reason}")


@devices_app.command("mosquitto-config")
def devices_mosquitto_config(
        passwords: Path = typer.Option(..., help="Mosquitto password file to write "
                                                 "(password_file in mosquitto.conf)."),
        acl: Path = typer.Option(..., help="Mosquitto ACL file to write (acl_file).")) -> None:
    """Write Mosquitto's password and ACL files from the device registry: each active MQTT
    device logs in with its device key and may publish on its own topics only; the hub's
    user (from URBANHUB_MQTT_URL) may read them. Reload Mosquitto (SIGHUP) afterwards."""
    from urbanhub.ingest.mosquitto import broker_accounts, broker_files
    from urbanhub.ingest.mqtt import BrokerAddress

    settings = get_settings()
    address = BrokerAddress.parse(settings.mqtt_url) if settings.mqtt_url else None
    with _hub(settings) as hub:
        accounts, left_out = broker_accounts(hub.devices.all())
    hub_user = address.username if address else None
    try:
        files = broker_files(accounts, settings.mqtt_topic_root, hub_user,
                             address.password if address else None)
    except ValueError as exc:
        console.print(f"[red]nothing written:[/] {exc}", highlight=False)
        raise typer.Exit(1) from exc
    _write_private(passwords, files.passwords)
    _write_private(acl, files.acl)
    console.print(f"wrote {len(files.devices)} device accounts"
                  f"{f' and the hub user {hub_user}' if hub_user else ''} to {passwords} "
                  f"and {acl}; reload Mosquitto (SIGHUP) to apply them", highlight=False)
    if hub_user is None or (address is not None and address.password is None):
        console.print("[yellow]URBANHUB_MQTT_URL names no user and password:[/] the hub "
                      "cannot log in to a broker using these files")
    for device_id, reason in left_out:
        console.print(f"  left out {device_id}: {reason}", highlight=False)


def _write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` at once (readers never see half a file), readable by
    its owner and group only."""
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temporary, path)


@quality_app.command("report")
def quality_report(dataset: str = typer.Argument(..., help="Dataset id."),
                   window: str = typer.Option("P1D", help="ISO 8601 duration up to now.")
                   ) -> None:
    """Completeness, validity and timeliness of a dataset, with the rules that failed."""
    from urbanhub.governance.quality import exact_duration
    from urbanhub.model.caller import Caller
    from urbanhub.model.errors import UrbanhubError

    try:
        with _hub() as hub:
            report = hub.quality.report(Caller.system("cli"), dataset,
                                        exact_duration(window, "window"))
    except UrbanhubError as exc:
        console.print(f"[red]{exc.detail}[/]", highlight=False)
        raise typer.Exit(1) from exc
    table = Table(title=f"quality of {dataset}, {report.window.start:%Y-%m-%d %H:%M} to "
                        f"{report.window.end:%Y-%m-%d %H:%M} UTC, {report.entities:,} entities")
    for column in ("measure", "score", "passed", "failing rules"):
        table.add_column(column, overflow="fold",
                         justify="right" if column in ("score", "passed") else "left")
    for label, measure in (("completeness: required attributes", report.required_attributes),
                           ("completeness: expected readings", report.expected_readings),
                           ("validity", report.validity), ("timeliness", report.timeliness)):
        share = measure.share
        score = share.score if share is not None else None
        failing = "; ".join(
            f"{_last_segment(f.attribute) + ' ' if f.attribute else ''}{f.rule}"
            f"{'' if f.limit is None else f' {f.limit}'}: {f.count:,}" for f in measure.failing)
        table.add_row(label, "-" if score is None else f"{score:.1%}",
                      f"{share.part:,} of {share.whole:,}" if share else "",
                      failing or (measure.reason or ""),
                      style="dim" if score is None else None)
    output.print(table)


def _last_segment(iri: str) -> str:
    """A type's short name for a terminal table (the API gives full names)."""
    return iri.rstrip("/#").rsplit("/", 1)[-1].rsplit("#", 1)[-1]


@app.command()
def dispose(dry_run: bool = typer.Option(False, "--dry-run",
                                         help="Report what would be removed; remove nothing.")
            ) -> None:
    """Enforce every dataset's retention now: remove expired history, rollups, quality flags
    and entities (on PostgreSQL wholly expired partitions are dropped) and record the run in
    the audit trail."""
    from urbanhub.model.caller import Caller
    from urbanhub.model.errors import UrbanhubError
    from urbanhub.model.governance import format_duration

    try:
        with _hub() as hub, console.status(
                "disposal dry run" if dry_run else "disposing of expired data"):
            run = hub.disposal.dispose(Caller.system("cli"), dry_run=dry_run)
    except UrbanhubError as exc:
        console.print(f"[red]disposal refused:[/] {exc.detail}", highlight=False)
        raise typer.Exit(1) from exc
    table = Table(title=f"{'dry run: would remove' if dry_run else 'disposal run'} "
                        f"{run.run_id} at {run.at:%Y-%m-%d %H:%M} UTC")
    for column in ("dataset", "retention", "cut-off", "history rows", "observed",
                   "rollup hours", "quality flags", "values", "entities", "partitions"):
        table.add_column(column, overflow="fold", justify="right" if column in (
            "history rows", "rollup hours", "quality flags", "values", "entities") else "left")
    for figures in run.datasets:
        span = figures.history
        table.add_row(figures.dataset_id, format_duration(figures.retention),
                      f"{figures.cutoff:%Y-%m-%d %H:%M}", f"{span.rows:,}",
                      f"{span.first:%Y-%m-%d %H:%M} to {span.last:%Y-%m-%d %H:%M}"
                      if span.first and span.last else "",
                      f"{figures.rollup_hours:,}", f"{figures.quality_flags:,}",
                      f"{figures.attribute_values:,}", f"{figures.entities:,}",
                      ", ".join(figures.partitions),
                      style=None if figures.removed_anything else "dim")
    output.print(table)
    if not run.complete:
        output.print("[yellow]the run was stopped before the end[/]")


@app.command()
def demo(host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
         port: int = typer.Option(8000, help="TCP port to listen on."),
         seed: int = typer.Option(42, help="Seed of the simulation (same seed, same city)."),
         sensors: int = typer.Option(48, min=6, help="Number of sensors (six types in turn)."),
         backfill_hours: float = typer.Option(24.0, min=0,
                                              help="Hours of history to send before going live."),
         interval: float = typer.Option(5.0, min=1.0,
                                        help="Seconds between live readings.")) -> None:
    """Run the hub with the demo city: districts, sensors, history and live readings."""
    from urbanhub.sim.demo import DemoError, DemoOptions, run_demo

    settings = get_settings()
    configure_logging(settings.log_format, "WARNING")
    if "URBANHUB_MQTT_URL" not in os.environ:
        settings = settings.model_copy(update={"mqtt_url": None})  # the demo needs no broker
    console.print(f"database: {_redacted(settings.database_url)}")
    options = DemoOptions(host=host, port=port, seed=seed, sensors=sensors,
                          backfill_hours=backfill_hours, interval=interval)
    try:
        report = run_demo(settings, options, console)
    except DemoError as exc:
        console.print(f"[red]demo failed:[/] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"stopped after {report.messages} live messages "
                  f"({report.stored} readings stored, {report.rejected} rejected)")


@app.command("import")
def import_files(
        files: list[Path] = typer.Argument(..., help="Files (.json, .jsonl, .geojson, .csv, "
                                                     ".csv.gz) or folders of them."),
        format_: str | None = typer.Option(None, "--format",
                                           help="csv, geojson or ngsild (default: by name)."),
        preset: str | None = typer.Option(None, help="Ready CSV mapping: beijing-prsa."),
        entity_type: str | None = typer.Option(None, "--type",
                                               help="Entity type of CSV rows or features."),
        id_column: str | None = typer.Option(None, help="CSV column holding the entity id."),
        id_template: str | None = typer.Option(
            None, help="Entity id from CSV columns, e.g. urn:ngsi-ld:Sensor:{station}."),
        id_property: str | None = typer.Option(None, help="GeoJSON property with the id."),
        time_column: str | None = typer.Option(None, help="CSV column with ISO 8601 times."),
        time_parts: str | None = typer.Option(
            None, help="CSV columns for year,month,day,hour (instead of --time-column)."),
        tz: str = typer.Option("UTC", "--timezone",
                               help="Zone of times without offset: UTC, +08:00, Europe/Madrid."),
        attr: list[str] = typer.Option([], "--attr",
                                       help="COLUMN=name[:unitCode], once per attribute."),
        context: str | None = typer.Option(None, help="@context URL for names and types."),
        since: str | None = typer.Option(None, help="Only CSV rows at or after this time."),
        until: str | None = typer.Option(None, help="Only CSV rows before this time."),
        batch_size: int = typer.Option(5000, min=1, help="Readings per ingest batch.")) -> None:
    """Import NGSI-LD, GeoJSON or CSV time-series files, with a progress bar and summary."""
    from urbanhub.hub.runtime import Hub
    from urbanhub.ingest.importer import (
        ImportFailed,
        ImportOptions,
        ImportReport,
        import_file,
        iter_paths,
    )
    from urbanhub.model.errors import UrbanhubError

    try:
        options = ImportOptions(format=format_, entity_type=entity_type, id_property=id_property,
                                context=context, batch_size=batch_size,
                                mapping=_csv_mapping(preset, entity_type, id_column, id_template,
                                                     time_column, time_parts, tz, attr, context,
                                                     since, until))
    except ImportFailed as exc:
        console.print(f"[red]{exc.detail}[/]")
        raise typer.Exit(2) from exc
    paths = list(iter_paths(files))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        console.print(f"[red]not found:[/] {', '.join(missing)}")
        raise typer.Exit(2)
    settings = get_settings()
    hub = Hub(settings)
    failed = 0
    table = Table(title="import summary")
    for column in ("file", "rows", "entities", "readings stored", "duplicates", "missing",
                   "skipped", "rejected"):
        table.add_column(column, justify="left" if column == "file" else "right")
    total = ImportReport()
    try:
        hub.upgrade_schema()
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                      TimeRemainingColumn(), console=console) as progress:
            task = progress.add_task("import", total=sum(p.stat().st_size for p in paths))
            for path in paths:
                progress.update(task, description=path.name)
                try:
                    report = import_file(hub, path, options,
                                         lambda n: progress.advance(task, n))
                except UrbanhubError as exc:
                    failed += 1
                    console.print(f"[red]{path.name}:[/] {exc.detail}")
                    continue
                except (OSError, UnicodeDecodeError, csv.Error) as exc:
                    failed += 1
                    console.print(f"[red]{path.name}: cannot read it:[/] {exc}")
                    continue
                total.add(report)
                table.add_row(path.name, *_figures(report))
    finally:
        hub.close()
    if len(paths) > 1:
        table.add_row("[bold]total[/]", *_figures(total))
    output.print(table)
    for reason in total.errors:
        output.print(f"  rejected: {reason}")
    if failed:
        raise typer.Exit(1)


def _figures(report: ImportReport) -> list[str]:
    return [f"{n:,}" for n in (report.rows, report.entities, report.stored, report.duplicates,
                              report.missing, report.skipped, report.rejected)]


def _csv_mapping(preset: str | None, entity_type: str | None, id_column: str | None,
                 id_template: str | None, time_column: str | None, time_parts: str | None,
                 tz: str, attrs: list[str], context: str | None, since: str | None,
                 until: str | None) -> CsvMapping | None:
    """The CSV mapping the options describe, or None when they describe none."""
    from urbanhub.ingest.importer import (
        PRESETS,
        CsvMapping,
        ImportFailed,
        parse_attr_option,
        parse_bound,
        parse_timezone,
    )

    if preset is not None:
        if preset not in PRESETS:
            raise ImportFailed(f"Unknown preset {preset!r}; known: {', '.join(PRESETS)}.")
        if attrs or id_column or id_template or time_column or time_parts:
            raise ImportFailed("--preset fixes the mapping: leave out --attr, --id-* and "
                               "time column options.")
        mapping = PRESETS[preset]()
    elif attrs:
        parts: tuple[str, str, str, str] | None = None
        if time_parts:
            columns = [p.strip() for p in time_parts.split(",")]
            if len(columns) != 4:
                raise ImportFailed("--time-parts takes four columns: year,month,day,hour.")
            parts = (columns[0], columns[1], columns[2], columns[3])
        if not entity_type:
            raise ImportFailed("A CSV mapping needs --type.")
        mapping = CsvMapping(entity_type=entity_type,
                             attributes=[parse_attr_option(a) for a in attrs],
                             id_column=id_column, id_template=id_template,
                             time_column=time_column,
                             time_parts=parts,
                             timezone=parse_timezone(tz), context=context)
    else:
        return None
    mapping.since = parse_bound(since, mapping.timezone) if since else None
    mapping.until = parse_bound(until, mapping.timezone) if until else None
    return mapping


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


if __name__ == "__main__":
    app()
