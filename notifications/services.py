"""Writes of the notifications app: claim expiry warnings (set-based), deliver the notices by
email and by signed webhook with retries and exponential backoff, retry a delivery by hand.

Two steps, never one transaction: `expiry_warnings_claim` decides who is warned (warnings,
notices and deliveries written together, or not at all) and commits; only then does
`deliveries_send_due` talk to the mail server and the partners' endpoints. A message therefore
never leaves for a claim that was rolled back, and no lock is held while a remote server is slow.
"""

import logging
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import groupby

from django.conf import settings
from django.core.mail import get_connection
from django.db import connection, transaction
from django.db.models import Case, Exists, F, IntegerField, OuterRef, Q, Value, When
from django.utils import timezone

from credits import ids
from credits.actors import Actor
from credits.exceptions import Conflict
from credits.models import USABLE_STATUSES, Account, CreditGrant
from notifications import messages, signing
from notifications.models import (
    Channel,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    ExpiryNotice,
    ExpiryWarning,
)
from notifications.selectors import next_pending_attempt_at, warned_credits_by_notice

log = logging.getLogger(__name__)

# A notice lists at most this many credits: an account with thousands expiring at once gets
# several bounded messages instead of one unbounded email and webhook body.
NOTICE_PART_SIZE = 500
WEBHOOK_BATCH_SIZE = 20
WEBHOOK_THREADS = 4
# Serialises claim runs on PostgreSQL: a second run waits for the first to commit, then finds
# every warning already claimed. The unique constraint, not this lock, is the guarantee.
CLAIM_LOCK_KEY = 0x5E_0E_C1
ERROR_MAX_CHARS = 2000


def thresholds() -> list[int]:
    days = sorted({int(d) for d in settings.CREDIT_EXPIRY_WARNING_DAYS if int(d) > 0})
    if not days:
        raise ValueError("CREDIT_EXPIRY_WARNING_DAYS must hold at least one positive day count")
    return days


# ---------------------------------------------------------------------------------------------
# Claim


@dataclass(frozen=True)
class ClaimResult:
    run_id: uuid.UUID
    warnings: int
    notices: int
    deliveries: int


@transaction.atomic(durable=True)
def expiry_warnings_claim(*, now: datetime | None = None) -> ClaimResult:
    """Claim every warning due now and write the notices and deliveries that will carry them.

    A credit is due for the most urgent threshold it has reached (expiry within T days), unless
    it was already warned at that threshold or a more urgent one: a credit issued 5 days before
    its expiry gets the 7-day warning now and the 1-day one later, never a stale 30-day one.
    Only usable credit (active or reserved, remaining > 0, not yet expired) is warned about.
    """
    now = now or timezone.now()
    run_id = uuid.uuid4()
    days = thresholds()
    if connection.vendor == "postgresql":
        warnings, notices, deliveries = _claim_postgres(run_id, now, days)
    else:
        warnings, notices, deliveries = _claim_portable(run_id, now, days)
    return ClaimResult(run_id, warnings, notices, deliveries)


_CLAIM_SQL = """
WITH due AS (
    SELECT g.id AS grant_id, g.account_id, g.currency, g.remaining, g.expires_at,
           {threshold_case} AS threshold_days
    FROM credits_creditgrant g
    WHERE g.status = ANY(%(statuses)s) AND g.remaining > 0
      AND g.expires_at > %(now)s AND g.expires_at <= %(horizon)s
), fresh AS (
    SELECT d.*,
           (row_number() OVER (PARTITION BY d.account_id, d.currency, d.threshold_days
                               ORDER BY d.expires_at, d.grant_id) - 1) / %(part_size)s AS part
    FROM due d
    WHERE NOT EXISTS (
        SELECT 1 FROM notifications_expirywarning w
        WHERE w.grant_id = d.grant_id AND w.threshold_days <= d.threshold_days
    )
), notices AS (
    INSERT INTO notifications_expirynotice
        (notice_id, account_id, currency, threshold_days, part, credit_count, total_remaining,
         earliest_expiry, run_id, created_at)
    SELECT 'ntc_' || substr(replace(gen_random_uuid()::text, '-', ''), 1, 24),
           account_id, currency, threshold_days, part, count(*), sum(remaining),
           min(expires_at), %(run_id)s, %(now)s
    FROM fresh
    GROUP BY account_id, currency, threshold_days, part
    RETURNING id, account_id, currency, threshold_days, part
), warnings AS (
    INSERT INTO notifications_expirywarning
        (grant_id, threshold_days, notice_id, currency, remaining, expires_at, run_id,
         created_at)
    SELECT f.grant_id, f.threshold_days, n.id, f.currency, f.remaining, f.expires_at,
           %(run_id)s, %(now)s
    FROM fresh f
    JOIN notices n ON n.account_id = f.account_id AND n.currency = f.currency
                  AND n.threshold_days = f.threshold_days AND n.part = f.part
    RETURNING 1
)
SELECT (SELECT count(*) FROM warnings), (SELECT count(*) FROM notices)
"""

_DELIVERIES_SQL = """
INSERT INTO notifications_delivery
    (delivery_id, notice_id, channel, target, status, attempts, max_attempts, next_attempt_at,
     last_error, retried_by, created_at)
SELECT 'dlv_' || substr(replace(gen_random_uuid()::text, '-', ''), 1, 24), n.id, 'email',
       a.email, 'pending', 0, %(max_attempts)s, %(now)s, '', '', %(now)s
FROM notifications_expirynotice n JOIN credits_account a ON a.id = n.account_id
WHERE n.run_id = %(run_id)s AND a.email <> ''
UNION ALL
SELECT 'dlv_' || substr(replace(gen_random_uuid()::text, '-', ''), 1, 24), n.id, 'webhook',
       p.webhook_url, 'pending', 0, %(max_attempts)s, %(now)s, '', '', %(now)s
FROM notifications_expirynotice n
JOIN credits_account a ON a.id = n.account_id
JOIN credits_partner p ON p.id = a.partner_id
WHERE n.run_id = %(run_id)s AND p.webhook_url <> ''
"""


def _claim_postgres(run_id: uuid.UUID, now: datetime, days: list[int]) -> tuple[int, int, int]:
    params = {
        "now": now,
        "horizon": now + timedelta(days=days[-1]),
        "statuses": [str(s) for s in USABLE_STATUSES],
        "run_id": run_id,
        "part_size": NOTICE_PART_SIZE,
        "max_attempts": settings.NOTIFICATIONS_MAX_ATTEMPTS,
    }
    whens = []
    for i, d in enumerate(days[:-1]):
        params[f"bound{i}"] = now + timedelta(days=d)
        whens.append(f"WHEN g.expires_at <= %(bound{i})s THEN {int(d)}")
    threshold_case = f"CASE {' '.join(whens)} ELSE {int(days[-1])} END" if whens else str(days[0])
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CLAIM_LOCK_KEY])
        # The grouping sorts every due credit: in memory rather than in temp files at 10^6.
        cursor.execute("SET LOCAL work_mem = '64MB'")
        cursor.execute(_CLAIM_SQL.format(threshold_case=threshold_case), params)
        warnings, notices = cursor.fetchone()
        cursor.execute(_DELIVERIES_SQL, params)
        deliveries = cursor.rowcount
    return warnings, notices, deliveries


def _claim_portable(run_id: uuid.UUID, now: datetime, days: list[int]) -> tuple[int, int, int]:
    """The same claim through the ORM, for SQLite (whose writers are serialised anyway)."""
    threshold = Case(
        *[When(expires_at__lte=now + timedelta(days=d), then=Value(d)) for d in days[:-1]],
        default=Value(days[-1]),
        output_field=IntegerField(),
    )
    rows = list(
        CreditGrant.objects.filter(
            status__in=USABLE_STATUSES,
            remaining__gt=0,
            expires_at__gt=now,
            expires_at__lte=now + timedelta(days=days[-1]),
        )
        .annotate(threshold=threshold)
        .annotate(
            warned=Exists(
                ExpiryWarning.objects.filter(
                    grant_id=OuterRef("pk"), threshold_days__lte=OuterRef("threshold")
                )
            )
        )
        .filter(warned=False)
        .order_by("account_id", "currency", "threshold", "expires_at", "pk")
        .values("pk", "account_id", "currency", "remaining", "expires_at", "threshold")
    )
    groups = []
    for key, members in groupby(
        rows, key=lambda r: (r["account_id"], r["currency"], r["threshold"])
    ):
        members = list(members)
        for part, start in enumerate(range(0, len(members), NOTICE_PART_SIZE)):
            groups.append((key, part, members[start : start + NOTICE_PART_SIZE]))
    notices = ExpiryNotice.objects.bulk_create(
        [
            ExpiryNotice(
                notice_id=ids.new_id("ntc"),
                account_id=account_id,
                currency=currency,
                threshold_days=days_,
                part=part,
                credit_count=len(members),
                total_remaining=sum((m["remaining"] for m in members), Decimal("0")),
                earliest_expiry=min(m["expires_at"] for m in members),
                run_id=run_id,
                created_at=now,
            )
            for (account_id, currency, days_), part, members in groups
        ]
    )
    ExpiryWarning.objects.bulk_create(
        [
            ExpiryWarning(
                grant_id=m["pk"],
                threshold_days=m["threshold"],
                notice=notice,
                currency=m["currency"],
                remaining=m["remaining"],
                expires_at=m["expires_at"],
                run_id=run_id,
                created_at=now,
            )
            for notice, (_, _, members) in zip(notices, groups, strict=True)
            for m in members
        ]
    )
    accounts = Account.objects.select_related("partner").in_bulk({n.account_id for n in notices})
    deliveries = []
    for notice in notices:
        account = accounts[notice.account_id]
        targets = [(Channel.EMAIL, account.email)]
        if account.partner is not None:
            targets.append((Channel.WEBHOOK, account.partner.webhook_url))
        deliveries += [
            Delivery(
                delivery_id=ids.new_id("dlv"),
                notice=notice,
                channel=channel,
                target=target,
                max_attempts=settings.NOTIFICATIONS_MAX_ATTEMPTS,
                next_attempt_at=now,
                created_at=now,
            )
            for channel, target in targets
            if target
        ]
    Delivery.objects.bulk_create(deliveries)
    return len(rows), len(notices), len(deliveries)


# ---------------------------------------------------------------------------------------------
# Deliver


@dataclass
class DeliveryReport:
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    by_channel: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    next_attempt_at: datetime | None = None  # earliest pending retry after this run

    @property
    def attempted(self) -> int:
        return self.delivered + self.retrying + self.failed


@dataclass
class _Outcome:
    delivery: Delivery
    number: int
    target: str
    started_at: datetime
    duration_ms: int
    succeeded: bool
    status_code: int | None = None
    error: str = ""
    permanent: bool = False  # no retry can succeed until someone fixes the configuration


def backoff_seconds(attempt: int) -> float:
    """Wait after the `attempt`-th failed try: BACKOFF * 2**(attempt-1), capped."""
    base = settings.NOTIFICATIONS_BACKOFF_SECONDS
    return min(base * (2 ** max(attempt - 1, 0)), settings.NOTIFICATIONS_BACKOFF_MAX_SECONDS)


def deliveries_send_due(
    *,
    batch_size: int | None = None,
    worker: str = "",
    clock: Callable[[], datetime] = timezone.now,
) -> DeliveryReport:
    """Send every delivery that is due when the run starts (new ones, retries whose backoff has
    passed, and ones whose worker died mid-attempt), in batches. A delivery that fails here is
    retried by a later run, never by this one, however short its backoff: one run is one
    attempt per delivery. Two workers running this at once take disjoint batches (row locks
    with SKIP LOCKED, then a lease)."""
    batch_size = batch_size or settings.NOTIFICATIONS_BATCH_SIZE
    report = DeliveryReport()
    due_by = clock()
    for channel, size in ((Channel.EMAIL, batch_size), (Channel.WEBHOOK, WEBHOOK_BATCH_SIZE)):
        while True:
            batch = _claim_batch(
                channel=channel, size=size, worker=worker, now=clock(), due_by=due_by
            )
            if not batch:
                break
            send = _send_emails if channel == Channel.EMAIL else _send_webhooks
            _record(send(batch, clock), report=report, worker=worker, clock=clock)
    report.next_attempt_at = next_pending_attempt_at()
    return report


def _claim_batch(
    *, channel: str, size: int, worker: str, now: datetime, due_by: datetime
) -> list[Delivery]:
    lease = settings.NOTIFICATIONS_LEASE_SECONDS
    if channel == Channel.WEBHOOK:
        # Every webhook of a batch may run into its timeout; the lease must outlast that.
        rounds = size // WEBHOOK_THREADS + 1
        lease = max(lease, int(settings.NOTIFICATIONS_WEBHOOK_TIMEOUT_SECONDS * rounds * 2))
    with transaction.atomic():
        due = Delivery.objects.filter(
            Q(status=DeliveryStatus.PENDING, next_attempt_at__lte=due_by)
            | Q(status=DeliveryStatus.SENDING, lease_until__lte=due_by),
            channel=channel,
        ).order_by("next_attempt_at", "pk")
        if connection.features.has_select_for_update_skip_locked:
            due = due.select_for_update(skip_locked=True)
        rows = list(due.values_list("pk", "status", "attempts", "target")[:size])
        if not rows:
            return []
        # A worker that stopped mid-attempt left no outcome: log that attempt as lost.
        DeliveryAttempt.objects.bulk_create(
            [
                DeliveryAttempt(
                    delivery_id=pk,
                    number=attempts,
                    target=target,
                    started_at=now,
                    succeeded=False,
                    error="no outcome recorded: the worker stopped during this attempt "
                    "(lease expired); retried",
                    worker=worker,
                )
                for pk, status, attempts, target in rows
                if status == DeliveryStatus.SENDING
            ],
            ignore_conflicts=True,
        )
        pks = [row[0] for row in rows]
        Delivery.objects.filter(pk__in=pks).update(
            status=DeliveryStatus.SENDING,
            lease_until=now + timedelta(seconds=lease),
            attempts=F("attempts") + 1,
        )
    return list(
        Delivery.objects.filter(pk__in=pks)
        .select_related("notice__account__partner")
        .order_by("pk")
    )


def _elapsed_ms(start: float) -> int:
    return int((time.monotonic() - start) * 1000)


def _send_emails(batch: Sequence[Delivery], clock) -> list[_Outcome]:
    credits = warned_credits_by_notice(d.notice_id for d in batch)
    outcomes = []
    try:
        mail = get_connection(fail_silently=False)
        mail.open()
    except Exception as exc:  # the server is down: every delivery of the batch fails this try
        started = clock()
        return [
            _Outcome(
                delivery=d,
                number=d.attempts,
                target=d.target,
                started_at=started,
                duration_ms=0,
                succeeded=False,
                error=_describe(exc),
            )
            for d in batch
        ]
    try:
        for delivery in batch:
            account = delivery.notice.account
            to = account.email or delivery.target
            started, t0 = clock(), time.monotonic()
            try:
                message = messages.expiry_email(delivery.notice, credits[delivery.notice_id], to)
                sent = mail.send_messages([message])
                ok = bool(sent)
                error = "" if ok else "the email backend accepted no message"
            except Exception as exc:  # one bad address must not stop the batch
                ok, error = False, _describe(exc)
            outcomes.append(
                _Outcome(
                    delivery=delivery,
                    number=delivery.attempts,
                    target=to,
                    started_at=started,
                    duration_ms=_elapsed_ms(t0),
                    succeeded=ok,
                    error=error,
                )
            )
    finally:
        mail.close()
    return outcomes


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A webhook endpoint answers for itself: a redirect is reported, not followed (a POST
    silently turned into a GET elsewhere would look like a success)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def _send_webhooks(batch: Sequence[Delivery], clock) -> list[_Outcome]:
    credits = warned_credits_by_notice(d.notice_id for d in batch)
    jobs = []
    for delivery in batch:
        partner = delivery.notice.account.partner
        url = partner.webhook_url if partner is not None else ""
        secret = partner.webhook_secret if partner is not None else ""
        body = messages.dumps(
            messages.webhook_payload(delivery.notice, credits[delivery.notice_id])
        )
        jobs.append((delivery, url or delivery.target, secret, body))
    with ThreadPoolExecutor(max_workers=WEBHOOK_THREADS) as pool:
        return list(pool.map(lambda job: _post_webhook(*job, clock=clock), jobs))


def _post_webhook(delivery: Delivery, url: str, secret: str, body: bytes, *, clock) -> _Outcome:
    number = delivery.attempts
    started, t0 = clock(), time.monotonic()
    if not url.startswith(("http://", "https://")):
        return _Outcome(
            delivery=delivery,
            number=number,
            target=url,
            started_at=started,
            duration_ms=0,
            succeeded=False,
            error=f"webhook URL {url!r} is not http(s)",
            permanent=True,
        )
    if not secret:
        return _Outcome(
            delivery=delivery,
            number=number,
            target=url,
            started_at=started,
            duration_ms=0,
            succeeded=False,
            permanent=True,
            error="the partner has no webhook secret: nothing was sent (set one, then retry)",
        )
    timestamp = str(int(time.time()))
    request = urllib.request.Request(  # noqa: S310 (scheme checked above)
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "credits-back-office-webhooks/1",
            signing.EVENT_HEADER: "credit.expiration_warning",
            signing.DELIVERY_HEADER: delivery.delivery_id,
            signing.ATTEMPT_HEADER: str(number),
            signing.TIMESTAMP_HEADER: timestamp,
            signing.SIGNATURE_HEADER: signing.sign(secret, timestamp, body),
        },
    )
    try:
        with _opener.open(request, timeout=settings.NOTIFICATIONS_WEBHOOK_TIMEOUT_SECONDS) as resp:
            code = resp.status
            ok, error = 200 <= code < 300, ""
    except urllib.error.HTTPError as exc:
        code, ok = exc.code, False
        error = f"HTTP {exc.code} {exc.reason}: {_read_snippet(exc)}".strip()
    except Exception as exc:  # refused, reset, DNS, TLS, timeout: all are worth a retry
        code, ok, error = None, False, _describe(exc)
    return _Outcome(
        delivery=delivery,
        number=number,
        target=url,
        started_at=started,
        duration_ms=_elapsed_ms(t0),
        succeeded=ok,
        status_code=code,
        error=error,
    )


def _read_snippet(exc: urllib.error.HTTPError) -> str:
    try:
        return exc.read(300).decode(errors="replace")
    except Exception:
        return ""


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:ERROR_MAX_CHARS]


def _record(outcomes: list[_Outcome], *, report: DeliveryReport, worker: str, clock) -> None:
    """Log every attempt and move each delivery on: delivered, waiting for its next try, or
    failed for good. An outcome whose lease was lost meanwhile (another worker took the
    delivery over) is logged but changes nothing."""
    if not outcomes:
        return
    now = clock()
    with transaction.atomic():
        DeliveryAttempt.objects.bulk_create(
            [
                DeliveryAttempt(
                    delivery_id=o.delivery.pk,
                    number=o.number,
                    target=o.target[:500],
                    started_at=o.started_at,
                    duration_ms=o.duration_ms,
                    succeeded=o.succeeded,
                    status_code=o.status_code,
                    error=o.error[:ERROR_MAX_CHARS],
                    worker=worker[:200],
                )
                for o in outcomes
            ],
            ignore_conflicts=True,
        )
        # Successes share their new state: one UPDATE per (status code, attempt number) group
        # instead of a row-by-row bulk_update (a batch is hundreds of rows). The filter on
        # `attempts` is the lease check: a row another worker took over is left alone.
        delivered: dict[tuple[int | None, int], list[_Outcome]] = defaultdict(list)
        for o in outcomes:
            if o.succeeded:
                delivered[(o.status_code, o.number)].append(o)
        for (status_code, number), group in delivered.items():
            moved = _sending(group, number).update(
                status=DeliveryStatus.DELIVERED,
                delivered_at=now,
                next_attempt_at=None,
                lease_until=None,
                last_status_code=status_code,
                last_error="",
            )
            report.delivered += moved
            report.by_channel[group[0].delivery.channel] += moved  # a batch is of one channel
            for o in group:
                if o.target != o.delivery.target:  # the address or URL changed meanwhile
                    Delivery.objects.filter(pk=o.delivery.pk).update(target=o.target[:500])
        # Failures carry their own error and backoff: few, and each its own UPDATE.
        for o in outcomes:
            if o.succeeded:
                continue
            if o.permanent or o.number >= o.delivery.max_attempts:
                status, next_at = DeliveryStatus.FAILED, None
            else:
                status = DeliveryStatus.PENDING
                next_at = now + timedelta(seconds=backoff_seconds(o.number))
            moved = _sending([o], o.number).update(
                status=status,
                next_attempt_at=next_at,
                lease_until=None,
                last_status_code=o.status_code,
                last_error=o.error[:ERROR_MAX_CHARS],
                target=o.target[:500],
            )
            if moved and status == DeliveryStatus.FAILED:
                report.failed += 1
            elif moved:
                report.retrying += 1
    for o in outcomes:
        if not o.succeeded:
            log.warning(
                "%s delivery %s attempt %s failed: %s",
                o.delivery.channel,
                o.delivery.delivery_id,
                o.number,
                o.error,
            )


def _sending(outcomes: list[_Outcome], number: int):
    return Delivery.objects.filter(
        pk__in=[o.delivery.pk for o in outcomes], status=DeliveryStatus.SENDING, attempts=number
    )


# ---------------------------------------------------------------------------------------------
# The job, and the admin's retry


@dataclass(frozen=True)
class WarningsRun:
    claim: ClaimResult
    delivery: DeliveryReport


def expiry_warnings_send(*, now: datetime | None = None, worker: str = "") -> WarningsRun:
    """The send_expiry_warnings job: claim (one committed transaction), then deliver what is
    due, this run's notices and earlier retries alike."""
    claim = expiry_warnings_claim(now=now)
    return WarningsRun(claim=claim, delivery=deliveries_send_due(worker=worker))


@transaction.atomic
def delivery_retry(*, delivery: Delivery, actor: Actor, now: datetime | None = None) -> Delivery:
    """Send a failed (or waiting) delivery again at the next delivery run, with a fresh allowance
    of attempts: for when the partner fixed their endpoint or secret."""
    now = now or timezone.now()
    delivery = Delivery.objects.select_for_update().get(pk=delivery.pk)
    if delivery.status not in (DeliveryStatus.FAILED, DeliveryStatus.PENDING):
        raise Conflict(
            f"Delivery {delivery.delivery_id} is {delivery.status}; only failed or waiting "
            "deliveries can be retried.",
            code="invalid_delivery_status",
        )
    delivery.status = DeliveryStatus.PENDING
    delivery.next_attempt_at = now
    delivery.max_attempts = delivery.attempts + settings.NOTIFICATIONS_MAX_ATTEMPTS
    delivery.retried_by = f"{actor.label} at {now.isoformat(timespec='seconds')}"
    delivery.save(update_fields=["status", "next_attempt_at", "max_attempts", "retried_by"])
    return delivery
