"""Domain errors, named after the ETSI NGSI-LD problem types they map to.

Adapters translate them: HTTP turns them into RFC 7807 problem+json, ingest adapters into
dead letters. Keeping them here lets pure code report failures without knowing the adapter.
"""

from __future__ import annotations

from typing import ClassVar

ETSI_ERRORS = "https://uri.etsi.org/ngsi-ld/errors/"


class UrbanhubError(Exception):
    """Base error with the problem type, HTTP status and a human-readable detail."""

    problem_type: ClassVar[str] = ETSI_ERRORS + "InternalError"
    title: ClassVar[str] = "Internal error"
    status: ClassVar[int] = 500

    def __init__(self, detail: str, *, errors: list[str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []


class BadRequestData(UrbanhubError):
    problem_type = ETSI_ERRORS + "BadRequestData"
    title = "Bad request data"
    status = 400


class InvalidRequest(UrbanhubError):
    problem_type = ETSI_ERRORS + "InvalidRequest"
    title = "Invalid request"
    status = 400


class ResourceNotFound(UrbanhubError):
    problem_type = ETSI_ERRORS + "ResourceNotFound"
    title = "Resource not found"
    status = 404


class AlreadyExists(UrbanhubError):
    problem_type = ETSI_ERRORS + "AlreadyExists"
    title = "Already exists"
    status = 409


class OperationNotSupported(UrbanhubError):
    problem_type = ETSI_ERRORS + "OperationNotSupported"
    title = "Operation not supported"
    status = 422


class LdContextNotAvailable(UrbanhubError):
    problem_type = ETSI_ERRORS + "LdContextNotAvailable"
    title = "JSON-LD context not available"
    status = 503


class TooManyResults(UrbanhubError):
    problem_type = ETSI_ERRORS + "TooManyResults"
    title = "Too many results"
    status = 403


class PayloadTooLarge(UrbanhubError):
    problem_type = "https://urbanhub.dev/problems/PayloadTooLarge"
    title = "Payload too large"
    status = 413


class UnsupportedMediaType(UrbanhubError):
    problem_type = "https://urbanhub.dev/problems/UnsupportedMediaType"
    title = "Unsupported media type"
    status = 415


class Forbidden(UrbanhubError):
    """The caller is known but its roles do not allow the operation."""

    problem_type = "https://urbanhub.dev/problems/Forbidden"
    title = "Forbidden"
    status = 403
