"""Verifying who sent a webhook, over the raw body, in constant time. Secrets are never logged."""

from __future__ import annotations

import hashlib
import hmac
import re

from .providers import PayloadError

_SIG = re.compile(r"sha256=([0-9a-fA-F]{64})")


class AuthError(PayloadError):
    """Missing or wrong credentials (401 / 403)."""


class NotConfigured(RuntimeError):
    """The route's secret is not set: refuse with 503 so the provider retries later."""


def verify_hmac_sha256(body: bytes, header: str | None, secret: str) -> None:
    """Check `sha256=<hex HMAC-SHA256(body, secret)>` (Meta's `X-Hub-Signature-256` scheme)."""
    if not header:
        raise AuthError("missing_signature", "the signature header is missing", 401)
    match = _SIG.fullmatch(header.strip())
    if not match:
        raise AuthError("malformed_signature", "the signature must be `sha256=<64 hex digits>`", 401)
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, match.group(1).lower()):
        raise AuthError("invalid_signature", "the signature does not match the body", 403)


def verify_token(header: str | None, token: str) -> None:
    if not header:
        raise AuthError("missing_token", "the X-Webhook-Token header is missing", 401)
    if not hmac.compare_digest(header.encode(), token.encode()):
        raise AuthError("invalid_token", "the X-Webhook-Token is wrong", 403)


def verify_crm(body: bytes, token_header: str | None, signature_header: str | None,
               token: str, hmac_secret: str) -> str:
    """Generic and Qontak routes: an HMAC header (preferred) or the shared token.

    Returns how the request was authenticated (`valid` for a signature, `token`).
    """
    if not token and not hmac_secret:
        raise NotConfigured("set WEBHOOK_TOKEN or WEBHOOK_HMAC_SECRET to accept CRM webhooks")
    if signature_header is not None and hmac_secret:
        verify_hmac_sha256(body, signature_header, hmac_secret)
        return "valid"
    if token:
        verify_token(token_header, token)
        return "token"
    raise AuthError("missing_signature", "the X-Webhook-Signature header is missing", 401)


def sign(body: bytes, secret: str) -> str:
    """The signature header value for `body` (used by the CLI's sender, tests and benchmarks)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
