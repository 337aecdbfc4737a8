"""`Idempotency-Key` on every POST, and the one transaction every POST runs in.

The record (partner, key) is inserted first, in the transaction that then runs the request and
stores its response. So:
- the effect and the record commit together or not at all (a crash leaves nothing to replay and
  nothing done: the retry executes once);
- a concurrent duplicate's INSERT waits on the unique index until the first commits, then finds
  the record and replays it (PostgreSQL; SQLite serialises writers anyway);
- the same key with a different method, path or body is a 409, never executed;
- a 4xx answer is stored and replayed too (its writes are rolled back by a savepoint first); an
  unexpected error (5xx) stores nothing, so the client may retry with the same key.
"""

import hashlib
import json
from datetime import timedelta
from decimal import Decimal
from functools import wraps

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpResponse
from django.utils import timezone

from billing_api.models import IdempotencyRecord
from billing_api.renderers import dumps
from credits.exceptions import Conflict, ValidationFailed

HEADER = "Idempotency-Key"
REPLAY_HEADER = "Idempotent-Replayed"


def fingerprint(request) -> str:
    body = request.body or b""
    try:
        # Canonical JSON, so key order and whitespace do not make "another body".
        canonical = json.dumps(
            json.loads(body, parse_float=Decimal), sort_keys=True, default=str
        ).encode()
    except (ValueError, UnicodeDecodeError, RecursionError, TypeError):
        canonical = body
    digest = hashlib.sha256()
    for part in (request.method.encode(), request.path.encode(), canonical):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _validate_key(raw: str) -> str:
    key = raw.strip()
    if not key or len(key) > 255 or not key.isprintable() or not key.isascii():
        raise ValidationFailed(
            f"{HEADER} must be 1 to 255 printable ASCII characters.", field=HEADER
        )
    return key


class _RollbackWith(Exception):
    """Carries an error response out of the savepoint so its writes are undone."""

    def __init__(self, response):
        self.response = response


def _replay(record: IdempotencyRecord) -> HttpResponse:
    response = HttpResponse(
        record.response_body, status=record.response_status, content_type="application/json"
    )
    response[REPLAY_HEADER] = "true"
    return response


def idempotent(handler):
    """Decorate a POST handler of an APIView: one transaction, honouring Idempotency-Key."""

    @wraps(handler)
    def wrapper(view, request, *args, **kwargs):
        raw_key = request.headers.get(HEADER)
        if raw_key is None:
            with transaction.atomic():
                return handler(view, request, *args, **kwargs)
        key = _validate_key(raw_key)
        partner = request.user.partner
        fp = fingerprint(request)
        ttl = timedelta(hours=settings.BILLING_API_IDEMPOTENCY_TTL_HOURS)
        with transaction.atomic():
            record = _claim(partner, request, key, fp, ttl)
            if record.response_status:
                return _replay(record)
            try:
                with transaction.atomic():
                    response = handler(view, request, *args, **kwargs)
                    if response.status_code >= 400:
                        raise _RollbackWith(response)
            except _RollbackWith as rollback:
                response = rollback.response
            except Exception as exc:
                # The view's own handler renders 4xx; anything it re-raises is a 5xx and
                # leaves the outer transaction to roll the record back too.
                response = view.handle_exception(exc)
            record.response_status = response.status_code
            record.response_body = dumps(response.data) if response.data is not None else ""
            record.save(update_fields=["response_status", "response_body"])
            return response

    return wrapper


def _claim(partner, request, key: str, fp: str, ttl: timedelta) -> IdempotencyRecord:
    """Insert the record, or return the committed one for this key (waiting for a concurrent
    first request to commit). Refuses a key reused for another request."""
    now = timezone.now()
    # An expired record is forgotten: the key may be used afresh.
    IdempotencyRecord.objects.filter(partner=partner, key=key, created_at__lt=now - ttl).delete()
    try:
        with transaction.atomic():
            return IdempotencyRecord.objects.create(
                partner=partner,
                api_key=request.auth,
                key=key,
                method=request.method,
                path=request.path[:500],
                fingerprint=fp,
                created_at=now,
            )
    except IntegrityError:
        pass
    existing = IdempotencyRecord.objects.filter(partner=partner, key=key).first()
    if existing is None or not existing.response_status:
        # Only reachable where the first request is still running without a row lock to wait
        # on (it was deleted as expired meanwhile, or a database without index locks).
        raise Conflict(
            f"A request with this {HEADER} is still in progress; retry shortly.",
            code="idempotency_in_progress",
        )
    if existing.fingerprint != fp:
        raise Conflict(
            f"This {HEADER} was already used for a different request "
            f"({existing.method} {existing.path} with another body). Use a new key.",
            code="idempotency_key_reused",
            originalPath=existing.path,
        )
    return existing
