"""JSON-LD request and response handling shared by the NGSI-LD routes.

Where the @context comes from (body or Link header), which media types are accepted, and
how a response carries the context back (body for ld+json, Link header for json).
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from fastapi import Request
from starlette.responses import Response

from urbanhub.hub.runtime import Hub
from urbanhub.model.errors import (
    BadRequestData,
    InvalidRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
    UrbanhubError,
)
from urbanhub.ngsild.context import CORE_CONTEXT_URL, TermMap

JSON = "application/json"
JSON_LD = "application/ld+json"
MERGE_PATCH = "application/merge-patch+json"
GEO_JSON = "application/geo+json"
CONTEXT_REL = "http://www.w3.org/ns/json-ld#context"
_LINK = re.compile(r'<([^>]*)>\s*((?:;\s*[^;,]+)*)')


class NotAcceptable(UrbanhubError):
    problem_type = "https://uri.etsi.org/ngsi-ld/errors/NotAcceptable"
    title = "Not acceptable"
    status = 406


def hub_of(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


def link_context(request: Request) -> str | None:
    """The context URL of a JSON-LD Link header, if the request has one."""
    header = request.headers.get("link")
    if not header:
        return None
    for match in _LINK.finditer(header):
        params = match.group(2)
        if "rel" in params and CONTEXT_REL in params:
            return match.group(1)
    raise BadRequestData(f"The Link header {header!r} is not a JSON-LD context link.")


async def read_raw_body(request: Request, allowed: set[str]) -> bytes:
    """The request body, refused early when its media type is not allowed (415) or it is
    larger than the configured limit (413, also when the length was not declared)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in allowed:
        raise UnsupportedMediaType(
            f"Content-Type must be one of {', '.join(sorted(allowed))}, got {media or 'none'}.")
    limit = hub_of(request).settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The body is {declared} bytes; the limit is {limit}.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The body exceeds the limit of {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_body(request: Request, *, allow_merge_patch: bool = False) -> tuple[Any, Any]:
    """Parse the JSON body and return (payload, @context it declared or linked)."""
    allowed = {JSON, JSON_LD} | ({MERGE_PATCH} if allow_merge_patch else set())
    raw = await read_raw_body(request, allowed)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not raw:
        raise InvalidRequest("The request has no body.")
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The body is not valid JSON: {exc}") from exc
    context = _body_context(payload, media, request)
    return payload, context


def _body_context(payload: Any, media: str, request: Request) -> Any:
    items = payload if isinstance(payload, list) else [payload]
    in_body = [item.get("@context") for item in items if isinstance(item, dict)]
    if media == JSON_LD:
        if any(c is None for c in in_body):
            raise BadRequestData("A body sent as application/ld+json must carry an @context.")
        if request.headers.get("link"):
            raise BadRequestData("Send the @context in the body or in a Link header, not both.")
        return in_body[0] if in_body else None
    if any(c is not None for c in in_body):
        raise BadRequestData(
            "An @context in the body needs Content-Type application/ld+json; with "
            "application/json, give the context in a Link header.")
    return link_context(request)


def terms_for(request: Request, context: Any) -> TermMap:
    return hub_of(request).contexts.resolve(context)


def negotiate(request: Request, *, geo: bool = False) -> str:
    """The media type to answer with, from Accept; 406 when none is on offer.

    ``geo`` says whether this resource also has a GeoJSON representation (entity retrieval
    and query, CIM 009 §4.5.16); elsewhere application/geo+json is served as plain JSON.
    """
    accept = request.headers.get("accept", "*/*").lower()
    if not accept.strip():
        return JSON
    ranked: list[tuple[float, str]] = []
    for part in accept.split(","):
        media, *params = [p.strip() for p in part.split(";")]
        quality = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    quality = float(param[2:])
                except ValueError:
                    quality = 0.0
        if quality > 0:
            ranked.append((quality, media))
    for _, media in sorted(ranked, key=lambda pair: -pair[0]):
        if media == JSON_LD:
            return JSON_LD
        if media == GEO_JSON:
            return GEO_JSON if geo else JSON
        if media in (JSON, "application/*", "*/*"):
            return JSON
    raise NotAcceptable("This resource is available as application/json or "
                        "application/ld+json" + (" or application/geo+json." if geo else " only."))


def context_link(url: str) -> str:
    return f'<{url}>; rel="{CONTEXT_REL}"; type="{JSON_LD}"'


def ngsi_response(request: Request, data: Any, context: Any, *, status: int = 200,
                  headers: dict[str, str] | None = None) -> Response:
    """Serialise ``data`` with the caller's context in the body or in a Link header."""
    as_ld = negotiate(request) == JSON_LD
    context_ref = context if context is not None else CORE_CONTEXT_URL
    out_headers = dict(headers or {})
    if as_ld:
        if isinstance(data, list):
            data = [dict(item, **{"@context": context_ref}) for item in data]
        elif isinstance(data, dict):
            data = dict(data, **{"@context": context_ref})
        media = JSON_LD
    else:
        link_url = context_ref if isinstance(context_ref, str) else CORE_CONTEXT_URL
        link = context_link(link_url)
        out_headers["Link"] = f"{link}, {out_headers['Link']}" if "Link" in out_headers else link
        media = JSON
    return Response(orjson.dumps(data), status_code=status, media_type=media,
                    headers=out_headers)
