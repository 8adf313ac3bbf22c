"""Validation of entities against their FIWARE Smart Data Model JSON Schema, offline.

The schemas describe the keyValues form of an entity with the model's own short names, so
an entity is projected to that form (compacted with the model's shipped @context) before
it is validated. Where NGSI-LD and the schemas see the same data differently, we decide:

- Only an entity type whose *expanded IRI* is the model's (e.g.
  ``https://smartdatamodels.org/dataModel.Environment/AirQualityObserved``) is validated;
  a ``AirQualityObserved`` in another vocabulary is a different type. A multi-typed entity
  is checked against every known model it claims, each seeing ``type`` as its own name.
- Attributes are named by IRI, not by spelling: an attribute is the model's ``pm25`` only
  when it expands to the IRI the model's context gives ``pm25``. Anything else (the
  default vocabulary, another model's context) keeps its full IRI, which the schemas do
  not constrain.
- The entity-level ``required`` list is not enforced: every attribute present must be
  valid, but a write is not refused for attributes still absent. NGSI-LD has no
  mandatory attributes; entities are built up over several writes (created, then
  appended to, replaced, read by devices attribute by attribute), and the observation
  time the SDM puts in ``dateObserved`` is each attribute's ``observedAt`` in NGSI-LD.
  Completeness is a data-quality measure, not a validity one. ``required`` inside a
  value (GeoJSON ``coordinates``) is enforced.
- ``id``: the hub has already checked it is a URI; the schemas accept any URI.
- ``location`` and other GeoProperties are GeoJSON in both worlds; Relationships count
  by their target id(s). A Relationship to one entity is a set of one, so a property
  the schema declares as an array (``refDevice``) accepts it.
- JSON-LD value objects (``{"@type": "DateTime", "@value": "…"}``, as the SDM NGSI-LD
  examples write dates) are validated by their ``@value``.
- Every instance of a multi-instance attribute (datasetId) and every language of a
  LanguageProperty must satisfy the property's schema on its own.
- Formats are asserted (a ``dateObserved`` of ``"yesterday"`` is refused) with ISO 8601
  meaning: ``date-time`` without an offset is allowed, as the upstream examples use it.
- Two published constraints contradict the models' own examples and the quantities they
  describe; we read them more widely without editing the shipped files (`_RELAXED`).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time
from functools import cache
from typing import Any

from jsonschema import FormatChecker
from jsonschema.exceptions import ValidationError, best_match
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for

from urbanhub.model.errors import BadRequestData, LdContextNotAvailable
from urbanhub.ngsild.context import ContextLoader, ContextResolver, TermMap
from urbanhub.ngsild.entity import DEFAULT_DATASET, Entity, Instance, render_instance
from urbanhub.sdm.models import (
    MODELS,
    SmartDataModel,
    declared_types,
    load_schema,
    schema_registry,
)


def _no_network(url: str, _timeout_s: float) -> Any:
    raise LdContextNotAvailable(f"Smart Data Model validation never fetches {url!r}.")


#: Resolves only the shipped SDM contexts; validation must work with no network at all.
_RESOLVER = ContextResolver(ContextLoader(fetch=_no_network))

#: Published constraints read more widely, per model and property (the replacement
#: property schema). ``windDirection``: the schema says -180..180, but wind direction is
#: reported 0..360 by meteorological convention (WMO), and the model's own NGSI-LD example
#: has 186; both conventions are accepted. ``tsp`` (total suspended particles) is a mass
#: concentration the schema types as integer while its examples say 73.3; any number >= 0.
_RELAXED: dict[str, dict[str, dict[str, Any]]] = {
    "AirQualityObserved": {
        "windDirection": {"type": "number", "minimum": -180, "maximum": 360},
        "tsp": {"type": "number", "minimum": 0},
    },
}

_FORMATS = FormatChecker(formats=())
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:[^\s<>\"{}|\\^`]+$")


def _iso(parse: Callable[[str], object], value: str) -> bool:
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        parse(text)
    except ValueError:
        return False
    return True


@_FORMATS.checks("date-time")
def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True  # formats constrain strings only; "type" reports the rest
    return "T" in value.upper() and _iso(datetime.fromisoformat, value)


@_FORMATS.checks("date")
def _is_date(value: object) -> bool:
    return not isinstance(value, str) or _iso(date.fromisoformat, value)


@_FORMATS.checks("time")
def _is_time(value: object) -> bool:
    return not isinstance(value, str) or _iso(time.fromisoformat, value)


@_FORMATS.checks("uri")
def _is_uri(value: object) -> bool:
    return not isinstance(value, str) or bool(_URI.match(value))


@_FORMATS.checks("idn-email")
def _is_email(value: object) -> bool:
    if not isinstance(value, str):
        return True
    local, at, domain = value.rpartition("@")
    return bool(at and local and domain) and not any(c.isspace() for c in value)


@dataclass(frozen=True)
class ModelView:
    """What validating one model needs, built once: compiled schema and the naming."""

    model: SmartDataModel
    validator: Validator
    terms: TermMap
    type_iri: str
    names: dict[str, str]
    arrays: frozenset[str]


@cache
def model_view(name: str) -> ModelView:
    """Compile the schema of a known type once; every later write reuses this object."""
    model = MODELS[name]
    schema = copy.deepcopy(load_schema(name))
    schema.pop("required", None)
    for prop, replacement in _RELAXED.get(name, {}).items():
        _replace_property(schema, prop, replacement)
    cls = validator_for(schema)
    cls.check_schema(schema)
    validator = cls(schema, registry=schema_registry(), format_checker=_FORMATS)
    terms = _RESOLVER.resolve(model.context_url)
    declared = declared_types(name)
    names: dict[str, str] = {}  # IRI -> the model's name for it, the schema's spelling first
    for term, iri in sorted(terms.terms.items(),
                            key=lambda pair: (pair[0] not in declared, len(pair[0]))):
        names.setdefault(iri, term)
    return ModelView(model=model, validator=validator, terms=terms, type_iri=terms.expand(name),
                     names=names,
                     arrays=frozenset(p for p, t in declared.items() if t == {"array"}))


def _replace_property(schema: dict[str, Any], prop: str, replacement: dict[str, Any]) -> None:
    for part in [schema, *schema.get("allOf", ())]:
        if prop in part.get("properties", {}):
            part["properties"][prop] = replacement


@cache
def _views_by_type_iri() -> dict[str, ModelView]:
    return {view.type_iri: view for view in map(model_view, MODELS)}


def validate_entity(entity: Entity) -> None:
    """Raise BadRequestData naming each violation when a known type breaks its schema.

    Entities of no known Smart Data Model type pass untouched.
    """
    views = _views_by_type_iri()
    errors: list[str] = []
    for type_iri in entity.get("type") or ():
        view = views.get(type_iri)
        if view is not None:
            errors.extend(schema_violations(entity, view))
    if errors:
        raise BadRequestData(
            f"Entity {entity.get('id')} breaks its Smart Data Model schema: "
            + "; ".join(errors), errors=errors)


def schema_violations(entity: Entity, view: ModelView) -> list[str]:
    """Every violation of one model's schema, as ``path: message``, without duplicates."""
    found: dict[str, None] = {}
    for document in _documents(entity, view):
        for error in view.validator.iter_errors(document):
            found.setdefault(_describe(error), None)
    return sorted(found)


def _documents(entity: Entity, view: ModelView) -> Iterator[dict[str, Any]]:
    """The keyValues projection, then one variant per extra candidate value of an attribute.

    The first document holds the first candidate of every attribute; each further one
    differs in one attribute only, so N extra instances cost N validations, not N^k.
    """
    base: dict[str, Any] = {"id": entity["id"], "type": view.model.name}
    extras: list[tuple[str, Any]] = []
    for iri, instances in entity.get("attrs", {}).items():
        name = view.names.get(iri, iri)
        ordered = sorted(instances.items(), key=lambda item: item[0] != DEFAULT_DATASET)
        candidates = [value for _, instance in ordered
                      for value in _candidates(instance, view.terms, name in view.arrays)]
        if not candidates:
            continue
        base[name] = candidates[0]
        extras.extend((name, value) for value in candidates[1:])
    yield base
    for name, value in extras:
        yield base | {name: value}


def _candidates(instance: Instance, terms: TermMap, wants_array: bool) -> list[Any]:
    """The keyValues value(s) of one attribute instance as the schema should see them."""
    attr_type = instance.get("type")
    if attr_type == "LanguageProperty":
        texts: list[Any] = []
        for text in (instance.get("languageMap") or {}).values():
            texts.extend(text if isinstance(text, list) else [text])
        return texts
    value = render_instance(instance, terms, form="keyValues")
    if attr_type == "Property" and isinstance(value, dict) and "@value" in value:
        value = value["@value"]
    if attr_type == "Relationship" and wants_array and not isinstance(value, list):
        value = [value]
    return [value]


def _describe(error: ValidationError) -> str:
    """``attribute.path: message``, preferring the deepest reason inside anyOf/oneOf."""
    if error.context:
        deepest = best_match(error.context)
        if deepest is not None and len(deepest.absolute_path) > len(error.absolute_path):
            error = deepest
    path = "".join(f"[{step}]" if isinstance(step, int) else f".{step}"
                   for step in error.absolute_path).lstrip(".") or "entity"
    message = error.message if len(error.message) <= 240 else error.message[:237] + "..."
    return f"{path}: {message}"
