"""Keyed, rotatable pseudonyms: what a pseudonymisation obligation puts in place of a value.

A pseudonym is ``urn:urbanhub:pseudonym:<key id>:<HMAC-SHA256 of the value>``: the same
value gives the same pseudonym under one key (so a pseudonymised identifier can still be
counted, joined and queried by its pseudonym), nobody without the key can reverse it or
test a guess, and naming the key lets the city rotate keys without mixing pseudonyms of two
keys. The standard library's hmac is all this needs.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from urbanhub.model.errors import UrbanhubError

PREFIX = "urn:urbanhub:pseudonym:"


class PseudonymKeyError(UrbanhubError):
    """The pseudonymisation keys are missing or malformed (a configuration error)."""

    title = "Pseudonymisation keys not usable"


class Pseudonymiser:
    """Replaces values with keyed pseudonyms; ``current`` names the key new reads use."""

    def __init__(self, keys: Mapping[str, bytes], current: str) -> None:
        if current not in keys:
            raise PseudonymKeyError(f"The current pseudonym key {current!r} is not among the "
                                    f"configured keys ({', '.join(sorted(keys)) or 'none'}).")
        if any(len(key) < 16 for key in keys.values()):
            raise PseudonymKeyError("Pseudonym keys must be at least 16 bytes long.")
        self._keys = dict(keys)
        self.current = current

    def pseudonym(self, value: Any, key_id: str | None = None) -> str:
        """The pseudonym of a JSON value (strings and numbers alike) under a key."""
        key_id = key_id or self.current
        key = self._keys.get(key_id)
        if key is None:
            raise PseudonymKeyError(f"No pseudonym key {key_id!r} is configured.")
        canonical = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        digest = hmac.new(key, canonical, hashlib.sha256).hexdigest()[:32]
        return f"{PREFIX}{key_id}:{digest}"


def load_pseudonymiser(keys: Mapping[str, str], current: str | None,
                       key_file: str) -> Pseudonymiser:
    """Keys from the settings (id -> hex or text secret); without any, one key kept in
    ``key_file``, created on first use with owner-only permissions, so the embedded default
    works out of the box and keeps its pseudonyms stable across restarts."""
    if keys:
        return Pseudonymiser({kid: _secret(text) for kid, text in keys.items()},
                             current or next(iter(keys)))
    path = Path(key_file)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    return Pseudonymiser({"local": _secret(path.read_text().strip())}, "local")


def _secret(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        return text.encode("utf-8")
