"""Settlement benchmark (issue #2, item 9): invoice finalizations per second, one process, on
PostgreSQL: the service (`invoices.services.invoice_finalize`) next to the very same SQL
statements replayed through raw psycopg, in the same run.

Every iteration is an account with 3 active grants and a draft invoice whose total exceeds what
the grants hold, so finalizing draws on all three. The rows are bulk-created before timing.

The raw side is not hand-written SQL: the statements the service issues for one finalization
are captured (connection.execute_wrapper, with the ids RETURNING gave back), turned into a
program whose parameters name the iteration's own rows (account, invoice, grants, lines, ids
returned by earlier statements, fresh external ids), and replayed per invoice on a plain
psycopg connection with the same cursor kind as Django's (client-side binding), the same
transaction boundaries (BEGIN ... COMMIT, no autocommit) and every result fetched. What the
ratio measures is therefore the Python side of the service: ORM, model instances, the
allocation engine, our own code. Blocks of service and raw iterations alternate so both see
the same noise of a shared machine.

    .venv/bin/python bench/settlement.py                     # 5 runs x 2000 invoices a side
    .venv/bin/python bench/settlement.py --invoices 200 --runs 3   # quick
    .venv/bin/python bench/settlement.py --show-sql --profile      # what runs, where time goes
"""

import argparse
import cProfile
import enum
import io
import pstats
import re
import secrets
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

# Each table's ids start in their own range, so a captured parameter names one row unambiguously.
ID_OFFSETS = {
    "credits_account": 1_000_000,
    "credits_creditgrant": 2_000_000,
    "invoices_invoice": 3_000_000,
    "invoices_invoiceline": 4_000_000,
    "credits_ledgerentry": 5_000_000,
    "invoices_invoiceevent": 6_000_000,
    "credits_credithold": 7_000_000,
    "credits_grantevent": 8_000_000,
}
MIN_ID = min(ID_OFFSETS.values())
EXTERNAL_ID = re.compile(r"^(cred|inv|line|led|hold)_[0-9a-f]{24}$")
GRANT_AMOUNT = Decimal("100.00")
GRANTS_PER_INVOICE = 3


@dataclass
class Iteration:
    account: int
    invoice: int
    grants: list[int]
    lines: list[int]
    tokens: dict[str, str]  # template-specific strings: credit ids, invoice number and id
    now: datetime = field(default_factory=lambda: datetime.now(UTC))


# ---------------------------------------------------------------------------------------------
# Data


def offset_sequences() -> None:
    from django.db import connection

    with connection.cursor() as cur:
        for tbl, start in ID_OFFSETS.items():
            cur.execute("SELECT pg_get_serial_sequence(%s, 'id')", [tbl])
            seq = cur.fetchone()[0]
            cur.execute(f"ALTER SEQUENCE {seq} RESTART WITH {start}")


def make_iterations(n: int, tag: str, lines: int) -> list[Iteration]:
    """n accounts, each with 3 active grants (and their `grant` entries) and a draft invoice
    worth more than the grants hold; bulk-created, returned as plain ids."""
    from credits.models import Account, CreditGrant, EntryKind, GrantStatus, LedgerEntry
    from invoices.models import Invoice, InvoiceLine, InvoiceStatus, LineKind

    now = datetime.now(UTC)
    start = now - timedelta(days=1)
    accounts = Account.objects.bulk_create(
        [Account(account_id=f"bench-{tag}-{i:06d}", name=f"Bench {tag} {i}") for i in range(n)],
        batch_size=2000,
    )
    grants = CreditGrant.objects.bulk_create(
        [
            CreditGrant(
                account=a,
                type="promotional",
                status=GrantStatus.ACTIVE,
                currency="USD",
                original=GRANT_AMOUNT,
                remaining=GRANT_AMOUNT,
                price=GRANT_AMOUNT,
                description=f"bench grant {k}",
                issued_by="job:bench",
                issued_at=start,
                effective_at=start,
                activated_at=start,
                # Distinct expiries: the Octane order (expiring first) is unambiguous.
                expires_at=now + timedelta(days=30 + k),
                issuer_actor="job:bench",
                applicable_services=["all"],
            )
            for a in accounts
            for k in range(GRANTS_PER_INVOICE)
        ],
        batch_size=2000,
    )
    LedgerEntry.objects.bulk_create(
        [
            LedgerEntry(
                account_id=g.account_id,
                grant=g,
                kind=EntryKind.GRANT,
                amount=g.original,
                currency="USD",
                balance_after=g.original,
                actor="job:bench",
                reason="bench",
                created_at=start,
            )
            for g in grants
        ],
        batch_size=2000,
    )
    # More than the grants hold, spread over `lines` charge lines.
    per_line = (GRANT_AMOUNT * GRANTS_PER_INVOICE + Decimal("100.00")) / lines
    per_line = per_line.quantize(Decimal("0.01"))
    subtotal = per_line * lines
    invoices = Invoice.objects.bulk_create(
        [
            Invoice(
                account=a,
                currency="USD",
                status=InvoiceStatus.DRAFT,
                invoice_number=f"B{tag}-{i:07d}",
                subtotal=subtotal,
                total=subtotal,
                created_by="job:bench",
                created_at=start,
            )
            for i, a in enumerate(accounts)
        ],
        batch_size=2000,
    )
    services = ["compute", "storage", "network", "support"]
    charge = InvoiceLine.objects.bulk_create(
        [
            InvoiceLine(
                invoice=inv,
                position=p + 1,
                kind=LineKind.CHARGE,
                service=services[p % len(services)],
                description=f"{services[p % len(services)]} usage",
                quantity=Decimal("1"),
                unit_price=per_line,
                amount=per_line,
            )
            for inv in invoices
            for p in range(lines)
        ],
        batch_size=2000,
    )
    out = []
    for i, (a, inv) in enumerate(zip(accounts, invoices, strict=True)):
        gs = grants[i * GRANTS_PER_INVOICE : (i + 1) * GRANTS_PER_INVOICE]
        tokens = {g.credit_id: g.credit_id for g in gs}
        tokens |= {inv.invoice_number: inv.invoice_number, inv.invoice_id: inv.invoice_id}
        out.append(
            Iteration(
                account=a.pk,
                invoice=inv.pk,
                grants=[g.pk for g in gs],
                lines=[ln.pk for ln in charge[i * lines : (i + 1) * lines]],
                tokens=tokens,
            )
        )
    return out


def vacuum_analyze() -> None:
    from django.db import connection

    with connection.cursor() as cur:
        for tbl in ID_OFFSETS:
            cur.execute(f"VACUUM ANALYZE {tbl}")


# ---------------------------------------------------------------------------------------------
# Capture one finalization and turn it into a replayable program


@dataclass(frozen=True)
class Slot:
    kind: str  # account, invoice, grant, line, ret, fresh, text, now
    a: object = None
    b: object = None
    c: object = None


@dataclass
class Statement:
    sql: str
    many: bool
    params: object  # the template's parameters with Slots where the iteration's values go
    has_ret: bool


def capture(it: Iteration) -> tuple[list[tuple[str, object, bool, list | None]], datetime]:
    """Finalize the template iteration's invoice, recording each statement, its parameters and
    the rows it returned (re-read by scrolling the client-side cursor back, so the ORM still
    gets them)."""
    from django.db import connection

    from credits.actors import Actor
    from invoices.models import Invoice
    from invoices.services import invoice_finalize

    seen = []

    def wrapper(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        rows = None
        cur = context["cursor"].cursor
        if not many and cur.description is not None:
            rows = cur.fetchall()
            if rows:
                cur.scroll(0, mode="absolute")
        seen.append((sql, params, many, rows))
        return result

    now = datetime.now(UTC)
    with connection.execute_wrapper(wrapper):
        invoice_finalize(invoice=Invoice(pk=it.invoice), actor=Actor.for_job("bench"), now=now)
    return seen, now


def compile_program(seen, template: Iteration, now: datetime) -> list[Statement]:
    ints: dict[int, Slot] = {template.account: Slot("account"), template.invoice: Slot("invoice")}
    ints |= {pk: Slot("grant", k) for k, pk in enumerate(template.grants)}
    ints |= {pk: Slot("line", k) for k, pk in enumerate(template.lines)}
    externals = set(template.tokens)
    program = []

    def convert(value):
        from psycopg.types.json import Jsonb

        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, enum.Enum):
            return value.value
        if isinstance(value, int):
            if value in ints:
                return ints[value]
            if value >= MIN_ID:
                raise SystemExit(f"captured id {value} is not one the replay can map")
            return value
        if isinstance(value, str):
            if EXTERNAL_ID.match(value) and value not in externals:
                return Slot("fresh", value.split("_", 1)[0])
            if any(tok in value for tok in externals):
                return Slot("text", value)
            return value
        if isinstance(value, datetime) and value == now:
            return Slot("now")
        if isinstance(value, list | tuple):
            return type(value)(convert(v) for v in value)
        if isinstance(value, Jsonb):
            return Jsonb(convert_json(value.obj))
        return value

    def convert_json(obj):
        if isinstance(obj, dict):
            return {k: convert_json(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [convert_json(v) for v in obj]
        if isinstance(obj, str) and any(tok in obj for tok in externals):
            raise SystemExit(f"JSON parameter {obj!r} names a template row")
        return obj

    for i, (sql, params, many, rows) in enumerate(seen):
        converted = convert(params)
        program.append(
            Statement(sql=sql, many=many, params=converted, has_ret=_has(converted, "ret"))
        )
        for r, row in enumerate(rows or []):
            for c, value in enumerate(row):
                # Ids an INSERT ... RETURNING handed back, used by later statements.
                if isinstance(value, int) and not isinstance(value, bool) and value >= MIN_ID:
                    ints.setdefault(value, Slot("ret", i, r, c))
    return program


def _has(params, kind: str) -> bool:
    if isinstance(params, Slot):
        return params.kind == kind
    if isinstance(params, list | tuple):
        return any(_has(p, kind) for p in params)
    return False


def bind(program: list[Statement], template: Iteration, it: Iteration) -> list[object]:
    """The program's parameters for one iteration, resolved before timing except the ids that
    only the replay's own RETURNING can give."""
    from psycopg.types.json import Jsonb

    swaps = [(tok, it_tok) for tok, it_tok in zip(template.tokens, it.tokens, strict=True)]

    def resolve(p):
        if isinstance(p, Slot):
            if p.kind == "account":
                return it.account
            if p.kind == "invoice":
                return it.invoice
            if p.kind == "grant":
                return it.grants[p.a]
            if p.kind == "line":
                return it.lines[p.a]
            if p.kind == "fresh":
                return f"{p.a}_{secrets.token_hex(12)}"
            if p.kind == "text":
                text = p.a
                for old, new in swaps:
                    text = text.replace(old, new)
                return text
            if p.kind == "now":
                return it.now
            return p  # ret: resolved during the replay
        if isinstance(p, list | tuple):
            return type(p)(resolve(v) for v in p)
        if isinstance(p, Jsonb):
            return p
        return p

    return [resolve(st.params) for st in program]


def _resolve_ret(p, returned):
    if isinstance(p, Slot) and p.kind == "ret":
        return returned[p.a][p.b][p.c]
    if isinstance(p, list | tuple):
        return type(p)(_resolve_ret(v, returned) for v in p)
    return p


# ---------------------------------------------------------------------------------------------
# The two sides


def run_service(block: list[Iteration], actor) -> float:
    from invoices.models import Invoice
    from invoices.services import invoice_finalize

    t0, c0 = time.perf_counter(), time.process_time()
    for it in block:
        invoice_finalize(invoice=Invoice(pk=it.invoice), actor=actor)
    return time.perf_counter() - t0, time.process_time() - c0


def run_raw(conn, program: list[Statement], block: list[tuple[Iteration, list]]) -> float:
    cur = conn.cursor()
    t0, c0 = time.perf_counter(), time.process_time()
    for _, params in block:
        returned = []
        for st, p in zip(program, params, strict=True):
            if st.has_ret:
                p = _resolve_ret(p, returned)
            if st.many:
                cur.executemany(st.sql, p)
                returned.append(None)
            else:
                cur.execute(st.sql, p)
                returned.append(cur.fetchall() if cur.description is not None else None)
        conn.commit()
    return time.perf_counter() - t0, time.process_time() - c0


def raw_statement_times(conn, program, block) -> list[float]:
    """Mean milliseconds of each statement (and the COMMIT) of the replay: where the database
    time of a finalization goes."""
    cur = conn.cursor()
    spent = [0.0] * (len(program) + 1)
    for _, params in block:
        returned = []
        for i, (st, p) in enumerate(zip(program, params, strict=True)):
            if st.has_ret:
                p = _resolve_ret(p, returned)
            t0 = time.perf_counter()
            cur.execute(st.sql, p)
            returned.append(cur.fetchall() if cur.description is not None else None)
            spent[i] += time.perf_counter() - t0
        t0 = time.perf_counter()
        conn.commit()
        spent[-1] += time.perf_counter() - t0
    return [1000 * s / len(block) for s in spent]


def outcome(iterations: list[Iteration]) -> tuple:
    """What finalizing did to these iterations' rows, to check both sides did the same."""
    from django.db.models import Count, Sum

    from credits.models import CreditGrant, LedgerEntry
    from invoices.models import Invoice, InvoiceEvent, InvoiceLine

    inv = [it.invoice for it in iterations]
    return (
        tuple(
            Invoice.objects.filter(pk__in=inv)
            .values_list("status")
            .annotate(n=Count("id"), c=Sum("credits_total"), t=Sum("total"))
            .order_by("status")
        ),
        tuple(
            LedgerEntry.objects.filter(invoice_id__in=inv)
            .values_list("kind")
            .annotate(n=Count("id"), s=Sum("amount"), line=Count("invoice_line"))
            .order_by("kind")
        ),
        tuple(
            InvoiceLine.objects.filter(invoice_id__in=inv)
            .values_list("kind")
            .annotate(n=Count("id"), s=Sum("amount"), cr=Sum("credited"))
            .order_by("kind")
        ),
        tuple(
            CreditGrant.objects.filter(account_id__in=[it.account for it in iterations])
            .values_list("status")
            .annotate(n=Count("id"), r=Sum("remaining"), u=Sum("used"))
            .order_by("status")
        ),
        InvoiceEvent.objects.filter(invoice_id__in=inv).count(),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--invoices", type=int, default=2000, help="timed finalizations per side")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--block", type=int, default=50, help="iterations per alternating block")
    ap.add_argument("--lines", type=int, default=2, help="charge lines per invoice")
    ap.add_argument("--warmup", type=int, default=20, help="untimed iterations per side per run")
    ap.add_argument("--db", default="credits_bench_settlement")
    ap.add_argument("--show-sql", action="store_true", help="print the captured statements")
    ap.add_argument("--profile", action="store_true", help="cProfile the service in one run")
    ap.add_argument(
        "--per-statement", action="store_true", help="time each replayed statement (extra run)"
    )
    args = ap.parse_args()

    url = common.setup_django(args.db)
    offset_sequences()
    import psycopg
    from django.db import connection

    from credits.actors import Actor
    from credits.selectors import ledger_problems

    actor = Actor.for_job("bench")
    raw = psycopg.connect(url, autocommit=False, cursor_factory=psycopg.ClientCursor)

    [template] = make_iterations(1, "tpl", args.lines)
    vacuum_analyze()
    seen, tnow = capture(template)
    template.now = tnow
    program = compile_program(seen, template, tnow)
    print(f"# Settlement: {len(program)} statements per finalization + COMMIT")
    if args.show_sql:
        for st in program:
            print(f"  {st.sql[:160]}{'…' if len(st.sql) > 160 else ''}")

    results = []
    for run in range(args.runs):
        its = make_iterations(2 * (args.invoices + args.warmup), f"r{run}", args.lines)
        vacuum_analyze()
        svc, rw = its[: len(its) // 2], its[len(its) // 2 :]
        rw_bound = [(it, bind(program, template, it)) for it in rw]
        run_service(svc[: args.warmup], actor)
        run_raw(raw, program, rw_bound[: args.warmup])
        svc, rw_bound = svc[args.warmup :], rw_bound[args.warmup :]
        t_svc = t_raw = c_svc = c_raw = 0.0
        prof = cProfile.Profile() if args.profile and run == 0 else None
        for b, i in enumerate(range(0, args.invoices, args.block)):
            # Alternate which side goes first, so neither always follows the other's writes.
            order = ("svc", "raw") if (b + run) % 2 == 0 else ("raw", "svc")
            for side in order:
                if side == "svc":
                    if prof:
                        prof.enable()
                    wall, cpu = run_service(svc[i : i + args.block], actor)
                    t_svc, c_svc = t_svc + wall, c_svc + cpu
                    if prof:
                        prof.disable()
                else:
                    wall, cpu = run_raw(raw, program, rw_bound[i : i + args.block])
                    t_raw, c_raw = t_raw + wall, c_raw + cpu
        a, b_ = outcome(svc), outcome([it for it, _ in rw_bound])
        if a != b_:
            raise SystemExit(f"the replay did not do what the service did:\n{a}\n{b_}")
        n = args.invoices
        results.append((n / t_svc, n / t_raw, 1000 * c_svc / n, 1000 * c_raw / n))
        print(
            f"run {run + 1}: service {n / t_svc:7.1f} tx/s, raw {n / t_raw:7.1f} tx/s, "
            f"ratio {100 * t_raw / t_svc:5.1f}%; client CPU ms/tx: service "
            f"{1000 * c_svc / n:.2f}, raw {1000 * c_raw / n:.2f}",
            flush=True,
        )
        if prof:
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(40)
            print(out.getvalue())
    if args.per_statement:
        its = make_iterations(args.invoices, "ps", args.lines)
        vacuum_analyze()
        times = raw_statement_times(raw, program, [(it, bind(program, template, it)) for it in its])
        print("mean ms per replayed statement:")
        for st, ms in zip([*program, None], times, strict=True):
            print(f"  {ms:6.3f}  {st.sql[:90] if st else 'COMMIT'}")
    problems = ledger_problems()
    if problems:
        raise SystemExit(f"verify_ledger: {len(problems)} broken grants, e.g. {problems[0]}")
    connection.close()
    raw.close()

    rows = [
        [i + 1, f"{s:.1f}", f"{r:.1f}", f"{100 * s / r:.1f}%", f"{cs:.2f}", f"{cr:.2f}"]
        for i, (s, r, cs, cr) in enumerate(results)
    ]
    ratios = [r[0] / r[1] for r in results]
    rows.append(
        [
            "median",
            *(f"{common.median([r[k] for r in results]):.1f}" for k in (0, 1)),
            f"{100 * common.median(ratios):.1f}%",
            *(f"{common.median([r[k] for r in results]):.2f}" for k in (2, 3)),
        ]
    )
    print()
    print(f"Settlement, {args.invoices} finalizations a side per run, 3 grants each, one process")
    print(common.machine())
    headers = ["run", "service tx/s", "raw psycopg tx/s", "service / raw"]
    headers += ["service CPU ms/tx", "raw CPU ms/tx"]
    print(common.table(headers, rows))
    print(f"ratio (median of per-run ratios): {100 * common.median(ratios):.1f}% (target >= 50%)")
    print("ledger verified: no broken grant")


if __name__ == "__main__":
    main()
