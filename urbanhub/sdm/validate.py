"""Validation of entities against their Smart Data Model (placeholder until it lands)."""

from __future__ import annotations

from urbanhub.ngsild.entity import Entity


def validate_entity(entity: Entity) -> None:
    """Raise BadRequestData naming each violation when a known type breaks its schema."""
