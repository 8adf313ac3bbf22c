"""The data catalog's rules: which dataset an entity belongs to, and which datasets look alike.

Pure functions over ``Dataset`` values; the store keeps the catalog and the governance
service calls these at ingest, on rule changes and for the CDO's report.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from itertools import combinations

from shapely import geometry as shapes

from urbanhub.model.governance import (
    AssignmentRule,
    Classification,
    Dataset,
    LegalBasis,
)

UNCATALOGUED_ID = "urn:urbanhub:dataset:uncatalogued"

#: Where an entity goes when no rule claims it. Internal, so nothing unassigned is ever
#: public by accident, and declared for no purpose, so the policy decision point permits
#: nothing beyond what internal data allows until the CDO catalogues it.
UNCATALOGUED = Dataset(
    id=UNCATALOGUED_ID, owner="urbanhub", steward="cdo",
    classification=Classification.INTERNAL, licence="", purposes=frozenset(),
    legal_basis=LegalBasis.PUBLIC_TASK, retention=timedelta(days=365),
    title="Uncatalogued entities",
    description="Entities that no assignment rule of the catalog matches; they need a "
                "dataset.")


@dataclass(frozen=True, slots=True)
class RankedRule:
    """A rule with the dataset it assigns to and that dataset's classification."""

    dataset_id: str
    classification: Classification
    rule: AssignmentRule
    position: int  # index among its dataset's rules

    @property
    def precedence(self) -> tuple[int, int, str, int]:
        """Sort key: the smallest wins (see ``RuleSet``)."""
        return (-self.rule.priority, -self.classification.rank, self.dataset_id, self.position)


@dataclass(frozen=True)
class RuleSet:
    """Every assignment rule of a catalog, in the order they are tried.

    When several rules match an entity, the one with the highest priority wins. Ties go to
    the more strictly classified dataset (an ambiguity never makes data more open), then
    to the dataset id in alphabetical order, then to the rule listed first, so the result
    never depends on the order datasets were loaded in. Two rule sets are equal exactly when
    they assign every entity alike, which is how the catalog knows a change needs
    existing entities to be re-evaluated.
    """

    rules: tuple[RankedRule, ...] = ()

    @classmethod
    def of(cls, datasets: Iterable[Dataset]) -> RuleSet:
        ranked = [RankedRule(d.id, d.classification, rule, position)
                  for d in datasets for position, rule in enumerate(d.rules)]
        return cls(tuple(sorted(ranked, key=lambda r: r.precedence)))


def assign(entity_id: str, types: Sequence[str], rules: RuleSet) -> str:
    """The id of the dataset an entity (id, expanded type IRIs) belongs to."""
    for ranked in rules.rules:
        if ranked.rule.matches(entity_id, types):
            return ranked.dataset_id
    return UNCATALOGUED_ID


@dataclass(frozen=True)
class Duplicate:
    """Two datasets of different organisations that seem to hold the same data."""

    first: str  # dataset ids, first < second
    second: str
    shared_types: tuple[str, ...]
    reason: str


def find_duplicates(datasets: Iterable[Dataset]) -> list[Duplicate]:
    """Pairs of datasets owned by different organisations that share an entity type and
    whose spatial coverages overlap (an undeclared coverage overlaps everything).

    Coverages that only touch along a border do not overlap: neighbouring districts each
    publishing their own sensors are not duplicates.
    """
    ordered = sorted(datasets, key=lambda d: d.id)
    areas = {d.id: shapes.shape(d.spatial_coverage) for d in ordered
             if d.spatial_coverage is not None}
    found: list[Duplicate] = []
    for first, second in combinations(ordered, 2):
        shared = first.entity_types & second.entity_types
        if first.owner == second.owner or not shared:
            continue
        a, b = areas.get(first.id), areas.get(second.id)
        if a is not None and b is not None:
            if not a.intersects(b) or a.touches(b):
                continue
            share = a.intersection(b).area / min(a.area, b.area)
            reason = f"coverages overlap ({share:.0%} of the smaller one)"
        else:
            undeclared = [d.id for d, area in ((first, a), (second, b)) if area is None]
            reason = f"coverage not declared by {' and '.join(undeclared)}"
        found.append(Duplicate(first.id, second.id, tuple(sorted(shared)), reason))
    return found
