"""Who is calling: turns request credentials into a Caller.

Routes take the caller as a dependency (``caller: CallerDep``), so authentication lives in
this one function. Until API keys and OIDC arrive with the governance issue every HTTP
caller is the public.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from urbanhub.model.caller import Caller

PURPOSE_HEADER = "Urbanhub-Purpose"


def caller_of(request: Request) -> Caller:
    return Caller.public(purpose=request.headers.get(PURPOSE_HEADER))


CallerDep = Annotated[Caller, Depends(caller_of)]
