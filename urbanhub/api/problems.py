"""RFC 7807 problem+json responses for every error the API can return."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from urbanhub.model.errors import ETSI_ERRORS, UrbanhubError

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("urbanhub.api")

_STATUS_TYPES = {
    400: ("BadRequestData", "Bad request data"),
    404: ("ResourceNotFound", "Resource not found"),
    405: ("OperationNotSupported", "Method not allowed"),
    406: ("NotAcceptable", "Not acceptable"),
    409: ("AlreadyExists", "Already exists"),
    403: ("TooManyResults", "Too many results"),
    413: ("PayloadTooLarge", "Payload too large"),
    422: ("OperationNotSupported", "Operation not supported"),
    500: ("InternalError", "Internal error"),
    503: ("LdContextNotAvailable", "JSON-LD context not available"),
    415: ("UnsupportedMediaType", "Unsupported media type"),
}
# OpenAPI descriptions of statuses that domain errors of several kinds share.
_DESCRIPTIONS = {
    **{status: title for status, (_, title) in _STATUS_TYPES.items()},
    401: "Missing or invalid credentials (with a WWW-Authenticate challenge)",
    403: "Forbidden, or too many results",
}


class ProblemDetails(BaseModel):
    """RFC 7807 problem details, as every error response of the API carries."""

    type: str = Field(description="URI of the problem type (ETSI NGSI-LD error types).")
    title: str
    status: int
    detail: str
    errors: list[str] | None = Field(default=None, description="Each violation, when several.")


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting problem+json for the given statuses."""
    schema = {"$ref": "#/components/schemas/ProblemDetails"}
    return {status: {"model": ProblemDetails, "description": _DESCRIPTIONS.get(status, "Error"),
                     "content": {PROBLEM_JSON: {"schema": schema}}}
            for status in statuses}


def problem(status: int, problem_type: str, title: str, detail: str,
            **extra: Any) -> Response:
    body: dict[str, Any] = {"type": problem_type, "title": title, "status": status,
                            "detail": detail}
    body.update({k: v for k, v in extra.items() if v})
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM_JSON)


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(UrbanhubError)
    async def _domain(_: Request, exc: UrbanhubError) -> Response:
        response = problem(exc.status, exc.problem_type, exc.title, exc.detail,
                           errors=exc.errors)
        response.headers.update(exc.response_headers())
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        errors = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}"
                  for e in exc.errors()]
        return problem(400, ETSI_ERRORS + "BadRequestData", "Bad request data",
                       "; ".join(errors) or "Invalid request.", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        name, title = _STATUS_TYPES.get(exc.status_code, ("InternalError", "Error"))
        response = problem(exc.status_code, ETSI_ERRORS + name, title, str(exc.detail))
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, ETSI_ERRORS + "InternalError", "Internal error",
                       f"{type(exc).__name__}: the server could not complete the request.")
