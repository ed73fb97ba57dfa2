"""Credential checks shared by the entry points: API keys and Twilio's request signature.

docs/deployment.md lists which entry point checks what.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Iterable

__all__ = ["key_ok", "twilio_signature", "twilio_signature_ok"]


def _bytes(text: str) -> bytes:
    # Header values may hold any byte (aiohttp keeps undecodable ones as surrogates):
    # they are compared as bytes, never refused with an encoding error.
    return text.encode("utf-8", "surrogateescape")


def key_ok(given: str, keys: Iterable[str]) -> bool:
    """Whether `given` is one of `keys` (constant-time per key)."""
    g = _bytes(given)
    return any(hmac.compare_digest(g, _bytes(k)) for k in keys)


def twilio_signature(auth_token: str, url: str) -> str:
    """Twilio's X-Twilio-Signature of a request without a form body (a Media Streams
    websocket): base64 of HMAC-SHA1 over the full URL, keyed with the auth token."""
    digest = hmac.new(_bytes(auth_token), _bytes(url), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def twilio_signature_ok(auth_token: str, signature: str, host: str, path: str) -> bool:
    """Whether `signature` signs wss:// (or ws://, behind a TLS proxy) host + path (with
    its query), under `auth_token`."""
    if not signature or not host:
        return False
    return any(
        hmac.compare_digest(_bytes(signature), _bytes(twilio_signature(auth_token, f"{scheme}://{host}{path}")))
        for scheme in ("wss", "ws")
    )
