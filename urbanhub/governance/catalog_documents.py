"""The catalog's wire format: purposes and datasets as JSON (HTTP) or YAML/JSON files (CLI).

Pydantic checks the shape (members, types, enumerations) and names what is wrong; the
domain types check the meaning (stricter attributes, regular expressions, durations,
coverage). Entity types and attribute names may be NGSI-LD terms of an ``@context`` or
full IRIs: they are expanded on the way in and compacted with the reader's context on
the way out, so the catalog holds IRIs only.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from urbanhub.model.catalog import Duplicate
from urbanhub.model.errors import BadRequestData
from urbanhub.model.governance import (
    AssignmentRule,
    Classification,
    Dataset,
    DataTheme,
    LegalBasis,
    Purpose,
    PurposeKind,
    format_duration,
    parse_coverage,
    parse_retention,
)
from urbanhub.ngsild.context import TermMap
from urbanhub.ngsild.entity import check_name
from urbanhub.ngsild.timeutil import format_datetime

#: Ids appear in URL paths, so no slashes, spaces or query characters.
CatalogId = Annotated[str, Field(pattern=r"^[A-Za-z0-9._:~-]{1,200}$",
                                 description="Letters, digits and . _ : ~ - (1-200).")]
Text = Annotated[str, Field(min_length=1, max_length=10_000)]
#: Members of a dataset as served that a client may send back unchanged (GET, edit, PUT).
READ_ONLY = frozenset({"entityCount", "builtIn", "createdAt", "modifiedAt", "entitiesMoved"})


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class RuleDocument(_Document):
    """An assignment rule: entities of this type and/or with ids matching the pattern."""

    entity_type: str | None = Field(None, alias="entityType",
                                    description="NGSI-LD type (term or IRI).")
    id_pattern: str | None = Field(None, alias="idPattern",
                                   description="Regular expression the whole id must match.")
    priority: StrictInt = Field(0, description="The highest priority among matching rules "
                                               "wins.")


class PurposeDocument(_Document):
    id: CatalogId
    description: Text
    kind: PurposeKind = PurposeKind.ANALYSIS


class DatasetDocument(_Document):
    context: Any = Field(None, alias="@context",
                         description="Context for the types and attribute names used.")
    id: CatalogId
    title: str = ""
    description: str = ""
    owner: Text = Field(description="Owning organisation id.")
    steward: Text = Field(description="Subject id of the accountable steward.")
    classification: Classification
    licence: str = ""
    theme: DataTheme | None = Field(None, description="EU data theme (DCAT-AP).")
    entity_types: list[str] = Field(default_factory=list, alias="entityTypes")
    purposes: list[str] = Field(default_factory=list, description="Purposes of collection.")
    legal_basis: LegalBasis = Field(alias="legalBasis")
    retention: str = Field(description="ISO 8601 duration in weeks, days or hours (P365D).")
    update_frequency: str | None = Field(None, alias="updateFrequency",
                                         description="ISO 8601 duration (PT15M).")
    spatial_coverage: dict[str, Any] | list[float] | None = Field(
        None, alias="spatialCoverage",
        description="GeoJSON Polygon or MultiPolygon, or a bbox [minLon, minLat, maxLon, "
                    "maxLat].")
    attribute_classifications: dict[str, Classification] = Field(
        default_factory=dict, alias="attributeClassifications",
        description="Attributes classified more strictly than the dataset.")
    identifiers: list[str] = Field(default_factory=list,
                                   description="Attributes that identify a data subject.")
    subject_attribute: str | None = Field(
        None, alias="subjectAttribute",
        description="The attribute whose value (a Property's value, a Relationship's object) "
                    "is the data subject's pseudonymous id; required when legalBasis is "
                    "consent.")
    rules: list[RuleDocument] = Field(default_factory=list)


class RulesDocument(_Document):
    context: Any = Field(None, alias="@context")
    rules: list[RuleDocument]


class CatalogDocument(_Document):
    """A catalog file: purposes first, then datasets (their @context or the file's)."""

    context: Any = Field(None, alias="@context")
    purposes: list[PurposeDocument] = Field(default_factory=list)
    datasets: list[DatasetDocument] = Field(default_factory=list)


class DatasetView(DatasetDocument):
    entity_count: int = Field(alias="entityCount")
    built_in: bool = Field(alias="builtIn")
    created_at: str | None = Field(None, alias="createdAt")
    modified_at: str | None = Field(None, alias="modifiedAt")


class DatasetChangeView(DatasetView):
    entities_moved: int = Field(alias="entitiesMoved",
                                description="Existing entities the change re-assigned.")


class DuplicateView(_Document):
    datasets: tuple[str, str]
    shared_types: list[str] = Field(alias="sharedTypes")
    reason: str


class TypeCount(_Document):
    type: str
    entities: int


class UncataloguedView(_Document):
    entities: int
    types: list[TypeCount]


class CatalogReportView(_Document):
    uncatalogued: UncataloguedView
    duplicates: list[DuplicateView]


# --- parsing ----------------------------------------------------------------------------

Model = TypeVar("Model", bound=BaseModel)


def validated(model: type[Model], payload: Any, where: str = "") -> Model:
    """``payload`` as ``model``, or a 400 naming each member that is wrong."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        errors = [f"{_location(where, e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise BadRequestData("; ".join(errors), errors=errors) from exc


def _location(where: str, loc: tuple[int | str, ...]) -> str:
    text = where
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


def dataset_payload(payload: Any) -> Any:
    """A dataset body without the members the server adds (a GET result can be PUT back)."""
    if isinstance(payload, dict):
        return {key: value for key, value in payload.items() if key not in READ_ONLY}
    return payload


def to_rules(documents: list[RuleDocument], terms: TermMap,
             where: str) -> tuple[AssignmentRule, ...]:
    rules = []
    for index, document in enumerate(documents):
        try:
            entity_type = (None if document.entity_type is None else
                           terms.expand(check_name(document.entity_type, "entity type")))
            rules.append(AssignmentRule(entity_type, document.id_pattern, document.priority))
        except BadRequestData as exc:
            raise BadRequestData(f"{where}.rules[{index}]: {exc.detail}") from exc
    return tuple(rules)


def to_dataset(document: DatasetDocument, terms: TermMap, where: str = "") -> Dataset:
    """The domain dataset a document describes, names expanded; 400 naming any problem."""
    where = where or f"Dataset {document.id}"

    def expand(names: list[str], what: str) -> frozenset[str]:
        return frozenset(terms.expand(check_name(name, what)) for name in names)

    try:
        return Dataset(
            id=document.id, owner=document.owner, steward=document.steward,
            classification=document.classification, licence=document.licence,
            purposes=frozenset(document.purposes), legal_basis=document.legal_basis,
            retention=parse_retention(document.retention),
            attribute_classes={terms.expand(check_name(name)): cls for name, cls
                               in document.attribute_classifications.items()},
            identifiers=expand(document.identifiers, "attribute name"),
            subject_attribute=None if document.subject_attribute is None else terms.expand(
                check_name(document.subject_attribute, "subject attribute")),
            title=document.title, description=document.description, theme=document.theme,
            entity_types=expand(document.entity_types, "entity type"),
            update_frequency=document.update_frequency,
            spatial_coverage=None if document.spatial_coverage is None else parse_coverage(
                document.spatial_coverage),
            rules=to_rules(document.rules, terms, where))
    except BadRequestData as exc:
        detail = exc.detail if exc.detail.startswith(where) else f"{where}: {exc.detail}"
        raise BadRequestData(detail) from exc


def to_purpose(document: PurposeDocument) -> Purpose:
    return Purpose(document.id, document.description, document.kind)


def parse_catalog(payload: Any, resolve: Callable[[Any], TermMap]) -> tuple[
        list[Purpose], list[Dataset]]:
    """The purposes and datasets of a catalog file; ``resolve`` turns an @context (a
    dataset's own, else the file's) into terms. 400 naming the first item that is wrong."""
    document = validated(CatalogDocument, payload)
    datasets = [
        to_dataset(item, resolve(item.context if item.context is not None else
                                 document.context), f"datasets[{index}] ({item.id})")
        for index, item in enumerate(document.datasets)]
    return [to_purpose(p) for p in document.purposes], datasets


# --- rendering --------------------------------------------------------------------------

def purpose_document(purpose: Purpose) -> PurposeDocument:
    return PurposeDocument(id=purpose.id, description=purpose.description, kind=purpose.kind)


def dataset_fields(dataset: Dataset, terms: TermMap | None = None) -> dict[str, Any]:
    """The members of a dataset document; names compacted with ``terms``, else IRIs."""

    def name(iri: str) -> str:
        return terms.compact(iri) if terms is not None else iri

    return {
        "id": dataset.id, "title": dataset.title, "description": dataset.description,
        "owner": dataset.owner, "steward": dataset.steward,
        "classification": dataset.classification, "licence": dataset.licence,
        "theme": dataset.theme, "entityTypes": sorted(name(t) for t in dataset.entity_types),
        "purposes": sorted(dataset.purposes), "legalBasis": dataset.legal_basis,
        "retention": format_duration(dataset.retention),
        "updateFrequency": dataset.update_frequency,
        "spatialCoverage": dict(dataset.spatial_coverage) if dataset.spatial_coverage else None,
        "attributeClassifications": {name(a): c for a, c
                                     in sorted(dataset.attribute_classes.items())},
        "identifiers": sorted(name(i) for i in dataset.identifiers),
        "subjectAttribute": (name(dataset.subject_attribute) if dataset.subject_attribute
                             else None),
        "rules": [RuleDocument(entityType=name(r.entity_type) if r.entity_type else None,
                               idPattern=r.id_pattern, priority=r.priority)
                  for r in dataset.rules],
    }


def audit_details(dataset: Dataset) -> dict[str, Any]:
    """The dataset as plain JSON with full IRIs: what the audit trail records."""
    return DatasetDocument.model_validate(dataset_fields(dataset)).model_dump(
        mode="json", by_alias=True, exclude={"context"})


def dataset_view(dataset: Dataset, terms: TermMap, *, entity_count: int, built_in: bool,
                 created_at: datetime | None, modified_at: datetime | None) -> DatasetView:
    return DatasetView.model_validate(dataset_fields(dataset, terms) | {
        "entityCount": entity_count, "builtIn": built_in,
        "createdAt": format_datetime(created_at) if created_at else None,
        "modifiedAt": format_datetime(modified_at) if modified_at else None})


def change_view(view: DatasetView, entities_moved: int) -> DatasetChangeView:
    return DatasetChangeView.model_validate(
        view.model_dump(by_alias=True) | {"entitiesMoved": entities_moved})


def duplicate_view(duplicate: Duplicate, terms: TermMap) -> DuplicateView:
    return DuplicateView(datasets=(duplicate.first, duplicate.second),
                         sharedTypes=[terms.compact(t) for t in duplicate.shared_types],
                         reason=duplicate.reason)
