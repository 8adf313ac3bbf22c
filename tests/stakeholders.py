"""The people the device tests act as, each with a real API key from the identity service.

city-data-office: carla (CDO), pia (privacy board)
environment:      olga (operator), sam (steward), ann (analyst, read only)
partner:          pete (operator of a private partner's gateway)

The partner owns the dataset of entities ``urn:ngsi-ld:{type}:partner-…``: an organisation
may only create entities (its devices' too) in datasets it owns.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import timedelta

from urbanhub.hub.runtime import Hub
from urbanhub.model.caller import Caller
from urbanhub.model.errors import AlreadyExists
from urbanhub.model.governance import (
    AssignmentRule,
    Classification,
    Dataset,
    LegalBasis,
    OrganisationKind,
    Purpose,
    PurposeKind,
    Role,
)
from urbanhub.model.identity import Member, Organisation, Scope, allowed_scopes

#: Entity ids of the partner's dataset.
PARTNER_ENTITIES = r"urn:ngsi-ld:[A-Za-z]+:partner-.+"
#: The tests acting as the city's data office in-process, for set-up only.
SETUP = Caller("system:test", frozenset({Role.CDO.value}), scopes=frozenset(Scope))


@dataclass(frozen=True)
class People:
    """API keys by person."""

    cdo: str
    privacy_board: str
    operator: str
    steward: str
    analyst: str
    partner: str


def apikey(key: str) -> dict[str, str]:
    return {"Authorization": f"ApiKey {key}"}


def device_key(key: str) -> dict[str, str]:
    return {"X-Device-Key": key}


def city_people(hub: Hub) -> People:
    """Bootstrap the CDO, then the organisations and members above, each with a key carrying
    every scope their roles allow."""
    identities = hub.identities
    carla = identities.bootstrap(Organisation("city-data-office", "City Data Office",
                                              OrganisationKind.DEPARTMENT),
                                 "carla", timedelta(days=1))
    cdo = identities.authenticate_api_key(carla.key)
    identities.create_organisation(cdo, Organisation("environment", "Environment",
                                                     OrganisationKind.DEPARTMENT))
    identities.create_organisation(cdo, Organisation("partner", "Partner Ltd",
                                                     OrganisationKind.PARTNER))
    keys = {}
    for subject, organisation, role in (("pia", "city-data-office", Role.PRIVACY_BOARD),
                                        ("olga", "environment", Role.OPERATOR),
                                        ("sam", "environment", Role.STEWARD),
                                        ("ann", "environment", Role.ANALYST),
                                        ("pete", "partner", Role.OPERATOR)):
        identities.add_member(cdo, Member(subject, organisation, frozenset({role})))
        scopes = frozenset(Scope(s) for s in allowed_scopes([role]))
        keys[subject] = identities.issue_api_key(cdo, subject, scopes, timedelta(days=1)).key
    hub.catalog.create_purpose(SETUP, Purpose("partner-services", "The partner's services",
                                              PurposeKind.OPERATIONS))
    hub.catalog.create_dataset(SETUP, Dataset(
        "partner-sensors", "partner", "pete", Classification.INTERNAL, "",
        frozenset({"partner-services"}), LegalBasis.CONTRACT, timedelta(days=30),
        rules=(AssignmentRule(id_pattern=PARTNER_ENTITIES),)))
    return People(cdo=carla.key, privacy_board=keys["pia"], operator=keys["olga"],
                  steward=keys["sam"], analyst=keys["ann"], partner=keys["pete"])


def ensure_organisation(hub: Hub, organisation_id: str = "environment") -> None:
    """A department of this id, for tests that provision devices in-process."""
    with contextlib.suppress(AlreadyExists):
        hub.identities.create_organisation(SETUP, Organisation(
            organisation_id, organisation_id.title(), OrganisationKind.DEPARTMENT))
