"""The Smart Data Models urbanhub ships: their contexts, schemas and offline $ref registry.

One table says which types are known, which shipped @context names them and where their
schema lives, so the validator and the NGSI-v2 converter cannot disagree about either.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

if TYPE_CHECKING:  # referencing exports its Resolver class only from a private module
    from referencing._core import Resolver

SDM_CONTEXT = "https://raw.githubusercontent.com/smart-data-models/dataModel.{}/master/context.jsonld"

#: Documents the schemas ``$ref`` by URL, answered from package data (file, URLs it is
#: known under). The Environment base schema is referenced at raw.githubusercontent.com but
#: declares a github.io ``$id``; both resolve to the same shipped file.
_REFERENCED: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("common-schema.json", ("https://smart-data-models.github.io/data-models/common-schema.json",)),
    ("Environment-schema.json", (
        "https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/master/"
        "Environment-schema.json",
        "https://smart-data-models.github.io/dataModel.Environment/Environment-schema.json")),
)


@dataclass(frozen=True)
class SmartDataModel:
    """One entity type of a Smart Data Models subject (dataModel.<subject>)."""

    name: str
    subject: str

    @property
    def context_url(self) -> str:
        return SDM_CONTEXT.format(self.subject)

    @property
    def schema_file(self) -> str:
        return f"{self.name}/schema.json"


MODELS: dict[str, SmartDataModel] = {model.name: model for model in (
    SmartDataModel("AirQualityObserved", "Environment"),
    SmartDataModel("NoiseLevelObserved", "Environment"),
    SmartDataModel("TrafficFlowObserved", "Transportation"),
    SmartDataModel("ParkingSpot", "Parking"),
    SmartDataModel("WasteContainer", "WasteManagement"),
    SmartDataModel("Streetlight", "Streetlighting"),
)}


def known_types() -> list[str]:
    """Names of the entity types that have a shipped schema (their short SDM names)."""
    return sorted(MODELS)


def _read(path: str) -> dict[str, Any]:
    text = resources.files("urbanhub.sdm").joinpath("schemas", *path.split("/")).read_text(
        encoding="utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


@cache
def load_schema(name: str) -> dict[str, Any]:
    """The shipped schema of a known type, exactly as published."""
    return _read(MODELS[name].schema_file)


@cache
def schema_registry() -> Registry[Any]:
    """Every document a shipped schema may reference, keyed by the URLs used to reach it.

    Each is read as draft 2020-12, the dialect of the schemas that reference them (the
    Environment base schema declares the unversioned ``http://json-schema.org/schema#``,
    which no specification names; its keywords mean the same in 2020-12). The registry has
    no ``retrieve`` hook, so an unknown URL fails instead of going to the network.
    """
    pairs: list[tuple[str, Resource[Any]]] = []
    for path, urls in _REFERENCED:
        resource = DRAFT202012.create_resource(_read(path))
        pairs.extend((url, resource) for url in urls)
    for model in MODELS.values():
        schema = load_schema(model.name)
        pairs.append((schema["$id"], DRAFT202012.create_resource(schema)))
    return Registry().with_resources(pairs)


def _properties(schema: Mapping[str, Any], resolver: Resolver[Any]) -> Iterator[
        tuple[str, Mapping[str, Any], Resolver[Any]]]:
    """Top-level property subschemas of a schema, following ``allOf`` and ``$ref``."""
    if "$ref" in schema:
        resolved = resolver.lookup(schema["$ref"])
        yield from _properties(resolved.contents, resolved.resolver)
    for name, subschema in schema.get("properties", {}).items():
        yield name, subschema, resolver
    for part in schema.get("allOf", ()):
        yield from _properties(part, resolver)


def _json_types(schema: Mapping[str, Any], resolver: Resolver[Any]) -> frozenset[str]:
    if "$ref" in schema:
        resolved = resolver.lookup(schema["$ref"])
        return _json_types(resolved.contents, resolved.resolver)
    declared = schema.get("type")
    if isinstance(declared, str):
        return frozenset({declared})
    if isinstance(declared, list):
        return frozenset(declared)
    found: frozenset[str] = frozenset()
    for key in ("anyOf", "oneOf"):
        for option in schema.get(key, ()):
            found |= _json_types(option, resolver)
    return found


@cache
def declared_types(name: str) -> dict[str, frozenset[str]]:
    """JSON types the schema of ``name`` allows for each top-level property.

    The converter aligns loosely typed NGSI-v2 values with these, and the validator uses
    them to see which properties are arrays.
    """
    schema = load_schema(name)
    resolver = schema_registry().resolver(base_uri=schema["$id"])
    types: dict[str, frozenset[str]] = {}
    for prop, subschema, at in _properties(schema, resolver):
        types[prop] = types.get(prop, frozenset()) | _json_types(subschema, at)
    return types
