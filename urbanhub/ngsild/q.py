"""NGSI-LD query language (placeholder until the q parser lands)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from urbanhub.model.errors import OperationNotSupported
from urbanhub.ngsild.context import TermMap


def parse_q(text: str, terms: TermMap) -> Callable[[dict[str, Any]], bool]:
    raise OperationNotSupported("q is not supported yet.")
