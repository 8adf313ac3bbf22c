"""NGSI-LD geo-queries (placeholder until the geo module lands)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from urbanhub.model.errors import OperationNotSupported
from urbanhub.ngsild.context import TermMap


@dataclass
class GeoQuery:
    predicate: Callable[[dict[str, Any]], bool]
    bbox: tuple[float, float, float, float] | None


def parse_geo_query(georel: str | None, geometry: str | None, coordinates: str | None,
                    geoproperty: str | None, terms: TermMap) -> GeoQuery | None:
    if georel is None and geometry is None and coordinates is None:
        return None
    raise OperationNotSupported("geo-queries are not supported yet.")
