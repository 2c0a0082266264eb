"""Verifying who sent a webhook, over the raw body, in constant time. Secrets are never logged."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable

from funnel_ingest.ingest.providers import PayloadError

_SIG = re.compile(r"sha256=([0-9a-fA-F]{64})")


class AuthError(PayloadError):
    """Missing or wrong credentials (401 / 403)."""


class NotConfigured(RuntimeError):
    """The route's secret is not set: refuse with 503 so the provider retries later."""


BodyCheck = Callable[[bytes], str]


def hmac_precheck(header: str | None, secret: str) -> BodyCheck:
    """What the `sha256=<hex HMAC-SHA256(body, secret)>` header (Meta's `X-Hub-Signature-256`
    scheme) allows checking before the body is read: that it is there and well formed. Returns
    the check of the body (raises AuthError 403 when the signature does not match)."""
    if not header:
        raise AuthError("missing_signature", "the signature header is missing", 401)
    match = _SIG.fullmatch(header.strip())
    if not match:
        raise AuthError("malformed_signature", "the signature must be `sha256=<64 hex digits>`", 401)
    given = match.group(1).lower()

    def check(body: bytes) -> str:
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, given):
            raise AuthError("invalid_signature", "the signature does not match the body", 403)
        return "valid"

    return check


def verify_token(header: str | None, token: str) -> None:
    if not header:
        raise AuthError("missing_token", "the X-Webhook-Token header is missing", 401)
    if not hmac.compare_digest(header.encode(), token.encode()):
        raise AuthError("invalid_token", "the X-Webhook-Token is wrong", 403)


def crm_precheck(token_header: str | None, signature_header: str | None, token: str,
                 hmac_secret: str, require_signature: bool = False) -> BodyCheck:
    """Generic and Qontak routes, from the headers alone: an HMAC header (preferred) or the
    shared token. A token is checked completely here; a signature's presence and form. With
    `require_signature` (WEBHOOK_REQUIRE_SIGNATURE) the token alone is refused. Returns the
    check of the body, which says how the request was authenticated (`valid` for a signature,
    `token`)."""
    if not token and not hmac_secret:
        raise NotConfigured("set WEBHOOK_TOKEN or WEBHOOK_HMAC_SECRET to accept CRM webhooks")
    if require_signature and not hmac_secret:
        raise NotConfigured("WEBHOOK_REQUIRE_SIGNATURE is set but WEBHOOK_HMAC_SECRET is empty")
    if signature_header is not None and hmac_secret:
        return hmac_precheck(signature_header, hmac_secret)
    if require_signature:
        raise AuthError("missing_signature", "the X-Webhook-Signature header is required "
                        "(WEBHOOK_REQUIRE_SIGNATURE)", 401)
    if token:
        verify_token(token_header, token)
        return lambda _body: "token"
    raise AuthError("missing_signature", "the X-Webhook-Signature header is missing", 401)


def sign(body: bytes, secret: str) -> str:
    """The signature header value for `body` (used by the CLI's sender, tests and benchmarks)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
