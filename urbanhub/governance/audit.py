"""Tamper-evident audit trail: entries, their canonical form, hashing and chain verification.

Each entry's hash is SHA-256 over the canonical serialisation (sorted keys, compact, UTF-8)
of all its other fields, the previous entry's hash included. Changing, removing, inserting
or reordering entries therefore breaks the chain where it happened, and ``verify_chain``
names the first such place. Someone able to rewrite the database could recompute every
hash from the tampered entry onwards; exporting the head (``ChainHead``) to somewhere the
hub cannot write, and verifying against it later, closes that gap.

Pure: the store streams entries in; nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from itertools import islice
from typing import Any, Literal

GENESIS_HASH = "0" * 64
#: Entries read past the first bad one to tell a reordering from an insertion or removal.
LOOKAHEAD = 1000
_ACTION = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*")
_HASH = re.compile(r"[0-9a-f]{64}")

Reason = Literal["edited", "removed", "inserted", "reordered"]


class AuditError(ValueError):
    """An event or anchor that cannot be part of the trail (a caller's mistake)."""


def canonical_json(value: Any) -> str:
    """Sorted-key compact JSON: the one serialisation hashes are computed over."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise AuditError(f"audit details must be plain JSON: {exc}") from exc


def format_time(at: datetime) -> str:
    """UTC with microseconds and a ``Z``: what both backends store exactly."""
    if at.tzinfo is None:
        raise AuditError("audit times must be timezone-aware")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """What happened, as the caller reports it; the trail adds sequence, time and hashes.

    ``details`` is normalised through JSON on creation, so what is hashed at append time is
    exactly what is read back when verifying.
    """

    actor: str
    action: str
    target: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.actor:
            raise AuditError("an audit event needs an actor (the subject id)")
        if not _ACTION.fullmatch(self.action):
            raise AuditError(f"audit action {self.action!r} is not a dotted lowercase name "
                             "such as 'decision.permit'")
        if not isinstance(self.details, Mapping):
            raise AuditError("audit details must be a JSON object")
        object.__setattr__(self, "details", json.loads(canonical_json(dict(self.details))))


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One link of the chain as stored."""

    seq: int
    at: datetime
    actor: str
    action: str
    target: str | None
    details: Mapping[str, Any]
    prev_hash: str
    hash: str

    def canonical(self) -> str:
        """Every field but ``hash``, in canonical JSON."""
        return canonical_json({"seq": self.seq, "at": format_time(self.at), "actor": self.actor,
                               "action": self.action, "target": self.target,
                               "details": self.details, "prev_hash": self.prev_hash})

    def computed_hash(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The last entry's sequence number, hash and time: what gets anchored outside the hub."""

    seq: int
    hash: str
    at: datetime | None

    @classmethod
    def genesis(cls) -> ChainHead:
        return cls(0, GENESIS_HASH, None)

    @classmethod
    def of(cls, entry: AuditEntry | None) -> ChainHead:
        return cls.genesis() if entry is None else cls(entry.seq, entry.hash, entry.at)

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash,
                "at": None if self.at is None else format_time(self.at)}

    @classmethod
    def from_json(cls, data: Any) -> ChainHead:
        """Read an exported head back, refusing anything that is not one."""
        if not isinstance(data, dict):
            raise AuditError("an anchor is a JSON object with seq, hash and at")
        seq, digest, at = data.get("seq"), data.get("hash"), data.get("at")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise AuditError("the anchor's seq must be a non-negative integer")
        if not isinstance(digest, str) or not _HASH.fullmatch(digest):
            raise AuditError("the anchor's hash must be 64 lowercase hex digits")
        if at is not None and not isinstance(at, str):
            raise AuditError("the anchor's at must be an ISO 8601 time or null")
        try:
            when = None if at is None else datetime.fromisoformat(at)
        except ValueError as exc:
            raise AuditError(f"the anchor's at is not an ISO 8601 time: {at!r}") from exc
        return cls(seq, digest, when)


def chain(head: ChainHead, events: Sequence[AuditEvent], at: datetime) -> list[AuditEntry]:
    """The entries that append ``events`` after ``head``, in order, all stamped ``at``."""
    entries: list[AuditEntry] = []
    seq, prev = head.seq, head.hash
    for event in events:
        seq += 1
        draft = AuditEntry(seq, at, event.actor, event.action, event.target, event.details,
                           prev, "")
        prev = draft.computed_hash()
        entries.append(replace(draft, hash=prev))
    return entries


@dataclass(frozen=True, slots=True)
class Problem:
    """The first bad entry: its sequence number, what is wrong, and how that shows."""

    seq: int
    reason: Reason
    detail: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """Outcome of a verification: entries found intact, the last of them, the first problem."""

    checked: int
    head: ChainHead
    problem: Problem | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def message(self) -> str:
        if self.problem is None:
            return (f"audit trail intact: {self.checked} entries, head {self.head.seq} "
                    f"{self.head.hash}")
        return (f"audit trail broken at entry {self.problem.seq} ({self.problem.reason}): "
                f"{self.problem.detail}")


def verify_chain(entries: Iterable[AuditEntry], anchor: ChainHead | None = None) -> VerifyReport:
    """Check entries read in sequence order; name the first one edited, removed, inserted or
    reordered. With an ``anchor`` (a head exported earlier) also catch a chain rewritten or
    cut back behind it, which hashes alone cannot show."""
    stream = iter(entries)
    last: AuditEntry | None = None
    checked = 0
    for entry in stream:
        expected = last.seq + 1 if last else 1
        if (entry.seq != expected or entry.prev_hash != (last.hash if last else GENESIS_HASH)
                or entry.computed_hash() != entry.hash):
            ahead = list(islice(stream, LOOKAHEAD))
            return VerifyReport(checked, ChainHead.of(last), _diagnose(last, entry, ahead))
        if anchor is not None and entry.seq == anchor.seq and entry.hash != anchor.hash:
            return VerifyReport(checked, ChainHead.of(last), Problem(
                entry.seq, "edited", f"entry {entry.seq} differs from the anchored head "
                f"(hash {anchor.hash[:12]}…): the chain was rewritten up to here"))
        last = entry
        checked += 1
    head = ChainHead.of(last)
    if anchor is not None and head.seq < anchor.seq:
        return VerifyReport(checked, head, Problem(
            head.seq + 1, "removed", f"the chain ends at entry {head.seq} but the anchored "
            f"head is entry {anchor.seq}: entries were cut off the end"))
    return VerifyReport(checked, head)


def _diagnose(last: AuditEntry | None, entry: AuditEntry, ahead: list[AuditEntry]) -> Problem:
    """Explain why ``entry`` does not follow ``last`` (the last good entry, None at genesis)."""
    expected = last.seq + 1 if last else 1
    last_hash = last.hash if last else GENESIS_HASH
    if entry.seq < expected:
        return Problem(entry.seq, "inserted", f"sequence number {entry.seq} appears twice")
    if entry.seq > expected:
        return Problem(expected, "removed", f"{_span(expected, entry.seq - 1)} removed: the "
                       f"sequence jumps from {expected - 1} to {entry.seq}")
    if last is not None and entry.prev_hash == last.prev_hash:
        return Problem(last.seq, "inserted", f"entry {last.seq} is not part of the chain: "
                       f"entry {entry.seq} links straight to entry {last.seq - 1}")
    written_as = _written_as(entry)
    predecessor = next((e for e in ahead if e.hash == entry.prev_hash), None)
    if predecessor is not None:
        where = (f"it was written as entry {written_as}" if written_as is not None
                 else f"it was written after the entry now at {predecessor.seq}")
        return Problem(entry.seq, "reordered", f"entry {entry.seq} is out of place: {where}")
    if written_as is not None and written_as > entry.seq:
        return Problem(entry.seq, "removed", f"{_span(entry.seq, written_as - 1)} removed and "
                       f"later entries renumbered (entry {entry.seq} was written as "
                       f"{written_as})")
    if written_as is not None and written_as < entry.seq:
        return Problem(written_as, "inserted", f"{_span(written_as, entry.seq - 1)} inserted "
                       f"and later entries renumbered (entry {entry.seq} was written as "
                       f"{written_as})")
    if ahead and ahead[0].prev_hash == last_hash:
        return Problem(entry.seq, "inserted", f"entry {entry.seq} is not part of the chain: "
                       f"entry {ahead[0].seq} links straight to entry {entry.seq - 1}")
    if entry.computed_hash() != entry.hash:
        changed = "its content" if entry.prev_hash == last_hash else "its content and link"
        return Problem(entry.seq, "edited", f"{changed} changed after it was written "
                                            "(hash mismatch)")
    return Problem(entry.seq, "removed", f"entry {entry.seq} does not link to entry "
                   f"{entry.seq - 1} (previous-hash mismatch): entries before it were removed")


def _written_as(entry: AuditEntry) -> int | None:
    """The sequence number ``entry`` was hashed with, searched within ``LOOKAHEAD`` of its
    own, or None when no number gives its hash (then its content changed)."""
    for distance in range(1, LOOKAHEAD + 1):
        for seq in (entry.seq + distance, entry.seq - distance):
            if seq >= 1 and replace(entry, seq=seq).computed_hash() == entry.hash:
                return seq
    return None


def _span(first: int, last: int) -> str:
    return f"entry {first} was" if first == last else f"entries {first} to {last} were"
