"""Entity writes (NGSI-LD provision operations): create, replace, update, delete.

Each public method is one transaction; every attribute instance written is also appended to
history, so the temporal API sees API updates and device readings alike.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from urbanhub.governance.enforcement import AccessGuard, check_write
from urbanhub.model.caller import Caller
from urbanhub.model.errors import (
    AlreadyExists,
    BadRequestData,
    ResourceNotFound,
    UrbanhubError,
)
from urbanhub.ngsild.entity import DEFAULT_DATASET, Entity, Instance
from urbanhub.ngsild.timeutil import format_datetime, utcnow
from urbanhub.store.entities import LOCATION, EntityStore

Attrs = dict[str, dict[str, Instance]]


@dataclass
class UpdateResult:
    """NGSI-LD UpdateResult: which attributes changed and which did not, with reasons."""

    updated: list[str] = field(default_factory=list)
    not_updated: list[tuple[str, str]] = field(default_factory=list)


def _stamp(attrs: Attrs, now: str, previous: Attrs | None = None) -> Attrs:
    """Set createdAt/modifiedAt on each instance, keeping createdAt of what it replaces."""
    for name, instances in attrs.items():
        for dataset_id, instance in instances.items():
            before = (previous or {}).get(name, {}).get(dataset_id)
            instance["createdAt"] = before.get("createdAt", now) if before else now
            instance["modifiedAt"] = now
    return attrs


@dataclass
class BatchResult:
    """Per-entity outcome of a batch operation (ids that succeeded, of those the created)."""

    succeeded: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    failed: list[tuple[str, UrbanhubError]] = field(default_factory=list)


EntityValidator = Callable[[Entity], None]


class EntityService:
    """``validator`` sees each entity as it will be after a write and raises to refuse it."""

    def __init__(self, store: EntityStore, guard: AccessGuard,
                 clock: Callable[[], datetime] = utcnow,
                 validator: EntityValidator | None = None) -> None:
        self.store = store
        self.guard = guard
        self.clock = clock
        self.validator = validator

    @contextmanager
    def _writing(self, caller: Caller, entity_id: str) -> Iterator[Connection]:
        """A write transaction on one entity that ``caller`` may write: checked on the
        entity as it was and, if the write created it, on the dataset it landed in (the
        check fails the transaction, so nothing is kept)."""
        check_write(caller, None)
        with self.store.write() as conn:
            existed = self.guard.check_entity_write(conn, caller, entity_id)
            yield conn
            if not existed:
                self.guard.check_entity_write(conn, caller, entity_id)

    def create(self, caller: Caller, entity: Entity) -> None:
        with self._writing(caller, entity["id"]) as conn:
            self._create(conn, entity)

    def _create(self, conn: Connection, entity: Entity) -> None:
        if self.store.exists(conn, entity["id"]):
            raise AlreadyExists(f"Entity {entity['id']} already exists.")
        if self.validator is not None:
            self.validator(entity)
        now = self.clock()
        _stamp(entity["attrs"], format_datetime(now))
        self.store.insert_entity(conn, entity, now)

    def replace(self, caller: Caller, entity_id: str, entity: Entity) -> None:
        """PUT /entities/{id}: the new content replaces every attribute."""
        with self._writing(caller, entity_id) as conn:
            self._replace(conn, entity_id, entity)

    def _replace(self, conn: Connection, entity_id: str, entity: Entity) -> None:
        current = self._require(conn, entity_id)
        if entity.get("id", entity_id) != entity_id:
            raise BadRequestData("The entity id in the body differs from the one in the URL.")
        now = self.clock()
        merged = {"id": entity_id, "type": entity.get("type") or current["type"],
                  "attrs": _stamp(entity["attrs"], format_datetime(now), current["attrs"])}
        if "scope" in entity:
            merged["scope"] = entity["scope"]
        if self.validator is not None:
            self.validator(merged)
        self.store.update_entity_header(conn, merged, now)
        self.store.replace_all_attributes(conn, merged, now)

    def delete(self, caller: Caller, entity_id: str) -> None:
        with self._writing(caller, entity_id) as conn:
            if not self.store.delete_entity(conn, entity_id, self.clock()):
                raise ResourceNotFound(f"Entity {entity_id} does not exist.")

    def append(self, caller: Caller, entity_id: str, fragment: Entity, *,
               no_overwrite: bool = False) -> UpdateResult:
        """POST /entities/{id}/attrs: add attributes, replacing existing ones unless told not to."""
        with self._writing(caller, entity_id) as conn:
            return self._append(conn, entity_id, fragment, no_overwrite=no_overwrite)

    def _append(self, conn: Connection, entity_id: str, fragment: Entity, *,
                no_overwrite: bool) -> UpdateResult:
        current = self._require(conn, entity_id)
        result = UpdateResult()
        accepted: Attrs = {}
        for name, instances in fragment["attrs"].items():
            for dataset_id, instance in instances.items():
                if no_overwrite and dataset_id in current["attrs"].get(name, {}):
                    result.not_updated.append((name, "Attribute exists and noOverwrite is set."))
                    continue
                accepted.setdefault(name, {})[dataset_id] = instance
                result.updated.append(name)
        self._write(conn, current, accepted, fragment)
        return result

    def update(self, caller: Caller, entity_id: str, fragment: Entity) -> UpdateResult:
        """PATCH /entities/{id}/attrs: replace existing attributes only."""
        with self._writing(caller, entity_id) as conn:
            return self._update(conn, entity_id, fragment)

    def _update(self, conn: Connection, entity_id: str, fragment: Entity) -> UpdateResult:
        current = self._require(conn, entity_id)
        result = UpdateResult()
        accepted: Attrs = {}
        for name, instances in fragment["attrs"].items():
            for dataset_id, instance in instances.items():
                if dataset_id not in current["attrs"].get(name, {}):
                    result.not_updated.append((name, "Attribute does not exist."))
                    continue
                accepted.setdefault(name, {})[dataset_id] = instance
                result.updated.append(name)
        self._write(conn, current, accepted, None)
        return result

    def merge(self, caller: Caller, entity_id: str, fragment: Entity) -> None:
        """PATCH /entities/{id} (merge-patch): update or add attributes, merging values."""
        with self._writing(caller, entity_id) as conn:
            current = self._require(conn, entity_id)
            merged: Attrs = {}
            for name, instances in fragment["attrs"].items():
                for dataset_id, instance in instances.items():
                    before = current["attrs"].get(name, {}).get(dataset_id)
                    merged.setdefault(name, {})[dataset_id] = _merge_instance(before, instance)
            self._write(conn, current, merged, fragment)

    def patch_attribute(self, caller: Caller, entity_id: str, name: str,
                        fragment: Instance) -> None:
        """PATCH /entities/{id}/attrs/{attr}: partial update of one attribute instance."""
        with self._writing(caller, entity_id) as conn:
            current = self._require(conn, entity_id)
            dataset_id = fragment.get("datasetId", DEFAULT_DATASET)
            before = current["attrs"].get(name, {}).get(dataset_id)
            if before is None:
                raise ResourceNotFound(f"Entity {entity_id} has no attribute {name}"
                                       + (f" with datasetId {dataset_id}." if dataset_id else "."))
            self._write(conn, current, {name: {dataset_id: _merge_instance(before, fragment)}},
                        None)

    def delete_attribute(self, caller: Caller, entity_id: str, name: str, *,
                         dataset_id: str | None = None, delete_all: bool = False) -> None:
        with self._writing(caller, entity_id) as conn:
            current = self._require(conn, entity_id)
            target = None if delete_all else (dataset_id or DEFAULT_DATASET)
            if not self.store.delete_attribute(conn, entity_id, name, target):
                raise ResourceNotFound(f"Entity {entity_id} has no attribute {name}.")
            now = self.clock()
            if name == LOCATION:
                current["attrs"].pop(name, None)
                self.store.update_entity_header(conn, current, now)
            else:
                self.store.touch(conn, [entity_id], now)

    # --- batch operations ---------------------------------------------------------------

    def batch(self, caller: Caller, operation: str, items: list[Any],
              parse: Callable[[Any], Entity], **options: Any) -> BatchResult:
        """Run one entity operation per item; each item succeeds or fails on its own."""
        check_write(caller, None)  # no credentials or no right to write: refuse the request
        result = BatchResult()
        for item in items:
            entity_id = item.get("id", "") if isinstance(item, dict) else (
                item if isinstance(item, str) else "")
            try:
                target = item if isinstance(item, str) else str(entity_id)
                with self._writing(caller, target) as conn:
                    if operation == "delete":
                        if not isinstance(item, str):
                            raise BadRequestData("Batch delete takes a list of entity ids.")
                        if not self.store.delete_entity(conn, item, self.clock()):
                            raise ResourceNotFound(f"Entity {item} does not exist.")
                    else:
                        entity = parse(item)
                        entity_id = entity["id"]
                        if self._batch_one(conn, operation, entity, **options):
                            result.created.append(entity_id)
                result.succeeded.append(entity_id)
            except UrbanhubError as exc:
                result.failed.append((str(entity_id), exc))
        return result

    def _batch_one(self, conn: Connection, operation: str, entity: Entity, *,
                   update_mode: str = "replace", no_overwrite: bool = False) -> bool:
        """One entity of a batch; True when it created the entity."""
        if operation == "create":
            self._create(conn, entity)
            return True
        if operation == "upsert":
            if not self.store.exists(conn, entity["id"]):
                self._create(conn, entity)
                return True
            if update_mode == "update":
                self._append(conn, entity["id"], entity, no_overwrite=False)
            else:
                self._replace(conn, entity["id"], entity)
            return False
        if operation == "update":
            result = self._append(conn, entity["id"], entity, no_overwrite=no_overwrite)
            if result.not_updated and not result.updated:
                raise BadRequestData("; ".join(reason for _, reason in result.not_updated))
            return False
        raise BadRequestData(f"Unknown batch operation {operation!r}.")

    # --- helpers -----------------------------------------------------------------------

    def _require(self, conn: Connection, entity_id: str) -> Entity:
        found = self.store.load(conn, [entity_id]).get(entity_id)
        if found is None:
            raise ResourceNotFound(f"Entity {entity_id} does not exist.")
        return found

    def _write(self, conn: Connection, current: Entity, attrs: Attrs,
               fragment: Entity | None) -> None:
        """Write ``attrs`` (and a fragment's types and scope) over the current entity."""
        after: Entity = {**current, "attrs": {name: dict(instances)
                                              for name, instances in current["attrs"].items()}}
        for name, instances in attrs.items():
            after["attrs"].setdefault(name, {}).update(instances)
        if fragment is not None and fragment.get("type"):
            after["type"] = list(dict.fromkeys(current["type"] + fragment["type"]))
        if fragment is not None and "scope" in fragment:
            after["scope"] = fragment["scope"]
        if self.validator is not None:
            self.validator(after)
        now = self.clock()
        _stamp(attrs, format_datetime(now), current["attrs"])
        self.store.put_attributes(conn, current["id"], attrs, now)
        if LOCATION in attrs or after["type"] != current["type"] or (
                after.get("scope") != current.get("scope")):
            self.store.update_entity_header(conn, after, now)
        else:
            self.store.touch(conn, [current["id"]], now)


def _merge_instance(before: Instance | None, fragment: Instance) -> Instance:
    """Merge-patch semantics: members of the fragment override, sub-attributes merge."""
    if before is None:
        return fragment
    merged = copy.deepcopy(before)
    if fragment.get("type") and fragment["type"] != before.get("type"):
        for member in ("value", "object", "languageMap", "vocab", "json", "valueList",
                       "objectList"):
            merged.pop(member, None)
    for key, value in fragment.items():
        if key in ("createdAt", "modifiedAt"):
            continue
        merged[key] = value
    return merged
