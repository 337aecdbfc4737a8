"""Writes of the credits app: issue, approve, activate, void, transfer, expire, hold, deduct,
reverse. Each public function is keyword-only and runs in one transaction that also writes the
ledger entries (balance changes) or audit events (everything else) with the actor.

Functions named `*_locked` expect their grants already locked by the caller (the invoices app's
settlement, which must lock invoice and grants together in the global order of credits.locking).
"""

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cache

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, IntegrityError, connection, connections, transaction
from django.db.models import F, Q, Sum
from django.utils import timezone

from credits import ids
from credits.actors import Actor
from credits.exceptions import BusinessRuleViolation, Conflict, PermissionDenied, ValidationFailed
from credits.locking import lock_grant
from credits.models import (
    OPEN_STATUSES,
    USABLE_STATUSES,
    Account,
    CreditGrant,
    CreditHold,
    EntryKind,
    GrantEvent,
    GrantEventKind,
    GrantStatus,
    GrantType,
    HoldStatus,
    LedgerEntry,
    Partner,
    UsageLimit,
)
from credits.money import check_currency, fmt, parse_amount

MAX_EXPIRATION_DAYS = 3650
ACTIVATE_CHUNK = 5000  # grants per SELECT ... FOR UPDATE / UPDATE pair in the activation job
# Up to this many rows, plain UPDATEs cost less CPU than bulk_update's CASE WHEN per field.
FEW_ROWS = 4
# Up to this many rows, insert_rows writes one plain INSERT (its text cached per row count).
INSERT_FEW_ROWS = 50


def _db():
    # The connection itself: each attribute read through the `django.db.connection` proxy is a
    # thread-local lookup, and these helpers read a few per value.
    return connections[DEFAULT_DB_ALIAS]


@cache
def _update_sql(model, fields: tuple[str, ...], vendor: str) -> tuple[str, list]:
    meta, qn = model._meta, _db().ops.quote_name
    columns = [meta.get_field(f) for f in fields]
    sql = "UPDATE {} SET {} WHERE {} = %s".format(  # noqa: S608 (names from the model's meta)
        qn(meta.db_table), ", ".join(f"{qn(c.column)} = %s" for c in columns), qn(meta.pk.column)
    )
    return sql, columns


def save_fields(model, rows: Sequence, fields: list[str]) -> None:
    """Write `fields` of rows already locked: one UPDATE per row for a few (a settlement's
    grants and lines), one bulk_update for more. The few share one statement text and each
    value goes through its field's own get_db_prep_save, as QuerySet.update() would do it: per
    row that costs a third of update()'s CPU, a tenth of bulk_update's (bench/settlement.py)."""
    db = _db()
    sql, columns = _update_sql(model, tuple(fields), db.vendor)
    if len(rows) > FEW_ROWS or any(hasattr(c, "get_placeholder") for c in columns):
        model.objects.bulk_update(rows, fields)
        return
    with db.cursor() as cursor:
        for row in rows:
            values = [c.get_db_prep_save(getattr(row, c.attname), db) for c in columns]
            cursor.execute(sql, [*values, row.pk])


@cache
def _insert_sql(model, n: int, vendor: str) -> tuple[str, list]:
    meta, qn = model._meta, _db().ops.quote_name
    columns = [f for f in meta.concrete_fields if not f.generated and f is not meta.auto_field]
    row = f"({', '.join(['%s'] * len(columns))})"
    sql = "INSERT INTO {} ({}) VALUES {} RETURNING {}".format(  # noqa: S608 (as above)
        qn(meta.db_table),
        ", ".join(qn(c.column) for c in columns),
        ", ".join([row] * n),
        qn(meta.pk.column),
    )
    return sql, columns


def insert_rows(model, rows: Sequence) -> None:
    """INSERT a few new rows (a settlement's lines, entries, its event) in one statement and
    set their pks: what bulk_create does, without building its query each time (~0.4 ms less
    client time per INSERT, bench/settlement.py). Each value goes through its field's pre_save
    and get_db_prep_save as in bulk_create. More rows, rows with a pk already, models with
    other returned columns, and values that are expressions (a database default) go through
    bulk_create itself."""
    if not rows:
        return
    meta, db = model._meta, _db()
    if (
        len(rows) > INSERT_FEW_ROWS
        or not db.features.can_return_rows_from_bulk_insert
        or meta.db_returning_fields != [meta.pk]
        or any(row.pk is not None for row in rows)
    ):
        model.objects.bulk_create(rows)
        return
    sql, columns = _insert_sql(model, len(rows), db.vendor)
    values = []
    for row in rows:
        row._prepare_related_fields_for_save(operation_name="insert_rows")
        values += [c.get_db_prep_save(c.pre_save(row, True), db) for c in columns]
    if any(hasattr(v, "as_sql") for v in values):
        model.objects.bulk_create(rows)
        return
    with db.cursor() as cursor:
        cursor.execute(sql, values)
        pks = cursor.fetchall()
    for row, (pk,) in zip(rows, pks, strict=True):
        row.pk = pk
        row._state.adding = False
        row._state.db = db.alias


@dataclass(frozen=True)
class Draw:
    """One grant's deduction on one invoice: the credit line names the grant on the invoice."""

    grant: CreditGrant
    amount: Decimal
    invoice_line: object  # invoices.InvoiceLine (credit line)
    description: str = ""


# ---------------------------------------------------------------------------------------------
# Accounts


def account_create(
    *,
    partner: Partner,
    account_id: str,
    name: str,
    email: str = "",
    currency: str = "USD",
    auto_apply_credits: bool = True,
) -> Account:
    """An account owned by `partner` (only its keys will see it). Account ids are global."""
    check_currency(currency)
    account_id = account_id.strip()
    if not account_id:
        raise ValidationFailed("accountId is required.", field="accountId")
    if Account.objects.filter(account_id=account_id).exists():
        raise Conflict(
            f"Account {account_id} already exists.", code="account_exists", field="accountId"
        )
    try:
        with transaction.atomic():
            return Account.objects.create(
                account_id=account_id,
                name=name.strip(),
                email=email,
                currency=currency,
                auto_apply_credits=auto_apply_credits,
                partner=partner,
            )
    except IntegrityError:
        # Lost a race with a concurrent create of the same id.
        raise Conflict(
            f"Account {account_id} already exists.", code="account_exists", field="accountId"
        ) from None


# ---------------------------------------------------------------------------------------------
# Issue, approve, activate


def _parse_services(services: Sequence[str] | None) -> list[str]:
    if services is None:
        return ["all"]
    if isinstance(services, str) or not all(isinstance(s, str) and s for s in services):
        raise ValidationFailed(
            "restrictions.applicableServices must be a list of service names.",
            field="applicableServices",
        )
    cleaned = sorted({s.strip() for s in services})
    return ["all"] if not cleaned or "all" in cleaned else cleaned


@transaction.atomic
def grant_issue(
    *,
    account: Account,
    type: str,
    amount: object,
    currency: str,
    actor: Actor,
    expiration_days: int | None = None,
    expires_at: datetime | None = None,
    effective_at: datetime | None = None,
    auto_activate: bool = True,
    price: object = None,
    description: str = "",
    reference_id: str = "",
    issued_by: str = "",
    reason: str = "",
    applicable_services: Sequence[str] | None = None,
    minimum_spend: object = Decimal("0"),
    maximum_discount: object = None,
    usage_limit: str = UsageLimit.UNLIMITED,
    account_restrictions: Sequence[str] = (),
    campaign_id: str = "",
    tags: Sequence[str] = (),
    notes: str = "",
    transferable: bool = False,
    extra_metadata: dict | None = None,
    now: datetime | None = None,
) -> CreditGrant:
    """Issue a credit grant with its `grant` ledger entry.

    It is usable at once unless its effective date is in the future, auto-activation is off, its
    amount is above the currency's approval threshold (maker-checker), or it is a referral
    credit waiting for the account's qualifying spend. A `purchased` grant also bills its price
    on an invoice of its own (Octane: customers are invoiced when credits are granted).
    """
    now = now or timezone.now()
    if type not in GrantType.values:
        raise ValidationFailed(
            f"Unknown credit type {type!r}; expected one of {', '.join(GrantType.values)}.",
            field="type",
        )
    check_currency(currency)
    amount = parse_amount(amount, currency)
    price = (
        amount if price is None else parse_amount(price, currency, field="price", allow_zero=True)
    )
    minimum_spend = parse_amount(
        minimum_spend or 0, currency, field="minimumSpend", allow_zero=True
    )
    if maximum_discount is not None:
        maximum_discount = parse_amount(maximum_discount, currency, field="maximumDiscount")
    if usage_limit not in UsageLimit.values:
        raise ValidationFailed(
            f"Unknown usageLimit {usage_limit!r}; expected one of {', '.join(UsageLimit.values)}.",
            field="usageLimit",
        )
    effective_at = effective_at or now
    if expiration_days is not None and expires_at is not None:
        raise ValidationFailed(
            "Give expirationDays or expiresAt, not both.", field="expirationDays"
        )
    if expiration_days is not None:
        if isinstance(expiration_days, bool) or not isinstance(expiration_days, int):
            raise ValidationFailed("expirationDays must be a whole number.", field="expirationDays")
        if not 1 <= expiration_days <= MAX_EXPIRATION_DAYS:
            raise ValidationFailed(
                f"expirationDays must be between 1 and {MAX_EXPIRATION_DAYS}.",
                field="expirationDays",
            )
        # Counted from when the credit becomes effective, so a future grant keeps its full term.
        expires_at = effective_at + timedelta(days=expiration_days)
    if expires_at is not None:
        if expires_at <= effective_at:
            raise ValidationFailed(
                "expiresAt must be after the credit becomes effective.", field="expiresAt"
            )
        if expires_at <= now:
            raise ValidationFailed("expiresAt is in the past.", field="expiresAt")
    threshold = settings.CREDIT_APPROVAL_THRESHOLDS.get(currency)

    grant = CreditGrant(
        credit_id=ids.credit_id(),
        account=account,
        type=type,
        currency=currency,
        original=amount,
        remaining=amount,
        price=price,
        description=description[:500],
        reference_id=reference_id,
        issued_by=issued_by or actor.label,
        reason=reason,
        issued_at=now,
        effective_at=effective_at,
        expires_at=expires_at,
        auto_activate=auto_activate,
        approval_required=threshold is not None and amount > threshold,
        issuer_actor=actor.label,
        applicable_services=_parse_services(applicable_services),
        minimum_spend=minimum_spend,
        maximum_discount=maximum_discount,
        usage_limit=usage_limit,
        account_restrictions=list(account_restrictions or []),
        campaign_id=campaign_id or "",
        tags=list(tags or []),
        notes=notes or "",
        transferable=bool(transferable),
        extra_metadata=extra_metadata or {},
    )
    if _activation_due(grant, now):
        grant.activated_at = now
    grant.status = grant.derive_status()
    grant.save()
    LedgerEntry.objects.create(
        account=account,
        grant=grant,
        kind=EntryKind.GRANT,
        amount=amount,
        currency=currency,
        balance_after=amount,
        actor=actor.label,
        actor_user_id=actor.user_id,
        reason=reason or description,
        created_at=now,
    )
    if type == GrantType.PURCHASED and price > 0:
        # The one call from credits into invoices: billing the price is part of issuing.
        from invoices.services import invoice_bill_purchased_credit

        invoice_bill_purchased_credit(grant=grant, actor=actor, now=now)
    return grant


def _activation_due(grant: CreditGrant, now: datetime) -> bool:
    """Whether a pending grant may become active now without a person deciding it."""
    return (
        grant.auto_activate
        and grant.effective_at <= now
        and (not grant.approval_required or grant.approved_at is not None)
        and not _awaits_qualifying_spend(grant)
        and (grant.expires_at is None or grant.expires_at > now)
    )


def _awaits_qualifying_spend(grant: CreditGrant) -> bool:
    return grant.type == GrantType.REFERRAL and grant.minimum_spend > 0


def _event(
    grant: CreditGrant, kind: str, actor: Actor, now: datetime, reason: str = "", data=None
) -> None:
    GrantEvent.objects.create(
        grant=grant, kind=kind, actor=actor.label, reason=reason, data=data or {}, created_at=now
    )


@transaction.atomic
def grant_approve(
    *, grant: CreditGrant, actor: Actor, reason: str = "", now: datetime | None = None
) -> CreditGrant:
    """Maker-checker: a second person, not the issuer, approves a grant above the threshold."""
    now = now or timezone.now()
    grant = lock_grant(grant.pk)
    if not grant.approval_required:
        raise Conflict(f"{grant.credit_id} does not need approval.", code="approval_not_required")
    if grant.approved_at is not None:
        raise Conflict(f"{grant.credit_id} is already approved.", code="already_approved")
    if grant.status != GrantStatus.PENDING:
        raise Conflict(f"{grant.credit_id} is {grant.status}.", code="invalid_status")
    if actor.label == grant.issuer_actor:
        raise PermissionDenied(
            "The issuer of a credit cannot approve it; another person must.",
            code="approver_is_issuer",
        )
    grant.approved_at = now
    grant.approved_by = actor.label
    if _activation_due(grant, now):
        grant.activated_at = now
    grant.status = grant.derive_status()
    grant.save(update_fields=["approved_at", "approved_by", "activated_at", "status"])
    _event(grant, GrantEventKind.APPROVED, actor, now, reason)
    if grant.activated_at == now:
        _event(grant, GrantEventKind.ACTIVATED, actor, now, "approved")
    return grant


@transaction.atomic
def grant_activate(
    *, grant: CreditGrant, actor: Actor, reason: str = "", now: datetime | None = None
) -> CreditGrant:
    """Activate a pending grant by hand (auto-activation off, or a referral override)."""
    now = now or timezone.now()
    grant = lock_grant(grant.pk)
    if grant.status != GrantStatus.PENDING:
        raise Conflict(f"{grant.credit_id} is {grant.status}, not pending.", code="invalid_status")
    if grant.approval_required and grant.approved_at is None:
        raise BusinessRuleViolation(
            f"{grant.credit_id} needs approval before it can be activated.",
            code="approval_required",
        )
    if grant.effective_at > now:
        raise BusinessRuleViolation(
            f"{grant.credit_id} is not effective until {grant.effective_at.isoformat()}.",
            code="not_yet_effective",
        )
    if grant.expires_at is not None and grant.expires_at <= now:
        raise BusinessRuleViolation(f"{grant.credit_id} has expired.", code="expired")
    grant.activated_at = now
    grant.status = grant.derive_status()
    grant.save(update_fields=["activated_at", "status"])
    _event(grant, GrantEventKind.ACTIVATED, actor, now, reason)
    return grant


def grants_activate_due(*, actor: Actor, now: datetime | None = None) -> int:
    """Set-based activation of pending grants whose time has come (the activate_credits job):
    future effectiveAt reached, and referral grants whose account reached the qualifying spend.
    Safe to run twice or concurrently: the status condition makes the second UPDATE a no-op."""
    now = now or timezone.now()
    with transaction.atomic():
        due = CreditGrant.objects.filter(
            status=GrantStatus.PENDING,
            auto_activate=True,
            effective_at__lte=now,
        ).filter(
            Q(approval_required=False) | Q(approved_at__isnull=False),
            Q(expires_at__isnull=True) | Q(expires_at__gt=now),
        )
        plain = due.exclude(type=GrantType.REFERRAL, minimum_spend__gt=0)
        ids_ = list(plain.values_list("pk", flat=True))
        ids_ += _referrals_qualified(due, now)
        return _activate_ids(ids_, actor, now, "effective date reached")


def _referrals_qualified(pending_qs, now: datetime) -> list[int]:
    from invoices.selectors import qualifying_spend_subquery

    return list(
        pending_qs.filter(type=GrantType.REFERRAL, minimum_spend__gt=0)
        .annotate(spend=qualifying_spend_subquery())
        .filter(spend__gte=F("minimum_spend"))
        .values_list("pk", flat=True)
    )


def _activate_ids(ids_: list[int], actor: Actor, now: datetime, reason: str) -> int:
    if not ids_:
        return 0
    # The rows are locked in primary-key order and re-read as still pending under the lock, not
    # decided by the earlier SELECT: two workers racing here activate each grant once, and only
    # the winner's ids get an event. A chunk per statement pair (not a statement per grant), so
    # a run over 10^6 due grants stays set-based.
    activated: list[int] = []
    pks = sorted(set(ids_))
    for start in range(0, len(pks), ACTIVATE_CHUNK):
        chunk = list(
            CreditGrant.objects.select_for_update()
            .filter(pk__in=pks[start : start + ACTIVATE_CHUNK], status=GrantStatus.PENDING)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        CreditGrant.objects.filter(pk__in=chunk).update(status=GrantStatus.ACTIVE, activated_at=now)
        activated += chunk
    GrantEvent.objects.bulk_create(
        GrantEvent(
            grant_id=pk,
            kind=GrantEventKind.ACTIVATED,
            actor=actor.label,
            reason=reason,
            created_at=now,
        )
        for pk in activated
    )
    return len(activated)


_REFERRAL_WAITING_SQL = """
SELECT 1 FROM credits_creditgrant
WHERE account_id = %s AND status = 'pending' AND type = 'referral' AND minimum_spend > 0
LIMIT 1
"""


def referrals_activate_for_account_locked(*, account: Account, actor: Actor, now: datetime) -> int:
    """Activate the account's pending referral grants whose qualifying spend is reached (called
    by invoice finalization, inside its transaction, so a referral credit is usable at once)."""
    with connection.cursor() as cursor:
        # Most accounts have no referral credit waiting: this probe spares nearly every
        # finalization the qualifying-spend query. Plain SQL: building it with the ORM cost 8x
        # running it (bench/settlement.py).
        cursor.execute(_REFERRAL_WAITING_SQL, [account.pk])
        if cursor.fetchone() is None:
            return 0
    due = CreditGrant.objects.filter(
        account=account,
        status=GrantStatus.PENDING,
        type=GrantType.REFERRAL,
        minimum_spend__gt=0,
        auto_activate=True,
        effective_at__lte=now,
    ).filter(
        Q(approval_required=False) | Q(approved_at__isnull=False),
        Q(expires_at__isnull=True) | Q(expires_at__gt=now),
    )
    return _activate_ids(_referrals_qualified(due, now), actor, now, "qualifying spend reached")


# ---------------------------------------------------------------------------------------------
# Void, transfer


@transaction.atomic
def grant_void(
    *, grant: CreditGrant, actor: Actor, reason: str, now: datetime | None = None
) -> CreditGrant:
    """Void the unused remainder (Octane): the used part stays used. Holds on it are released."""
    now = now or timezone.now()
    if not (reason or "").strip():
        raise ValidationFailed("A reason is required to void a credit.", field="reason")
    grant = lock_grant(grant.pk)
    if grant.status not in OPEN_STATUSES:
        raise Conflict(
            f"{grant.credit_id} is {grant.status}; only pending, active or reserved credits can "
            "be voided.",
            code="invalid_status",
        )
    if grant.reserved:
        _release_holds_locked(
            holds=CreditHold.objects.filter(grant=grant, status=HoldStatus.ACTIVE),
            grants={grant.pk: grant},
            actor=actor,
            now=now,
            reason="credit voided",
        )
    voided = grant.remaining
    grant.remaining = Decimal("0")
    grant.voided_at = now
    grant.status = grant.derive_status()
    grant.save(update_fields=["remaining", "reserved", "voided_at", "status"])
    if voided:
        LedgerEntry.objects.create(
            account_id=grant.account_id,
            grant=grant,
            kind=EntryKind.VOID,
            amount=-voided,
            currency=grant.currency,
            balance_after=Decimal("0"),
            actor=actor.label,
            actor_user_id=actor.user_id,
            reason=reason.strip(),
            created_at=now,
        )
    return grant


@transaction.atomic
def grant_transfer(
    *,
    grant: CreditGrant,
    to_account: Account,
    actor: Actor,
    amount: object = None,
    reason: str = "",
    now: datetime | None = None,
) -> tuple[CreditGrant, CreditGrant]:
    """Move remaining credit to another account: transfer_out on the source, and a new grant
    (same type, expiry, restrictions; referenceId = the source credit) with transfer_in."""
    now = now or timezone.now()
    grant = lock_grant(grant.pk)
    if not grant.transferable:
        raise BusinessRuleViolation(
            f"{grant.credit_id} is not transferable.", code="not_transferable"
        )
    if grant.status not in USABLE_STATUSES:
        raise Conflict(
            f"{grant.credit_id} is {grant.status}; only active credit can be transferred.",
            code="invalid_status",
        )
    if grant.expires_at is not None and grant.expires_at <= now:
        raise Conflict(f"{grant.credit_id} has expired.", code="expired")
    if to_account.pk == grant.account_id:
        raise ValidationFailed(
            "A credit cannot be transferred to its own account.", field="toAccountId"
        )
    allowed = grant.account_restrictions or []
    if allowed and to_account.account_id not in allowed:
        raise BusinessRuleViolation(
            f"{grant.credit_id} may only be transferred to: {', '.join(allowed)}.",
            code="account_restricted",
        )
    amount = grant.available if amount is None else parse_amount(amount, grant.currency)
    if amount <= 0 or amount > grant.available:
        raise BusinessRuleViolation(
            f"Only {fmt(grant.available, grant.currency)} of {grant.credit_id} can be transferred.",
            code="insufficient_credit",
            available=str(grant.available),
        )
    grant.remaining -= amount
    grant.status = grant.derive_status()
    grant.save(update_fields=["remaining", "status"])
    out = LedgerEntry.objects.create(
        account_id=grant.account_id,
        grant=grant,
        kind=EntryKind.TRANSFER_OUT,
        amount=-amount,
        currency=grant.currency,
        balance_after=grant.remaining,
        actor=actor.label,
        actor_user_id=actor.user_id,
        reason=reason or f"transfer to {to_account.account_id}",
        created_at=now,
    )
    copy_fields = [
        "type",
        "currency",
        "effective_at",
        "expires_at",
        "description",
        "issued_by",
        "applicable_services",
        "minimum_spend",
        "maximum_discount",
        "usage_limit",
        "account_restrictions",
        "campaign_id",
        "tags",
        "transferable",
        "extra_metadata",
    ]
    target = CreditGrant(
        credit_id=ids.credit_id(),
        account=to_account,
        original=amount,
        remaining=amount,
        price=Decimal("0"),
        reference_id=grant.credit_id,
        reason=reason or f"transfer from {grant.account.account_id}",
        issued_at=now,
        activated_at=now,
        issuer_actor=actor.label,
        notes=f"Transferred from {grant.credit_id}",
        transferred_from=grant,
        **{f: getattr(grant, f) for f in copy_fields},
    )
    target.status = target.derive_status()
    target.save()
    LedgerEntry.objects.create(
        account=to_account,
        grant=target,
        kind=EntryKind.TRANSFER_IN,
        amount=amount,
        currency=target.currency,
        balance_after=amount,
        related_entry=out,
        actor=actor.label,
        actor_user_id=actor.user_id,
        reason=reason or f"transfer from {grant.credit_id}",
        created_at=now,
    )
    return grant, target


# ---------------------------------------------------------------------------------------------
# Expiry (set-based)

_EXPIRE_SQL = """
WITH due AS (
    SELECT id, account_id, currency, remaining
    FROM credits_creditgrant
    WHERE status IN ('pending', 'active', 'reserved')
      AND expires_at IS NOT NULL AND expires_at <= %(now)s
      AND id > %(after)s
    ORDER BY id
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
), grants AS (
    UPDATE credits_creditgrant g
    SET status = 'expired', expired_at = %(now)s, remaining = 0, reserved = 0
    -- By pk lookups: a join with `due` made the planner hash the whole table for every batch.
    WHERE g.id = ANY(ARRAY(SELECT id FROM due))
    RETURNING g.id
), holds AS (
    UPDATE credits_credithold h
    SET status = 'released', closed_at = %(now)s, closed_by = %(actor)s
    FROM due WHERE h.grant_id = due.id AND h.status = 'active'
    RETURNING h.id
), entries AS (
    INSERT INTO credits_ledgerentry
        (entry_id, account_id, grant_id, kind, amount, currency, balance_after,
         actor, reason, created_at)
    SELECT 'led_' || substr(md5(random()::text || due.id::text), 1, 24),
           due.account_id, due.id, 'expiration', -due.remaining, due.currency, 0,
           %(actor)s, 'expired', %(now)s
    FROM due WHERE due.remaining > 0
    RETURNING 1
)
SELECT (SELECT count(*) FROM grants), (SELECT count(*) FROM entries), (SELECT max(id) FROM due)
"""


def grants_expire(
    *, actor: Actor, now: datetime | None = None, batch_size: int | None = None
) -> int:
    """Expire every open grant whose expiry instant has passed, with its `expiration` entry.

    Set-based: on PostgreSQL one statement per batch locks (skipping rows a settlement holds
    right now; the next run takes them, and drawdown never uses an expired grant anyway),
    expires, releases holds and writes the ledger. Each batch commits on its own, so a run over
    10^6 grants neither holds locks for long nor loses work if stopped. Two runs at once take
    disjoint rows (SKIP LOCKED), and the unique index on expirations refuses any double.
    """
    now = now or timezone.now()
    batch_size = batch_size or settings.CREDIT_EXPIRE_BATCH_SIZE
    total = 0
    # Each batch starts after the last id of the previous one: without it every batch walked
    # again over the rows already expired (the pk index still has them), O(n^2) over a run.
    after = 0
    while True:
        with transaction.atomic():
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute(
                        _EXPIRE_SQL,
                        {"now": now, "batch": batch_size, "actor": actor.label, "after": after},
                    )
                    expired, _, last_id = cursor.fetchone()
                    after = last_id or after
            else:
                expired = _expire_batch_orm(actor=actor, now=now, batch_size=batch_size)
        total += expired
        if expired < batch_size:
            return total


def _expire_batch_orm(*, actor: Actor, now: datetime, batch_size: int) -> int:
    """The same batch for databases without SKIP LOCKED (SQLite serialises writers anyway)."""
    due = list(
        CreditGrant.objects.select_for_update()
        .filter(status__in=OPEN_STATUSES, expires_at__isnull=False, expires_at__lte=now)
        .order_by("pk")
        .values("pk", "account_id", "currency", "remaining")[:batch_size]
    )
    pks = [row["pk"] for row in due]
    CreditGrant.objects.filter(pk__in=pks).update(
        status=GrantStatus.EXPIRED, expired_at=now, remaining=0, reserved=0
    )
    CreditHold.objects.filter(grant_id__in=pks, status=HoldStatus.ACTIVE).update(
        status=HoldStatus.RELEASED, closed_at=now, closed_by=actor.label
    )
    LedgerEntry.objects.bulk_create(
        LedgerEntry(
            account_id=row["account_id"],
            grant_id=row["pk"],
            kind=EntryKind.EXPIRATION,
            amount=-row["remaining"],
            currency=row["currency"],
            balance_after=Decimal("0"),
            actor=actor.label,
            reason="expired",
            created_at=now,
        )
        for row in due
        if row["remaining"] > 0
    )
    return len(due)


# ---------------------------------------------------------------------------------------------
# Holds (reservations by draft invoices)


def hold_place_locked(
    *, grant: CreditGrant, invoice, amount: Decimal, actor: Actor, now: datetime
) -> CreditHold:
    """Reserve `amount` of a locked grant for a draft invoice (added to its existing hold)."""
    if amount <= 0 or amount > grant.available:
        raise BusinessRuleViolation(
            f"Only {fmt(grant.available, grant.currency)} of {grant.credit_id} is available.",
            code="insufficient_credit",
            available=str(grant.available),
        )
    hold = CreditHold.objects.filter(grant=grant, invoice=invoice, status=HoldStatus.ACTIVE).first()
    if hold is None:
        hold = CreditHold.objects.create(
            grant=grant, invoice=invoice, amount=amount, actor=actor.label, created_at=now
        )
    else:
        hold.amount += amount
        hold.save(update_fields=["amount"])
    grant.reserved += amount
    grant.status = grant.derive_status()
    grant.save(update_fields=["reserved", "status"])
    _event(
        grant,
        GrantEventKind.HOLD_PLACED,
        actor,
        now,
        data={"invoiceId": invoice.invoice_id, "amount": str(amount)},
    )
    return hold


def _release_holds_locked(
    *, holds: Iterable[CreditHold], grants: dict[int, CreditGrant], actor: Actor, now, reason: str
) -> None:
    for hold in holds:
        grant = grants[hold.grant_id]
        grant.reserved -= hold.amount
        grant.status = grant.derive_status()
        grant.save(update_fields=["reserved", "status"])
        hold.status = HoldStatus.RELEASED
        hold.closed_at = now
        hold.closed_by = actor.label
        hold.save(update_fields=["status", "closed_at", "closed_by"])
        _event(
            grant,
            GrantEventKind.HOLD_RELEASED,
            actor,
            now,
            reason,
            data={"invoiceId": hold.invoice.invoice_id, "amount": str(hold.amount)},
        )


def holds_release_locked(
    *, invoice, grants: dict[int, CreditGrant], actor: Actor, now: datetime, reason: str
) -> None:
    holds = CreditHold.objects.filter(invoice=invoice, status=HoldStatus.ACTIVE).select_related(
        "invoice"
    )
    _release_holds_locked(holds=holds, grants=grants, actor=actor, now=now, reason=reason)


# ---------------------------------------------------------------------------------------------
# Deductions and reversals (called by invoice settlement with invoice and grants locked)


def grants_deduct_locked(
    *,
    invoice,
    draws: Sequence[Draw],
    consumed_holds: dict[int, CreditHold],
    actor: Actor,
    now: datetime,
) -> list[LedgerEntry]:
    """Write the deductions of a settlement: one entry per grant, entries in one INSERT.

    `consumed_holds` maps grant pk to this invoice's hold on it: the held amount is released
    from `reserved` (the deduction replaces it). A one_time grant forfeits its remainder with an
    `expiration` entry caused by the deduction.
    """
    entries: list[LedgerEntry] = []
    forfeits: list[tuple[CreditGrant, int]] = []
    touched: list[CreditGrant] = []
    for i, draw in enumerate(draws):
        grant = draw.grant
        hold = consumed_holds.get(grant.pk)
        if hold is not None:
            grant.reserved -= hold.amount
        if draw.amount > grant.remaining - grant.reserved:
            raise BusinessRuleViolation(
                f"{grant.credit_id} has only {fmt(grant.available, grant.currency)} available.",
                code="insufficient_credit",
            )
        grant.remaining -= draw.amount
        grant.used += draw.amount
        grant.last_used_at = now
        entries.append(
            LedgerEntry(
                entry_id=ids.entry_id(),
                account_id=grant.account_id,
                grant=grant,
                kind=EntryKind.DEDUCTION,
                amount=-draw.amount,
                currency=grant.currency,
                balance_after=grant.remaining,
                invoice=invoice,
                invoice_line=draw.invoice_line,
                actor=actor.label,
                actor_user_id=actor.user_id,
                reason=draw.description or f"applied to {invoice.invoice_number}",
                created_at=now,
            )
        )
        if grant.usage_limit == UsageLimit.ONE_TIME and grant.remaining > 0:
            forfeits.append((grant, i))
        touched.append(grant)
    insert_rows(LedgerEntry, entries)
    if forfeits:
        forfeit_entries = []
        for grant, i in forfeits:
            amount = grant.remaining - grant.reserved
            if amount <= 0:
                continue
            grant.remaining -= amount
            forfeit_entries.append(
                LedgerEntry(
                    account_id=grant.account_id,
                    grant=grant,
                    kind=EntryKind.EXPIRATION,
                    amount=-amount,
                    currency=grant.currency,
                    balance_after=grant.remaining,
                    invoice=invoice,
                    related_entry=entries[i],
                    actor=actor.label,
                    actor_user_id=actor.user_id,
                    reason="one-time credit: remainder forfeited after its single use",
                    created_at=now,
                )
            )
        insert_rows(LedgerEntry, forfeit_entries)
    for grant in touched:
        grant.status = grant.derive_status()
    save_fields(CreditGrant, touched, ["remaining", "used", "reserved", "last_used_at", "status"])
    if consumed_holds:
        CreditHold.objects.filter(pk__in=[h.pk for h in consumed_holds.values()]).update(
            status=HoldStatus.CONSUMED, closed_at=now, closed_by=actor.label
        )
    return entries


def live_deductions(invoice) -> list[LedgerEntry]:
    """Deductions on an invoice that no reversal has undone yet."""
    return list(
        LedgerEntry.objects.filter(invoice=invoice, kind=EntryKind.DEDUCTION)
        .exclude(consequences__kind=EntryKind.REVERSAL)
        .order_by("pk")
    )


def grants_reverse_invoice_locked(
    *,
    invoice,
    deductions: Sequence[LedgerEntry],
    grants: dict[int, CreditGrant],
    actor: Actor,
    reason: str,
    now: datetime,
) -> list[LedgerEntry]:
    """An invoice is voided: each deduction comes back by a `reversal`. A grant that is voided,
    expired or already past its expiry gives the returned amount up again at once (an `void` or
    `expiration` entry caused by the reversal), so no credit outlives its grant's end."""
    out: list[LedgerEntry] = []
    for deduction in deductions:
        grant = grants[deduction.grant_id]
        amount = -deduction.amount
        grant.remaining += amount
        grant.used -= amount
        reversal = LedgerEntry.objects.create(
            account_id=grant.account_id,
            grant=grant,
            kind=EntryKind.REVERSAL,
            amount=amount,
            currency=grant.currency,
            balance_after=grant.remaining,
            invoice=invoice,
            invoice_line_id=deduction.invoice_line_id,
            related_entry=deduction,
            actor=actor.label,
            actor_user_id=actor.user_id,
            reason=reason,
            created_at=now,
        )
        out.append(reversal)
        ended_kind = None
        if grant.voided_at is not None:
            ended_kind = EntryKind.VOID
        elif grant.expired_at is not None:
            ended_kind = EntryKind.EXPIRATION
        if ended_kind is not None:
            grant.remaining -= amount
            out.append(
                LedgerEntry.objects.create(
                    account_id=grant.account_id,
                    grant=grant,
                    kind=ended_kind,
                    amount=-amount,
                    currency=grant.currency,
                    balance_after=grant.remaining,
                    invoice=invoice,
                    related_entry=reversal,
                    actor=actor.label,
                    actor_user_id=actor.user_id,
                    reason=(
                        f"returned by the void of {invoice.invoice_number} after the credit ended"
                    ),
                    created_at=now,
                )
            )
    for grant in grants.values():
        if (
            grant.expired_at is None
            and grant.voided_at is None
            and grant.expires_at is not None
            and grant.expires_at <= now
            and grant.remaining > 0
        ):
            # Past its expiry but the job has not run yet: expire it now, as the job would.
            CreditHold.objects.filter(grant=grant, status=HoldStatus.ACTIVE).update(
                status=HoldStatus.RELEASED, closed_at=now, closed_by=actor.label
            )
            out.append(
                LedgerEntry.objects.create(
                    account_id=grant.account_id,
                    grant=grant,
                    kind=EntryKind.EXPIRATION,
                    amount=-grant.remaining,
                    currency=grant.currency,
                    balance_after=Decimal("0"),
                    actor=actor.label,
                    actor_user_id=actor.user_id,
                    reason="expired (credit returned by an invoice void after its expiry)",
                    created_at=now,
                )
            )
            grant.remaining = Decimal("0")
            grant.reserved = Decimal("0")
            grant.expired_at = now
        grant.status = grant.derive_status()
    CreditGrant.objects.bulk_update(
        list(grants.values()), ["remaining", "used", "reserved", "expired_at", "status"]
    )
    return out


def grant_usage_summary(grants: Sequence[CreditGrant]) -> dict[int, list[tuple[str, datetime]]]:
    """Live deductions per grant as (invoiceId, applied_at), for usage limits."""
    limited = [g.pk for g in grants if g.usage_limit != UsageLimit.UNLIMITED]
    usage: dict[int, list[tuple[str, datetime]]] = defaultdict(list)
    if not limited:
        return usage
    rows = (
        LedgerEntry.objects.filter(grant_id__in=limited, kind=EntryKind.DEDUCTION)
        .exclude(consequences__kind=EntryKind.REVERSAL)
        .values_list("grant_id", "invoice__invoice_id", "created_at")
    )
    for grant_id, invoice_key, at in rows:
        usage[grant_id].append((invoice_key, at))
    return usage


def ledger_sum(grant: CreditGrant) -> Decimal:
    return LedgerEntry.objects.filter(grant=grant).aggregate(s=Sum("amount"))["s"] or Decimal("0")
