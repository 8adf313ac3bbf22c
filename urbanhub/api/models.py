"""Pydantic bases of the governance APIs' JSON: camelCase on the wire, strict bodies."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class CamelModel(BaseModel):
    """Fields are snake_case in Python and camelCase in JSON (either is accepted)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class Body(CamelModel):
    """A request body: an unknown member is a 400 naming it, not silently ignored."""

    model_config = ConfigDict(extra="forbid")
