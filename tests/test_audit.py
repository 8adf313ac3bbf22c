"""The tamper-evident audit trail: hashing and verification, the repository on SQLite and
PostgreSQL (tampering with raw SQL, concurrent writers in threads and processes), the CLI."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner

from urbanhub.cli import app
from urbanhub.config import get_settings
from urbanhub.governance.audit import (
    GENESIS_HASH,
    AuditEntry,
    AuditError,
    AuditEvent,
    ChainHead,
    canonical_json,
    chain,
    verify_chain,
)
from urbanhub.hub.runtime import Hub
from urbanhub.store.audit import AuditLog
from urbanhub.store.db import make_engine

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
ROOT = Path(__file__).resolve().parent.parent


def event(i: int, actor: str = "urn:ngsi-ld:Person:analyst") -> AuditEvent:
    return AuditEvent(actor, "decision.permit", f"urn:ngsi-ld:Dataset:d{i % 3}",
                      {"purpose": "research", "i": i})


def entries(n: int) -> list[AuditEntry]:
    return chain(ChainHead.genesis(), [event(i) for i in range(n)], T0)


def rechained(items: list[AuditEntry]) -> list[AuditEntry]:
    """``items`` with valid hashes and links again: what an attacker who knows the
    algorithm writes."""
    out: list[AuditEntry] = []
    for item in items:
        prev = out[-1].hash if out else GENESIS_HASH
        draft = replace(item, prev_hash=prev, hash="")
        out.append(replace(draft, hash=draft.computed_hash()))
    return out


# --- pure: canonical form and hashing -------------------------------------------------

def test_hash_is_sha256_of_sorted_compact_json_of_every_other_field() -> None:
    first, second = entries(2)
    body = {"seq": 1, "at": "2026-03-01T12:00:00.123456Z", "actor": first.actor,
            "action": "decision.permit", "target": "urn:ngsi-ld:Dataset:d0",
            "details": {"i": 0, "purpose": "research"}, "prev_hash": "0" * 64}
    expected = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"))
                              .encode()).hexdigest()
    assert first.hash == expected
    assert first.canonical().startswith('{"action":"decision.permit","actor":')
    assert second.prev_hash == first.hash and second.seq == 2


def test_details_are_normalised_so_they_hash_the_same_after_a_round_trip() -> None:
    item = AuditEvent("u", "disposal", None, {"range": (1, 2), "nested": {"b": 1, "a": "é"}})
    assert item.details == {"range": [1, 2], "nested": {"b": 1, "a": "é"}}
    assert canonical_json(item.details) == '{"nested":{"a":"é","b":1},"range":[1,2]}'


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"actor": "", "action": "disposal"}, "actor"),
    ({"actor": "u", "action": "Decision Permit"}, "dotted lowercase"),
    ({"actor": "u", "action": "erasure", "details": {"x": float("nan")}}, "plain JSON"),
    ({"actor": "u", "action": "erasure", "details": {"x": object()}}, "plain JSON"),
    ({"actor": "u", "action": "erasure", "details": [1]}, "JSON object"),
])
def test_malformed_events_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(AuditError, match=message):
        AuditEvent(**kwargs)  # type: ignore[arg-type]


def test_naive_times_are_refused() -> None:
    with pytest.raises(AuditError, match="timezone-aware"):
        chain(ChainHead.genesis(), [event(0)], datetime(2026, 1, 1))


# --- pure: verification ----------------------------------------------------------------

def test_intact_and_empty_chains_verify() -> None:
    report = verify_chain(entries(50))
    assert report.ok and report.checked == 50 and report.head.seq == 50
    empty = verify_chain([])
    assert empty.ok and empty.head == ChainHead.genesis()
    assert "intact: 0 entries" in empty.message()


def tampered(kind: str) -> list[AuditEntry]:
    """A chain of 10 entries tampered in one of the ways verification must name."""
    chain_ = entries(10)
    if kind == "edited":
        chain_[3] = replace(chain_[3], details={"purpose": "marketing", "i": 3})
    elif kind == "edited-time":
        chain_[3] = replace(chain_[3], at=T0 + timedelta(seconds=1))
    elif kind == "removed":
        del chain_[4]
    elif kind == "removed-first":
        del chain_[0]
    elif kind == "removed-renumbered":
        chain_ = chain_[:4] + [replace(e, seq=e.seq - 1) for e in chain_[5:]]
    elif kind == "removed-rehashed":
        chain_ = chain_[:4] + [replace(e, seq=e.seq - 1) for e in chain_[5:]]
        chain_[4:] = [replace(e, hash=replace(e, hash="").computed_hash()) for e in chain_[4:]]
    elif kind == "inserted":
        forged = rechained([*chain_[:5], replace(chain_[0], seq=6, actor="mallory")])[5]
        chain_ = [*chain_[:5], forged, *(replace(e, seq=e.seq + 1) for e in chain_[5:])]
    elif kind == "inserted-garbage":
        forged = replace(chain_[0], seq=6, actor="mallory")
        chain_ = [*chain_[:5], forged, *(replace(e, seq=e.seq + 1) for e in chain_[5:])]
    elif kind == "inserted-two":
        prefix = rechained([*chain_[:5], replace(chain_[0], seq=6), replace(chain_[0], seq=7)])
        chain_ = [*prefix, *(replace(e, seq=e.seq + 2) for e in chain_[5:])]
    elif kind == "duplicate":
        chain_.insert(5, replace(chain_[4], actor="mallory"))
    elif kind == "swapped":
        chain_[2], chain_[3] = replace(chain_[3], seq=3), replace(chain_[2], seq=4)
    elif kind == "swapped-far":
        chain_[2], chain_[6] = replace(chain_[6], seq=3), replace(chain_[2], seq=7)
    elif kind == "swapped-first":
        chain_[0], chain_[1] = replace(chain_[1], seq=1), replace(chain_[0], seq=2)
    return chain_


@pytest.mark.parametrize(("kind", "seq", "reason"), [
    ("edited", 4, "edited"),
    ("edited-time", 4, "edited"),
    ("removed", 5, "removed"),
    ("removed-first", 1, "removed"),
    ("removed-renumbered", 5, "removed"),
    ("removed-rehashed", 5, "removed"),
    ("inserted", 6, "inserted"),
    ("inserted-garbage", 6, "inserted"),
    ("inserted-two", 6, "inserted"),
    ("duplicate", 5, "inserted"),
    ("swapped", 3, "reordered"),
    ("swapped-far", 3, "reordered"),
    ("swapped-first", 1, "reordered"),
])
def test_verification_names_the_first_bad_entry(kind: str, seq: int, reason: str) -> None:
    report = verify_chain(tampered(kind))
    assert report.problem is not None, kind
    assert (report.problem.seq, report.problem.reason) == (seq, reason), report.message()
    assert report.checked == report.head.seq < 10
    assert f"broken at entry {seq} ({reason})" in report.message()


def test_an_anchor_catches_a_cut_or_rewritten_tail() -> None:
    chain_ = entries(10)
    anchor = ChainHead.of(chain_[7])
    assert verify_chain(chain_, anchor).ok
    cut = verify_chain(chain_[:6], anchor)
    assert cut.problem is not None and (cut.problem.seq, cut.problem.reason) == (7, "removed")
    rewritten = rechained([*chain_[:5], replace(chain_[5], actor="mallory"), *chain_[6:]])
    assert verify_chain(rewritten).ok  # hashes alone cannot see a fully rewritten tail
    caught = verify_chain(rewritten, anchor)
    assert caught.problem is not None and caught.problem.seq == 8
    assert "anchored head" in caught.problem.detail


def test_anchors_round_trip_and_bad_ones_are_refused() -> None:
    head = ChainHead.of(entries(3)[-1])
    assert ChainHead.from_json(json.loads(json.dumps(head.to_json()))) == head
    assert ChainHead.from_json(ChainHead.genesis().to_json()) == ChainHead.genesis()
    bad: object
    for bad in ([], {"seq": -1, "hash": "0" * 64, "at": None},
                {"seq": 1, "hash": "abc", "at": None},
                {"seq": 1, "hash": "0" * 64, "at": "yesterday"}):
        with pytest.raises(AuditError):
            ChainHead.from_json(bad)


# --- repository on SQLite and PostgreSQL ---------------------------------------------

def tamper(engine: Engine, *statements: str, **params: object) -> None:
    """Run raw SQL past the append-only triggers, as someone with database access can."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("SET LOCAL session_replication_role = replica")
        else:
            connection.exec_driver_sql("DROP TRIGGER IF EXISTS audit_log_no_update")
            connection.exec_driver_sql("DROP TRIGGER IF EXISTS audit_log_no_delete")
        for statement in statements:
            connection.execute(text(statement), params)


@pytest.fixture
def log(hub: Hub) -> AuditLog:
    return AuditLog(hub.engine)


def test_append_in_batches_then_verify(log: AuditLog) -> None:
    assert log.head() is None
    assert log.export_head() == {"seq": 0, "hash": GENESIS_HASH, "at": None}
    assert log.verify().ok
    first = log.append([event(0)])
    rest = log.append([event(i) for i in range(1, 250)])
    assert [e.seq for e in first + rest] == list(range(1, 251))
    assert rest[0].prev_hash == first[0].hash
    assert log.append([]) == []
    seen: list[int] = []
    log.chunk_size = 64
    report = log.verify(progress=seen.append)
    assert report.ok and report.checked == 250, report.message()
    assert seen == [64, 64, 64, 58]
    head = log.head()
    assert head == rest[-1] and head.details == {"purpose": "research", "i": 249}
    assert log.export_head() == {"seq": 250, "hash": rest[-1].hash,
                                 "at": rest[-1].at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}


def test_entries_join_the_callers_transaction(log: AuditLog) -> None:
    log.append([event(0)])
    with pytest.raises(RuntimeError), log.transaction() as connection:
        log.append([event(1), event(2)], connection)
        raise RuntimeError("the grant could not be stored")
    assert log.head().seq == 1  # type: ignore[union-attr]
    with log.transaction() as connection:
        log.append([event(1)], connection)
        log.append([event(2)], connection)
    assert log.head().seq == 3 and log.verify().ok  # type: ignore[union-attr]


def test_the_table_refuses_updates_and_deletes(log: AuditLog) -> None:
    log.append([event(0)])
    for statement in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"), log.engine.begin() as connection:
            connection.exec_driver_sql(statement)
    assert log.verify().ok


def _forge_at_6(log: AuditLog) -> None:
    """Shift entries 6.. up by one and insert a forged entry 6 with a valid hash and link."""
    fifth = next(e for e in entries_in(log) if e.seq == 5)
    forged = chain(ChainHead.of(fifth), [AuditEvent("mallory", "grant.create", "ds")], T0)[0]
    tamper(log.engine, "UPDATE audit_log SET seq = -seq WHERE seq >= 6",
           "UPDATE audit_log SET seq = 1 - seq WHERE seq < 0",
           "INSERT INTO audit_log (seq, at, actor, action, target, details, prev_hash, hash) "
           "VALUES (6, :at, 'mallory', 'grant.create', 'ds', '{}', :prev, :hash)",
           at=forged.at.replace(tzinfo=None) if log.engine.dialect.name == "sqlite"
           else forged.at, prev=forged.prev_hash, hash=forged.hash)


def entries_in(log: AuditLog) -> list[AuditEntry]:
    with log.engine.connect() as connection:
        return list(log._stream(connection, None))


@pytest.mark.parametrize(("kind", "seq", "reason"), [
    ("edited", 4, "edited"), ("deleted", 5, "removed"), ("inserted", 6, "inserted"),
    ("swapped", 3, "reordered"),
])
def test_tampering_in_the_database_is_caught(log: AuditLog, kind: str, seq: int,
                                             reason: str) -> None:
    log.append([event(i) for i in range(10)])
    if kind == "edited":
        tamper(log.engine, "UPDATE audit_log SET details = :details WHERE seq = 4",
               details='{"i":3,"purpose":"marketing"}')
    elif kind == "deleted":
        tamper(log.engine, "DELETE FROM audit_log WHERE seq = 5")
    elif kind == "inserted":
        _forge_at_6(log)
    else:
        tamper(log.engine, "UPDATE audit_log SET seq = -3 WHERE seq = 3",
               "UPDATE audit_log SET seq = 3 WHERE seq = 7",
               "UPDATE audit_log SET seq = 7 WHERE seq = -3")
    report = log.verify()
    assert report.problem is not None
    assert (report.problem.seq, report.problem.reason) == (seq, reason), report.message()


def _append_concurrently(log: AuditLog, threads: int, rounds: int) -> None:
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def writer(worker: int) -> None:
        own = AuditLog(log.engine)  # its own in-process lock: only the database serialises
        barrier.wait()
        try:
            for i in range(rounds):
                own.append([event(i, f"thread-{worker}")] * (1 + i % 3))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    workers = [threading.Thread(target=writer, args=(w,)) for w in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors


def test_concurrent_threads_make_one_unbroken_chain(log: AuditLog) -> None:
    _append_concurrently(log, threads=6, rounds=15)
    report = log.verify()
    per_thread = sum(1 + i % 3 for i in range(15))
    assert report.ok, report.message()
    assert report.checked == 6 * per_thread
    counts: dict[str, int] = {}
    for entry in entries_in(log):
        counts[entry.actor] = counts.get(entry.actor, 0) + 1
    assert counts == {f"thread-{w}": per_thread for w in range(6)}


WRITER = """
import sys
from urbanhub.governance.audit import AuditEvent
from urbanhub.store.audit import AuditLog
from urbanhub.store.db import make_engine
log = AuditLog(make_engine(sys.argv[1]))
for i in range(int(sys.argv[3])):
    log.append([AuditEvent(sys.argv[2], "device.update", "dev-1", {"i": i})] * (1 + i % 2))
"""


def test_concurrent_processes_and_threads_make_one_unbroken_chain(log: AuditLog) -> None:
    url = log.engine.url.render_as_string(hide_password=False)
    processes = [subprocess.Popen([sys.executable, "-c", WRITER, url, f"process-{p}", "40"],
                                  cwd=ROOT, stderr=subprocess.PIPE) for p in range(3)]
    _append_concurrently(log, threads=3, rounds=20)
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr.decode()
    report = log.verify()
    assert report.ok, report.message()
    assert report.checked == 3 * 60 + 3 * sum(1 + i % 3 for i in range(20))
    by_process = [e for e in entries_in(log) if e.actor == "process-0"]
    assert sorted({e.details["i"] for e in by_process}) == list(range(40))


# --- CLI -------------------------------------------------------------------------------

runner = CliRunner()


@pytest.fixture
def cli_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """A temporary SQLite file the CLI is pointed at (settings are cached per process)."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    monkeypatch.setenv("URBANHUB_DATABASE_URL", url)
    get_settings.cache_clear()
    engine = make_engine(url)
    yield engine
    engine.dispose()
    get_settings.cache_clear()


def test_cli_verify_and_head(cli_db: Engine, tmp_path: Path) -> None:
    assert runner.invoke(app, ["audit", "verify"]).exit_code == 2  # no schema yet
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    log = AuditLog(cli_db)
    log.append([event(i) for i in range(20)])

    intact = runner.invoke(app, ["audit", "verify"])
    assert intact.exit_code == 0, intact.output
    assert "audit trail intact: 20 entries" in intact.stdout

    head = runner.invoke(app, ["audit", "head"])
    assert head.exit_code == 0
    anchored = json.loads(head.stdout)
    assert anchored == log.export_head() and anchored["seq"] == 20
    anchor = tmp_path / "head.json"
    anchor.write_text(head.stdout)
    assert runner.invoke(app, ["audit", "verify", "--anchor", str(anchor)]).exit_code == 0

    tamper(cli_db, "DELETE FROM audit_log WHERE seq > 18")
    assert runner.invoke(app, ["audit", "verify"]).exit_code == 0  # a cut end needs the anchor
    cut = runner.invoke(app, ["audit", "verify", "--anchor", str(anchor)])
    assert cut.exit_code == 1
    assert "broken at entry 19 (removed)" in cut.stdout

    tamper(cli_db, "UPDATE audit_log SET actor = 'mallory' WHERE seq = 7")
    edited = runner.invoke(app, ["audit", "verify"])
    assert edited.exit_code == 1
    assert "audit trail broken at entry 7 (edited)" in edited.stdout

    anchor.write_text('{"seq": 1}')
    bad = runner.invoke(app, ["audit", "verify", "--anchor", str(anchor)])
    assert bad.exit_code == 2 and "cannot read the anchor" in bad.output
