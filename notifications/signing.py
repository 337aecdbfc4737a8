"""Webhook signatures: HMAC-SHA256 with the partner's secret over `timestamp + "." + body`.

The headers a partner receives (docs/jobs.md shows how to verify them):
  X-Credits-Event       credit.expiration_warning
  X-Credits-Delivery    the delivery id (the same on every retry: deduplicate on it)
  X-Credits-Attempt     1, 2, ...
  X-Credits-Timestamp   Unix seconds when this attempt was signed
  X-Credits-Signature   sha256=<hex HMAC-SHA256(secret, timestamp + "." + raw body)>
"""

import hashlib
import hmac
import time

EVENT_HEADER = "X-Credits-Event"
DELIVERY_HEADER = "X-Credits-Delivery"
ATTEMPT_HEADER = "X-Credits-Attempt"
TIMESTAMP_HEADER = "X-Credits-Timestamp"
SIGNATURE_HEADER = "X-Credits-Signature"
SCHEME = "sha256"
DEFAULT_TOLERANCE_SECONDS = 300


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"{SCHEME}={digest.hexdigest()}"


def verify(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent (a captured
    request cannot be replayed later)."""
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - ts) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature or "")
