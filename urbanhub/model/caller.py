"""Who is asking. Every read takes a Caller so the policy decision point has one place to act."""

from __future__ import annotations

from dataclasses import dataclass, field

from urbanhub.model.governance import OrganisationKind

ANONYMOUS = "anonymous"
#: The role of the hub's own components (importer, demo, jobs): they act for the city.
SYSTEM_ROLE = "system"


@dataclass(frozen=True)
class Caller:
    """An authenticated (or anonymous) subject and the purpose it states for this request."""

    subject: str
    roles: frozenset[str] = field(default_factory=frozenset)
    organisation: str | None = None
    purpose: str | None = None
    # Set by authentication from the organisation record; departments see internal data.
    organisation_kind: OrganisationKind | None = None
    # What the credential may be used for (urbanhub.model.identity.Scope): an API key may
    # carry fewer scopes than its holder's roles allow.
    scopes: frozenset[str] = frozenset({"read"})

    @classmethod
    def public(cls, purpose: str | None = None) -> Caller:
        return cls(subject=ANONYMOUS, roles=frozenset({"public"}), purpose=purpose)

    @classmethod
    def system(cls, component: str) -> Caller:
        """An internal component (ingest, demo simulator) acting on its own behalf."""
        return cls(subject=f"system:{component}", roles=frozenset({SYSTEM_ROLE}),
                   scopes=frozenset({"read", "write", "govern"}))

    @property
    def authenticated(self) -> bool:
        """Whether the caller proved who it is (an anonymous caller sent no credentials)."""
        return self.subject != ANONYMOUS
