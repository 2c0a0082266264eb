"""Shared pieces of the provider parsers: the error type, timestamps, labels."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

M = TypeVar("M", bound=BaseModel)

# Accept the timestamps providers send within these bounds; anything else is a bad timestamp.
_EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)
_MAX_FUTURE = timedelta(days=1)


class PayloadError(ValueError):
    """A request body we refuse (HTTP 4xx). `reason` is a stable code, counted in metrics."""

    def __init__(self, reason: str, detail: str, status_code: int = 422) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.status_code = status_code


# Control characters (C0, DEL, C1) and the Unicode line/paragraph separators. An id or a label
# holding one would break a CSV row or a log line and could spoof a terminal table; message
# texts may hold line breaks, ids and labels never do.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _no_control_characters(value: str | None) -> str | None:
    if value is not None and (m := _CONTROL.search(value)):
        raise ValueError(f"must not contain control characters (found U+{ord(m.group()):04X} "
                         f"at position {m.start()})")
    return value


# An id or a label (message / room / campaign / ad ids, channel names, phones, types).
Label = Annotated[str, AfterValidator(_no_control_characters)]

MAX_NAME = 200
_BLANKS = re.compile(r"[\s\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def display_name(value: Any) -> str | None:
    """A campaign, template or ad name a payload carries, as a one-line label: control
    characters and runs of blanks become one space, at most MAX_NAME characters; None when
    there is none. Names are read leniently (a name of an unexpected shape is ignored, never a
    reason to refuse the webhook): they only label a campaign."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    name = _BLANKS.sub(" ", str(value)).strip()[:MAX_NAME].strip()
    return name or None


def plain_id(value: Any) -> str | None:
    """An optional id a payload may carry (a broadcast id): a string or number without control
    characters, of 1 to MAX_NAME characters; else None (ignored, as `display_name`)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    text = str(value).strip()
    return text if 0 < len(text) <= MAX_NAME and not _CONTROL.search(text) else None


class Lenient(BaseModel):
    """Provider models: unknown fields are allowed (providers add fields over time)."""

    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "body"


def validate_json(model: type[M], body: bytes) -> M:
    """Parse and validate a JSON body, turning pydantic's errors into one precise PayloadError."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise payload_error_from(exc) from None


def validate_obj(model: type[M], obj: Any, prefix: tuple[Any, ...] = ()) -> M:
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        raise payload_error_from(exc, prefix) from None


def payload_error_from(exc: ValidationError, prefix: tuple[Any, ...] = ()) -> PayloadError:
    err = exc.errors(include_url=False)[0]
    loc = prefix + tuple(err.get("loc", ()))
    kind = err.get("type", "")
    if kind == "json_invalid":
        return PayloadError("malformed_json", f"body is not valid JSON: {err.get('msg')}", 400)
    last = str(loc[-1]) if loc else ""
    if kind == "missing" and last in {"id", "message_id"}:
        reason = "missing_id"
    elif kind == "missing" and last in {"timestamp", "created_at"}:
        reason = "missing_timestamp"
    else:
        reason = "wrong_shape"
    more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
    return PayloadError(reason, f"{_loc(loc)}: {err.get('msg')}{more}")


def parse_timestamp(value: Any, where: str) -> datetime:
    """UTC datetime of a unix-seconds/milliseconds number or string, or an ISO-8601 string."""
    ts: datetime
    try:
        if isinstance(value, datetime):
            ts = value
        elif isinstance(value, (int, float)) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
            num = float(value)
            if num > 1e11:  # milliseconds
                num /= 1000.0
            ts = datetime.fromtimestamp(num, tz=timezone.utc)
        elif isinstance(value, str) and value:
            ts = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        else:
            raise ValueError("empty")
    except (ValueError, OverflowError, OSError):
        raise PayloadError("bad_timestamp", f"{where}: not a unix time or ISO-8601 timestamp") from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)  # providers send UTC without an offset
    ts = ts.astimezone(timezone.utc)
    if ts < _EARLIEST or ts > datetime.now(timezone.utc) + _MAX_FUTURE:
        raise PayloadError("bad_timestamp", f"{where}: {ts.isoformat()} is out of range")
    return ts


_NUMBER = re.compile(r"\d{1,13}(\.\d+)?")

