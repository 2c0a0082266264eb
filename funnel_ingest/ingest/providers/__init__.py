"""Provider payloads to normalized messages: the one place that knows each provider's shape."""

from collections.abc import Callable

from funnel_ingest.ingest.providers import generic, qontak, whatsapp
from funnel_ingest.ingest.providers._common import PayloadError
from funnel_ingest.messages import ParseResult

PARSERS: dict[str, Callable[[bytes], ParseResult]] = {
    "whatsapp": whatsapp.parse,
    "qontak": qontak.parse,
    "generic": generic.parse,
}


def parse(source: str, body: bytes) -> ParseResult:
    """Normalize one request body of `source`; raises PayloadError (a 4xx) for unusable bodies."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError("invalid_utf8", f"body is not UTF-8 (byte {exc.start})", 400) from None
    return PARSERS[source](body)


__all__ = ["PARSERS", "PayloadError", "parse"]
