"""Who is calling: turns request credentials into a Caller.

Routes take the caller as a dependency (``caller: CallerDep``), so authentication lives in
this one function; the app also runs it for every route, so a bad credential is refused
with 401 everywhere, not only where the caller matters. Accepted credentials:

* ``Authorization: Bearer <JWT>``: an OIDC token of the configured identity provider;
* ``Authorization: ApiKey <key>`` or ``X-API-Key: <key>``: an Urbanhub API key;
* nothing: the public (anonymous) caller.

``Urbanhub-Purpose`` states the purpose of the request, whoever the caller is.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers

from urbanhub.api.jsonld import hub_of
from urbanhub.governance.identity import IdentityService
from urbanhub.model.caller import Caller
from urbanhub.model.errors import Unauthenticated

PURPOSE_HEADER = "Urbanhub-Purpose"
API_KEY_HEADER = "X-API-Key"
_SCHEMES = {"bearer": "Bearer", "apikey": "ApiKey"}

# Declared for the OpenAPI document (and its "Authorize" button); caller_of reads the
# headers itself, as the ApiKey scheme of the Authorization header is Urbanhub's own.
_bearer = HTTPBearer(auto_error=False, scheme_name="OIDC", bearerFormat="JWT",
                     description="An access token of the configured OpenID Connect provider.")
_api_key = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, scheme_name="ApiKey",
                        description="An Urbanhub API key (also accepted as "
                                    "`Authorization: ApiKey <key>`).")


async def caller_of(request: Request,
                    _token: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
                    _key: Annotated[str | None, Depends(_api_key)]) -> Caller:
    """The caller; anonymous requests and recently checked API keys are answered on the event
    loop, other credentials are checked in the thread pool (database look-ups, perhaps a
    JWKS fetch)."""
    purpose = request.headers.get(PURPOSE_HEADER)
    credential = _credential(request.headers)
    if credential is None:
        return Caller.public(purpose=purpose)
    scheme, value = credential
    identities: IdentityService = hub_of(request).identities
    known = identities.recently_authenticated(value) if scheme == "ApiKey" else None
    if known is not None:
        return replace(known, purpose=purpose)
    authenticate = (identities.authenticate_bearer if scheme == "Bearer"
                    else identities.authenticate_api_key)
    return replace(await run_in_threadpool(authenticate, value), purpose=purpose)


def _credential(headers: Headers) -> tuple[str, str] | None:
    """The one credential sent, as (scheme, value); None when none was sent."""
    authorization = headers.getlist("authorization")
    api_keys = headers.getlist(API_KEY_HEADER)
    if len(authorization) + len(api_keys) > 1:
        raise Unauthenticated("Send one credential: a single Authorization or X-API-Key "
                              "header, not several.")
    if api_keys:
        return "ApiKey", api_keys[0].strip()
    if not authorization:
        return None
    name, _, value = authorization[0].strip().partition(" ")
    scheme = _SCHEMES.get(name.lower())
    if scheme is None:
        raise Unauthenticated(f"The Authorization scheme {name[:20]!r} is not supported: send "
                              "'Bearer <token>' or 'ApiKey <key>'.")
    value = value.strip()
    if not value or " " in value:
        raise Unauthenticated(f"The Authorization header must be '{scheme} <credential>' with "
                              "exactly one credential.", scheme=scheme)
    return scheme, value


CallerDep = Annotated[Caller, Depends(caller_of)]
