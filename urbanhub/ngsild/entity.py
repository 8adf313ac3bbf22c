"""NGSI-LD entity payloads: parsing into the internal form and rendering back.

The internal form keeps the shape of the NGSI-LD normalized representation, with every
attribute and sub-attribute name and every entity type expanded to an absolute IRI:

    {"id": urn, "type": [type IRIs], "scope": [...]?, "createdAt": iso, "modifiedAt": iso,
     "attrs": {attribute IRI: {datasetId or "": instance}}}

An instance is a normalized attribute (``type``, ``value``/``object``/…, ``observedAt``,
``unitCode``, ``datasetId``, system times) whose other keys are expanded sub-attribute
names. Parsing accepts the normalized and the concise representation; rendering gives
normalized, concise or keyValues, compacted with the caller's @context.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from shapely.geometry import shape

from urbanhub.model.errors import BadRequestData
from urbanhub.ngsild.context import TermMap, is_iri
from urbanhub.ngsild.timeutil import keep_utc_datetime

Entity = dict[str, Any]
Instance = dict[str, Any]

ATTRIBUTE_TYPES = {
    "Property", "Relationship", "GeoProperty", "LanguageProperty", "VocabProperty",
    "JsonProperty", "ListProperty", "ListRelationship",
}
#: The member that carries each attribute type's content.
CONTENT_MEMBER = {
    "Property": "value", "GeoProperty": "value", "Relationship": "object",
    "LanguageProperty": "languageMap", "VocabProperty": "vocab", "JsonProperty": "json",
    "ListProperty": "valueList", "ListRelationship": "objectList",
}
#: Members of an attribute that are part of the standard, never user sub-attributes.
CORE_MEMBERS = {
    "type", "value", "object", "languageMap", "vocab", "json", "valueList", "objectList",
    "observedAt", "unitCode", "datasetId", "createdAt", "modifiedAt", "deletedAt",
    "instanceId", "objectType", "lang", "@context",
}
SYSTEM_MEMBERS = {"createdAt", "modifiedAt", "deletedAt", "instanceId"}
ENTITY_MEMBERS = {"id", "@id", "type", "@type", "scope", "@context", "createdAt",
                  "modifiedAt", "deletedAt"}
GEOMETRY_TYPES = {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon",
                  "MultiPolygon"}
#: Characters ETSI GS CIM 009 §4.6.2 forbids in attribute and type names.
_FORBIDDEN_NAME = re.compile(r"""[<>"'=;()\s\\]""")
DEFAULT_DATASET = ""


def check_entity_id(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise BadRequestData("Entity id must be a non-empty string (a URI).")
    if not is_iri(value) or _FORBIDDEN_NAME.search(value):
        raise BadRequestData(f"Entity id {value!r} is not a valid URI.")
    return value


def check_name(name: object, what: str = "attribute name") -> str:
    if not isinstance(name, str) or not name or _FORBIDDEN_NAME.search(name):
        raise BadRequestData(f"Invalid {what} {name!r}.")
    return name


def expand_types(value: object, terms: TermMap) -> list[str]:
    names = value if isinstance(value, list) else [value]
    if not names:
        raise BadRequestData("Entity type must not be empty.")
    return [terms.expand(check_name(name, "entity type")) for name in names]


def parse_entity(payload: object, terms: TermMap, *, need_id: bool = True,
                 need_type: bool = True) -> Entity:
    """Validate an entity in normalized or concise form and expand it."""
    if not isinstance(payload, dict):
        raise BadRequestData("An entity must be a JSON object.")
    entity: Entity = {}
    raw_id = payload.get("id", payload.get("@id"))
    if raw_id is not None or need_id:
        entity["id"] = check_entity_id(raw_id)
    raw_type = payload.get("type", payload.get("@type"))
    if raw_type is not None or need_type:
        if raw_type is None:
            raise BadRequestData("Entity type is missing.")
        entity["type"] = expand_types(raw_type, terms)
    if "scope" in payload:
        entity["scope"] = _parse_scope(payload["scope"])
    entity["attrs"] = parse_attributes(
        {k: v for k, v in payload.items() if k not in ENTITY_MEMBERS}, terms)
    return entity


def parse_attributes(fragment: dict[str, Any], terms: TermMap) -> dict[str, dict[str, Instance]]:
    """Parse the attributes of an entity fragment (as in PATCH or POST .../attrs)."""
    attrs: dict[str, dict[str, Instance]] = {}
    for name, raw in fragment.items():
        if name in ENTITY_MEMBERS:
            continue
        check_name(name)
        attrs[terms.expand(name)] = parse_attribute(name, raw, terms)
    return attrs


def parse_attribute(name: str, raw: object, terms: TermMap) -> dict[str, Instance]:
    """One attribute, possibly multi-instance (a list with distinct datasetIds)."""
    items = raw if isinstance(raw, list) and raw and all(
        isinstance(item, dict) and _looks_like_attribute(item) for item in raw) else [raw]
    instances: dict[str, Instance] = {}
    for item in items:
        instance = parse_instance(name, item, terms)
        dataset_id = instance.get("datasetId", DEFAULT_DATASET)
        if dataset_id in instances:
            raise BadRequestData(
                f"Attribute {name!r} has two instances with the same datasetId.")
        instances[dataset_id] = instance
    return instances


def _looks_like_attribute(item: dict[str, Any]) -> bool:
    return item.get("type") in ATTRIBUTE_TYPES or any(
        key in item for key in ("value", "object", "languageMap", "vocab", "json",
                                "valueList", "objectList"))


def _infer_type(raw: object) -> tuple[str, dict[str, Any]]:
    """Concise representation (CIM 009 §4.5.3): infer the attribute type from its members."""
    if isinstance(raw, dict):
        declared = raw.get("type")
        if declared in ATTRIBUTE_TYPES:
            return declared, raw
        if declared in GEOMETRY_TYPES and "coordinates" in raw:
            return "GeoProperty", {"value": raw}
        for member, attr_type in (("object", "Relationship"), ("languageMap", "LanguageProperty"),
                                  ("vocab", "VocabProperty"), ("json", "JsonProperty"),
                                  ("valueList", "ListProperty"),
                                  ("objectList", "ListRelationship")):
            if member in raw:
                return attr_type, raw
        if "value" in raw:
            value = raw["value"]
            if isinstance(value, dict) and value.get("type") in GEOMETRY_TYPES:
                return "GeoProperty", raw
            return "Property", raw
        return "Property", {"value": raw}
    return "Property", {"value": raw}


def parse_instance(name: str, raw: object, terms: TermMap) -> Instance:
    attr_type, body = _infer_type(raw)
    member = CONTENT_MEMBER[attr_type]
    if member not in body or body[member] is None:
        raise BadRequestData(f"Attribute {name!r} of type {attr_type} has no {member!r}.")
    content = body[member]
    instance: Instance = {"type": attr_type}
    if attr_type == "GeoProperty":
        content = check_geometry(name, content)
    elif attr_type == "Relationship":
        targets = content if isinstance(content, list) else [content]
        for target in targets:
            if not isinstance(target, str) or not is_iri(target):
                raise BadRequestData(f"Relationship {name!r} must point at URIs, got {target!r}.")
    elif attr_type == "LanguageProperty":
        if not isinstance(content, dict) or not all(
                isinstance(k, str) and isinstance(v, str | list) for k, v in content.items()):
            raise BadRequestData(f"LanguageProperty {name!r} needs a languageMap object.")
    elif attr_type == "VocabProperty":
        words = content if isinstance(content, list) else [content]
        if not all(isinstance(word, str) for word in words):
            raise BadRequestData(f"VocabProperty {name!r} needs strings in 'vocab'.")
        expanded = [terms.expand(word) for word in words]
        content = expanded if isinstance(content, list) else expanded[0]
    elif attr_type in ("ListProperty", "ListRelationship") and not isinstance(content, list):
        raise BadRequestData(f"{attr_type} {name!r} needs a list in {member!r}.")
    instance[member] = content
    for key, value in body.items():
        if key in (member, "type") or key in SYSTEM_MEMBERS or key == "@context":
            continue
        if key == "observedAt":
            instance["observedAt"] = keep_utc_datetime(value, f"{name}.observedAt")
        elif key == "unitCode":
            if not isinstance(value, str) or not value:
                raise BadRequestData(f"{name}.unitCode must be a non-empty string.")
            instance["unitCode"] = value
        elif key == "datasetId":
            if not isinstance(value, str) or not is_iri(value):
                raise BadRequestData(f"{name}.datasetId must be a URI.")
            instance["datasetId"] = value
        elif key in ("lang", "objectType"):
            instance[key] = value
        elif key in CORE_MEMBERS:
            raise BadRequestData(f"{name}.{key} is not allowed on a {attr_type}.")
        else:
            check_name(key, "sub-attribute name")
            sub = parse_attribute(key, value, terms)
            instance[terms.expand(key)] = sub[DEFAULT_DATASET] if DEFAULT_DATASET in sub else (
                next(iter(sub.values())))
    return instance


def check_geometry(name: str, value: object) -> dict[str, Any]:
    if not isinstance(value, dict) or value.get("type") not in GEOMETRY_TYPES:
        raise BadRequestData(
            f"GeoProperty {name!r} must hold a GeoJSON geometry "
            f"({', '.join(sorted(GEOMETRY_TYPES))}).")
    try:
        geometry = shape(value)
    except Exception as exc:  # shapely raises several types for malformed coordinates
        raise BadRequestData(f"GeoProperty {name!r} has invalid coordinates: {exc}") from exc
    if geometry.is_empty:
        raise BadRequestData(f"GeoProperty {name!r} is an empty geometry.")
    return {"type": value["type"], "coordinates": value["coordinates"]}


def _parse_scope(value: object) -> list[str]:
    scopes = value if isinstance(value, list) else [value]
    if not all(isinstance(s, str) and s.startswith("/") for s in scopes):
        raise BadRequestData("scope must be a string or list of strings starting with '/'.")
    return list(scopes)


# --- rendering -------------------------------------------------------------------------

def render_entity(entity: Entity, terms: TermMap, *, form: str = "normalized",
                  sys_attrs: bool = False, attrs: Iterable[str] | None = None,
                  lang: str | None = None) -> dict[str, Any]:
    """Compact an internal entity for one caller: ``form`` is normalized, concise or keyValues."""
    types = [terms.compact(t) for t in entity["type"]]
    out: dict[str, Any] = {"id": entity["id"], "type": types[0] if len(types) == 1 else types}
    if entity.get("scope"):
        scope = entity["scope"]
        out["scope"] = scope[0] if len(scope) == 1 else scope
    if sys_attrs and form != "keyValues":
        for key in ("createdAt", "modifiedAt"):
            if key in entity:
                out[key] = entity[key]
    wanted = set(attrs) if attrs is not None else None
    for name, instances in entity["attrs"].items():
        if wanted is not None and name not in wanted:
            continue
        rendered = [render_instance(i, terms, form=form, sys_attrs=sys_attrs, lang=lang)
                    for i in instances.values()]
        out[terms.compact(name)] = rendered[0] if len(rendered) == 1 else rendered
    return out


def render_instance(instance: Instance, terms: TermMap, *, form: str = "normalized",
                    sys_attrs: bool = False, lang: str | None = None) -> Any:
    attr_type = instance["type"]
    member = CONTENT_MEMBER[attr_type]
    content = instance.get(member)
    if attr_type == "VocabProperty":
        content = ([terms.compact(v) for v in content] if isinstance(content, list)
                   else terms.compact(str(content)))
    if (attr_type == "LanguageProperty" and lang is not None and lang != "*"
            and isinstance(content, dict) and content):
        tag, picked = pick_language(content, lang)
        if form == "keyValues":
            return picked
        return _with_members(instance, terms, form, sys_attrs, lang,
                             {"type": "Property", "value": picked, "lang": tag}
                             if form == "normalized" else {"value": picked, "lang": tag})
    if form == "keyValues":
        return content
    if form == "concise":
        head: dict[str, Any] = {}
        if attr_type in ("Property", "GeoProperty"):
            head["value"] = content
        else:
            head[member] = content
        body = _with_members(instance, terms, form, sys_attrs, lang, head)
        if list(body) == ["value"]:
            return content  # a bare value is the most concise form of a simple Property
        return body
    return _with_members(instance, terms, form, sys_attrs, lang,
                         {"type": attr_type, member: content})


def pick_language(language_map: dict[str, Any], lang: str) -> tuple[str, Any]:
    """The entry of a languageMap that ``lang`` asks for (CIM 009 §4.15).

    ``lang`` is one tag or an Accept-Language style list (``fr,en;q=0.8``); a tag also
    matches its subtags (``en`` matches ``en-GB``). Without a match the ``@none`` entry is
    used, then the first one, so the attribute never disappears from the response.
    """
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(lang.split(",")):
        tag, *params = [p.strip() for p in part.split(";")]
        weight = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    weight = float(param[2:])
                except ValueError:
                    weight = 0.0
        if tag and weight > 0:
            ranked.append((-weight, position, tag))
    for _, _, tag in sorted(ranked):
        if tag == "*":
            break
        if tag in language_map:
            return tag, language_map[tag]
        for key, value in language_map.items():
            if key.lower().startswith(tag.lower() + "-"):
                return key, value
    if "@none" in language_map:
        return "@none", language_map["@none"]
    key = next(iter(language_map))
    return key, language_map[key]


def _with_members(instance: Instance, terms: TermMap, form: str, sys_attrs: bool,
                  lang: str | None, head: dict[str, Any]) -> dict[str, Any]:
    for key, value in instance.items():
        if key == "type" or key == CONTENT_MEMBER[instance["type"]]:
            continue
        if key in SYSTEM_MEMBERS:
            if sys_attrs and key in ("createdAt", "modifiedAt"):
                head[key] = value
        elif key in CORE_MEMBERS:
            head[key] = value
        else:
            head[terms.compact(key)] = render_instance(value, terms, form=form,
                                                       sys_attrs=sys_attrs, lang=lang)
    return head


def geometry_of(entity: Entity, attr: str) -> dict[str, Any] | None:
    """The GeoJSON value of a GeoProperty (default instance first), if the entity has one."""
    instances = entity["attrs"].get(attr)
    if not instances:
        return None
    instance = instances.get(DEFAULT_DATASET) or next(iter(instances.values()))
    if instance.get("type") != "GeoProperty":
        return None
    value = instance.get("value")
    return value if isinstance(value, dict) else None
