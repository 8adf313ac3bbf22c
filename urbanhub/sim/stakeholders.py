"""The demo city's stakeholders: its departments and the operator who runs each one's sensors.

``urbanhub demo`` acts as the city's data office, in-process: it registers the departments
and their operators if they are missing and issues each operator a short-lived API key,
with which the simulator provisions that department's devices over HTTP, like a real
operator would. Every step goes through the identity service and is audited, with the demo
(``system:demo``, holding the CDO role) as the actor.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

from urbanhub.governance.identity import IdentityService
from urbanhub.model.caller import Caller
from urbanhub.model.errors import AlreadyExists
from urbanhub.model.governance import OrganisationKind, Role
from urbanhub.model.identity import Member, Organisation, Scope
from urbanhub.sim.catalog import DEPARTMENTS

#: The demo acting as the city's data office.
DEMO_CDO = Caller(subject="system:demo", roles=frozenset({Role.CDO.value}),
                  scopes=frozenset(scope.value for scope in Scope))
#: The operators' keys only provision devices when the demo starts; readings carry the
#: devices' own keys, so an hour is plenty and nothing long-lived is left behind.
OPERATOR_KEY_LIFETIME = timedelta(hours=1)


def operator_of(department: str) -> str:
    return f"{department}-operator"


def operator_keys(identities: IdentityService) -> dict[str, str]:
    """Department id -> a fresh API key (read, write) of its operator; the departments and
    operators are created the first time."""
    keys = {}
    for department, name in DEPARTMENTS.items():
        with contextlib.suppress(AlreadyExists):
            identities.create_organisation(
                DEMO_CDO, Organisation(department, name, OrganisationKind.DEPARTMENT))
        with contextlib.suppress(AlreadyExists):
            identities.add_member(DEMO_CDO, Member(operator_of(department), department,
                                                   frozenset({Role.OPERATOR})))
        issued = identities.issue_api_key(DEMO_CDO, operator_of(department),
                                          frozenset({Scope.READ, Scope.WRITE}),
                                          OPERATOR_KEY_LIFETIME, "demo provisioning")
        keys[department] = issued.key
    return keys
