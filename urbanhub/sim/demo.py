"""``urbanhub demo``: the hub in-process plus the demo city feeding it over HTTP.

The server runs in a background thread (uvicorn, the same app as ``urbanhub serve``) and
the main thread plays the devices, so Ctrl-C lands where the loop can stop cleanly: the
feeder finishes, the server drains and the database is left ready for ``urbanhub serve``.
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta

import httpx
import uvicorn
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from urbanhub.config import Settings
from urbanhub.governance.catalog import LoadReport, Outcome
from urbanhub.governance.catalog_documents import parse_catalog
from urbanhub.hub.runtime import Hub
from urbanhub.model.caller import Caller
from urbanhub.model.governance import OrganisationKind, Role
from urbanhub.model.identity import Organisation
from urbanhub.ngsild.timeutil import utcnow
from urbanhub.sim.catalog import DEPARTMENTS, demo_catalog
from urbanhub.sim.city import CITY_NAME, build_city
from urbanhub.sim.devices import CityFeeder, DemoTransportError, SendReport
from urbanhub.sim.patterns import FaultConfig


class DemoError(RuntimeError):
    """The demo cannot start (port taken, hub not ready, provisioning refused)."""


@dataclass(frozen=True)
class DemoOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    seed: int = 42
    sensors: int = 48
    backfill_hours: float = 24.0
    interval: float = 5.0
    faults: FaultConfig = field(default_factory=FaultConfig)


class ServerThread:
    """uvicorn in a daemon thread; it installs no signal handlers there, the caller stops it."""

    def __init__(self, settings: Settings, host: str, port: int) -> None:
        from urbanhub.api.app import create_app

        self.hub = Hub(settings)
        config = uvicorn.Config(create_app(settings, hub=self.hub), host=host, port=port,
                                log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="urbanhub-server",
                                       daemon=True)

    def start(self, timeout_s: float = 30.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive():
                raise DemoError("the server did not start (is the port already in use?)")
            if time.monotonic() > deadline:
                raise DemoError(f"the server did not start within {timeout_s:.0f} s")
            time.sleep(0.05)

    def stop(self, timeout_s: float = 15.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)


def wait_ready(client: httpx.Client, timeout_s: float = 30.0) -> None:
    """Poll /health until the hub answers 200 (schema upgraded, database reachable)."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = client.get("/health")
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise DemoError(f"the hub did not become ready within {timeout_s:.0f} s ({last})")


PLATFORM_KEY_LIFETIME = timedelta(days=1)
OPERATOR_KEY_LIFETIME = timedelta(hours=1)


def load_demo_catalog(hub: Hub) -> LoadReport:
    """Declare the demo city's purposes and datasets (idempotent), so that the entities
    provisioned next land in their datasets."""
    purposes, datasets = parse_catalog(demo_catalog(), hub.contexts.resolve)
    return hub.catalog.load(Caller.system("demo"), purposes, datasets)


def platform_key(hub: Hub) -> str:
    """A fresh API key of the city's data platform, printed for whoever explores the demo
    (it holds the CDO role, so it reads and writes every dataset). The sensors themselves
    are provisioned by their departments' operators and report with their own keys."""
    return hub.identities.service_account_key(
        Caller.system("demo"), Organisation("riverton", f"City of {CITY_NAME}",
                                            OrganisationKind.DEPARTMENT),
        "riverton-platform", frozenset({Role.CDO}), PLATFORM_KEY_LIFETIME, "demo explorer").key


def operator_keys(hub: Hub) -> dict[str, str]:
    """Department id -> a fresh API key (read, write) of its operator, who provisions the
    department's sensors; departments and operators are created the first time. The keys
    only provision when the demo starts (readings carry the devices' own keys), so they
    live an hour."""
    return {department: hub.identities.service_account_key(
                Caller.system("demo"), Organisation(department, name,
                                                    OrganisationKind.DEPARTMENT),
                f"{department}-operator", frozenset({Role.OPERATOR}), OPERATOR_KEY_LIFETIME,
                "demo provisioning").key
            for department, name in DEPARTMENTS.items()}


def run_demo(settings: Settings, options: DemoOptions, console: Console) -> SendReport:
    """Serve, provision, backfill, then stream until interrupted; returns what was streamed."""
    city = build_city(options.seed, options.sensors)
    server = ServerThread(settings, options.host, options.port)
    base = f"http://{options.host}:{options.port}"
    # Ctrl-C and SIGTERM both stop the demo cleanly, even when started from a script that
    # ignores SIGINT for its background jobs.
    previous = {sig: signal.signal(sig, signal.default_int_handler)
                for sig in (signal.SIGINT, signal.SIGTERM)}
    live = SendReport()
    try:
        server.start()
        key = platform_key(server.hub)
        with httpx.Client(base_url=base, timeout=60.0) as client:  # requests bring their keys
            wait_ready(client)
            console.print(f"[bold]Urbanhub demo[/] ({CITY_NAME}, seed {options.seed}) ready:\n"
                          f"  API     {base}/ngsi-ld/v1/entities\n"
                          f"  docs    {base}/docs\n"
                          f"  health  {base}/health\n"
                          f"  key     {key}  (the city platform's, a CDO's: valid "
                          f"{PLATFORM_KEY_LIFETIME.days} day)")
            catalog = load_demo_catalog(server.hub)
            created = sum(o is Outcome.CREATED for o in catalog.datasets.values())
            console.print(f"catalog: {len(catalog.datasets)} datasets ({created} new)")
            feeder = CityFeeder(client, city, options.faults, operator_keys(server.hub))
            provisioned = feeder.provision()
            console.print(f"city: {len(city.districts)} districts, {len(city.sensors)} sensors "
                          f"({provisioned.created} created, {provisioned.existing} reused)")
            _backfill(feeder, options.backfill_hours, console)
            console.print(f"streaming live readings every {options.interval:g} s "
                          "(Ctrl-C to stop)")
            _stream(feeder, options.interval, live, console)
    except KeyboardInterrupt:
        console.print("stopping…")
    except (DemoTransportError, httpx.HTTPError) as exc:
        raise DemoError(str(exc)) from exc
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if server.thread.is_alive():
            server.stop()
    return live


def _backfill(feeder: CityFeeder, hours: float, console: Console) -> None:
    if hours <= 0:
        return
    with Progress(TextColumn("backfill {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        task = progress.add_task(f"last {hours:g} h", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        report = feeder.backfill(utcnow(), hours, on_progress=advance)
    console.print(f"backfill: {report.messages} messages, {report.stored} readings stored, "
                  f"{report.accepted - report.stored} already there, {report.rejected} rejected")


def _stream(feeder: CityFeeder, interval: float, report: SendReport, console: Console) -> None:
    next_at = time.monotonic()
    last_note = next_at
    while True:
        try:
            feeder.tick(utcnow(), report)
        except (DemoTransportError, httpx.HTTPError) as exc:
            console.print(f"[yellow]readings not delivered:[/] {exc}")
        now = time.monotonic()
        if now - last_note >= 60:
            console.print(f"live: {report.messages} messages, {report.stored} readings stored, "
                          f"{report.rejected} rejected")
            last_note = now
        next_at += interval
        delay = next_at - time.monotonic()
        if delay < 0:  # fell behind (slow hub): skip the missed ticks instead of bursting
            next_at -= delay
        time.sleep(max(0.0, delay))
