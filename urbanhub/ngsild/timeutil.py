"""Timestamps: NGSI-LD uses ISO 8601 in UTC; the hub keeps every time timezone-aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime

from urbanhub.model.errors import BadRequestData


def parse_datetime(text: object, what: str = "timestamp") -> datetime:
    """Parse an ISO 8601 date-time; a value without an offset is taken as UTC."""
    if not isinstance(text, str):
        raise BadRequestData(f"{what} must be an ISO 8601 date-time string, got {text!r}.")
    raw = text.strip()
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise BadRequestData(f"{what} {text!r} is not an ISO 8601 date-time.") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def format_datetime(moment: datetime) -> str:
    """ISO 8601 in UTC with millisecond precision and a ``Z``, as NGSI-LD brokers emit."""
    utc = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    # isoformat is several times cheaper than strftime, and pages format thousands.
    return utc.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"



def utcnow() -> datetime:
    return datetime.now(UTC)


def keep_utc_datetime(text: object, what: str = "timestamp") -> str:
    """Validate a date-time; keep the client's spelling when it is already UTC (``…Z``)."""
    moment = parse_datetime(text, what)
    assert isinstance(text, str)
    return text if text.endswith("Z") else format_datetime(moment)
