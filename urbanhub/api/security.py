"""Who is calling: turns request credentials into a Caller.

Authentication (API keys, OIDC) arrives with the governance issue; until then every HTTP
caller is the public.
"""

from __future__ import annotations

from fastapi import Request

from urbanhub.model.caller import Caller

PURPOSE_HEADER = "Urbanhub-Purpose"


def caller_of(request: Request) -> Caller:
    return Caller.public(purpose=request.headers.get(PURPOSE_HEADER))
