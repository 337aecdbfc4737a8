"""Property tests of the allocation engine: limits always hold, greedy follows Octane order,
and maximize_savings is the exact optimum of an independent brute force on small cases."""

from datetime import UTC, datetime, timedelta
from functools import cache
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from credits import allocation
from credits.allocation import (
    MAXIMIZE_SAVINGS,
    MINIMIZE_EXPIRATION,
    MONTHLY,
    ONE_TIME,
    UNLIMITED,
    GrantCandidate,
    InvoiceTarget,
    LineDue,
    drawdown_key,
    plan,
)

SERVICES = ("clusters", "storage", "network")
# Two instants in January and one in February, so monthly grants meet both cases.
INSTANTS = (
    datetime(2022, 1, 10, tzinfo=UTC),
    datetime(2022, 1, 20, tzinfo=UTC),
    datetime(2022, 2, 5, tzinfo=UTC),
)
SECOND = timedelta(seconds=1)
# Expiry and effective instants exactly at, just before and just after the invoice instants.
AROUND = tuple(sorted({t + d for t in INSTANTS for d in (-SECOND, timedelta(0), SECOND)}))
LONG_AGO = datetime(2021, 1, 1, tzinfo=UTC)
ELIGIBILITY_CODES = {
    "currency_mismatch",
    "not_usable_status",
    "not_yet_effective",
    "expired",
    "nothing_available",
    "no_applicable_lines",
    "minimum_spend_not_met",
    "one_time_already_used",
    "monthly_already_used",
    "maximum_discount_reached",
}
SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def month(instant):
    instant = instant.astimezone(UTC)
    return (instant.year, instant.month)


# Generation modes. WILD draws every field at random, so each eligibility rule fires often.
# CONTENDED keeps grants mostly eligible, in one currency, over two services, so that they
# compete for the same lines: that is where usage limits and the tie-break matter. PLAIN
# grants have no restriction at all. Strategies are built once per shape (cached) because
# building them inside every draw costs more than running the engine.
WILD, CONTENDED, PLAIN = "wild", "contended", "plain"


@cache
def line_fields(mode, amount_max):
    services = SERVICES if mode == WILD else SERVICES[:2]
    return st.tuples(
        st.integers(0, amount_max), st.integers(0, amount_max), st.sampled_from(services)
    )


@cache
def invoice_fields(mode):
    currencies = ("USD", "USD", "USD", "EUR") if mode == WILD else ("USD",)
    return st.tuples(st.sampled_from(currencies), st.sampled_from(INSTANTS))


@st.composite
def invoices_st(draw, *, mode=WILD, max_invoices=3, max_lines=3, amount_max=1000):
    invoices = []
    for n in range(1, draw(st.integers(1, max_invoices)) + 1):
        lines = []
        for m in range(1, draw(st.integers(1, max_lines)) + 1):
            gross, uncovered, service = draw(line_fields(mode, amount_max))
            # Half the time the line is untouched, otherwise partly covered already.
            due = gross if uncovered >= amount_max // 2 else min(uncovered, gross)
            lines.append(LineDue(f"ln_{m}", service, gross, due))
        currency, instant = draw(invoice_fields(mode))
        invoices.append(InvoiceTarget(f"inv_{n}", currency, instant, tuple(lines)))
    return invoices


@cache
def grant_fields(mode, amount_max, invoice_keys):
    amount = st.integers(0, amount_max)
    if mode == WILD:
        base = {
            "currency": st.sampled_from(("USD", "USD", "USD", "EUR")),
            "status": st.sampled_from(("active", "active", "reserved", "expired", "voided")),
            "effective_at": st.sampled_from((LONG_AGO, *AROUND)),
            "expires_at": st.none() | st.sampled_from(AROUND),
            "available": amount,
        }
    else:
        base = {
            "currency": st.just("USD"),
            "status": st.sampled_from(("active", "reserved")),
            "effective_at": st.sampled_from((LONG_AGO, LONG_AGO + SECOND)),
            "expires_at": st.none() | st.sampled_from((INSTANTS[-1] + SECOND, *INSTANTS[1:])),
            # Every grant has something to give, so "prefix of the order" is meaningful.
            "available": st.integers(1, amount_max),
        }
    if mode == PLAIN:
        return st.fixed_dictionaries(base)
    services = SERVICES if mode == WILD else SERVICES[:2]
    usage = st.lists(
        st.tuples(
            st.sampled_from((*invoice_keys, "inv_old")),
            st.sampled_from((LONG_AGO, *INSTANTS)),
        ),
        max_size=2 if mode == WILD else 1,
    )
    prior = st.lists(st.tuples(st.sampled_from(invoice_keys), amount), max_size=2)
    restrictions = {
        "applicable_services": st.none() | st.frozensets(st.sampled_from(services), min_size=1),
        "minimum_spend": st.just(0) | amount,
        "maximum_discount": st.none() | st.integers(1, amount_max),
        "usage_limit": st.sampled_from((UNLIMITED, ONE_TIME, MONTHLY)),
        "usage": usage.map(tuple),
        "prior_on_invoice": prior.map(tuple),
    }
    return st.fixed_dictionaries({**base, **restrictions})


@st.composite
def grants_st(draw, invoice_keys, *, mode=WILD, max_grants=5, amount_max=1000):
    count = draw(st.integers(1, max_grants))
    pks = draw(st.permutations(range(1, count + 1)))
    fields = grant_fields(mode, amount_max, tuple(invoice_keys))
    return [
        GrantCandidate(key=f"cred_{n}", pk=pk, **draw(fields)) for n, pk in enumerate(pks, start=1)
    ]


@st.composite
def scenario(draw, *, modes=(WILD, CONTENDED), max_grants=5, max_invoices=3, **sizes):
    mode = draw(st.sampled_from(modes))
    invoices = draw(invoices_st(mode=mode, max_invoices=max_invoices, **sizes))
    keys = [i.key for i in invoices]
    amount_max = sizes.get("amount_max", 1000)
    grants = draw(grants_st(keys, mode=mode, max_grants=max_grants, amount_max=amount_max))
    max_total = draw(st.none() | st.integers(0, amount_max * 2))
    return grants, invoices, max_total


# ------------------------------------------------------------------------- invariants


def check_plan_invariants(p, grants, invoices, max_total):
    grant_by_key = {g.key: g for g in grants}
    invoice_by_key = {i.key: i for i in invoices}
    assert all(a.amount > 0 for a in p.allocations)
    assert p.total == sum(a.amount for a in p.allocations)
    if max_total is not None:
        assert p.total <= max_total

    per_grant, per_pair, per_line = {}, {}, {}
    for a in p.allocations:
        per_grant[a.grant_key] = per_grant.get(a.grant_key, 0) + a.amount
        pair = (a.grant_key, a.invoice_key)
        per_pair[pair] = per_pair.get(pair, 0) + a.amount
        per_line[(a.invoice_key, a.line_key)] = per_line.get((a.invoice_key, a.line_key), 0)
        per_line[(a.invoice_key, a.line_key)] += a.amount
        g = grant_by_key[a.grant_key]
        [ln] = [x for x in invoice_by_key[a.invoice_key].lines if x.key == a.line_key]
        assert g.applicable_services is None or ln.service in g.applicable_services
    for key, amount in per_grant.items():
        assert amount <= grant_by_key[key].available
    for (invoice_key, line_key), amount in per_line.items():
        [ln] = [x for x in invoice_by_key[invoice_key].lines if x.key == line_key]
        assert amount <= ln.due
    for (grant_key, invoice_key), amount in per_pair.items():
        g = grant_by_key[grant_key]
        if g.maximum_discount is not None:
            prior = sum(v for k, v in g.prior_on_invoice if k == invoice_key)
            assert amount <= g.maximum_discount - prior
    for g in grants:
        used = [i for i in invoices if per_pair.get((g.key, i.key), 0) > 0]
        if g.usage_limit == ONE_TIME:
            assert len(used) <= 1
        if g.usage_limit == MONTHLY:
            assert len({month(i.at) for i in used}) == len(used)

    ranked = sorted(grants, key=drawdown_key)
    rank = {g.key: n for n, g in enumerate(ranked)}
    position = {
        (i.key, ln.key): (j, m) for j, i in enumerate(invoices) for m, ln in enumerate(i.lines)
    }
    order = [(rank[a.grant_key], *position[(a.invoice_key, a.line_key)]) for a in p.allocations]
    assert order == sorted(set(order)), "one allocation per cell, in grant, invoice, line order"
    assert [(d.grant_key, d.invoice_key) for d in p.decisions] == [
        (g.key, i.key) for g in ranked for i in invoices
    ]
    for d in p.decisions:
        assert d.amount == per_pair.get((d.grant_key, d.invoice_key), 0)
        assert (d.code == "applied") == (d.amount > 0)
        assert d.code != "not_selected"
        assert d.reason
        if d.code in ELIGIBILITY_CODES:
            assert d.amount == 0


@SETTINGS
@given(scenario())
def test_both_strategies_respect_every_limit_and_explain_every_pair(case):
    grants, invoices, max_total = case
    greedy = plan(grants, invoices, strategy=MINIMIZE_EXPIRATION, max_total=max_total)
    best = plan(grants, invoices, strategy=MAXIMIZE_SAVINGS, max_total=max_total)
    check_plan_invariants(greedy, grants, invoices, max_total)
    check_plan_invariants(best, grants, invoices, max_total)
    assert best.total >= greedy.total
    # Eligibility does not depend on the strategy, and agrees with an independent reading.
    grant_by_key = {g.key: g for g in grants}
    invoice_by_key = {i.key: i for i in invoices}
    for a, b in zip(greedy.decisions, best.decisions, strict=True):
        if a.code in ELIGIBILITY_CODES or b.code in ELIGIBILITY_CODES:
            assert (a.code, a.reason) == (b.code, b.reason)
        ruled_out = eligible(grant_by_key[a.grant_key], invoice_by_key[a.invoice_key]) is None
        assert ruled_out == (a.code in ELIGIBILITY_CODES)


@st.composite
def unrestricted_single_invoice(draw):
    [inv] = draw(invoices_st(mode=PLAIN, max_invoices=1, amount_max=10**12))
    # Every grant must be eligible: effective before, and expiring after, the invoice.
    inv = InvoiceTarget(inv.key, inv.currency, INSTANTS[0], inv.lines)
    grants = draw(grants_st([inv.key], mode=PLAIN, amount_max=10**12))
    return grants, inv


@SETTINGS
@given(unrestricted_single_invoice())
def test_greedy_draws_a_prefix_of_the_octane_order(case):
    grants, inv = case
    p = plan(grants, [inv])
    ranked = sorted(grants, key=drawdown_key)
    drawn = [p.total_for_grant(g.key) for g in ranked]
    used = [amount > 0 for amount in drawn]
    assert used == sorted(used, reverse=True), "used grants must be a prefix of the order"
    last_used = sum(used) - 1
    for rank in range(last_used):
        assert drawn[rank] == ranked[rank].available
    assert p.total == min(sum(g.available for g in grants), sum(ln.due for ln in inv.lines))
    # With nothing to trade off, the optimiser's tie-break reproduces the Octane drawdown.
    best = plan(grants, [inv], strategy=MAXIMIZE_SAVINGS)
    assert best.allocations == p.allocations


# ------------------------------------------------------------------ brute-force optimum


def eligible(g, inv):
    """Independent reading of the eligibility rules: (line indexes, per-invoice cap) or None."""
    if g.currency != inv.currency or g.status not in ("active", "reserved"):
        return None
    if g.effective_at > inv.at or (g.expires_at is not None and g.expires_at <= inv.at):
        return None
    if g.available <= 0:
        return None
    lines = [
        n
        for n, ln in enumerate(inv.lines)
        if g.applicable_services is None or ln.service in g.applicable_services
    ]
    if not lines or sum(inv.lines[n].gross for n in lines) < g.minimum_spend:
        return None
    others = [(k, t) for k, t in g.usage if k != inv.key]
    if g.usage_limit == ONE_TIME and others:
        return None
    if g.usage_limit == MONTHLY and any(month(t) == month(inv.at) for _k, t in others):
        return None
    cap = g.available
    if g.maximum_discount is not None:
        prior = sum(v for k, v in g.prior_on_invoice if k == inv.key)
        cap = min(cap, g.maximum_discount - prior)
        if cap <= 0:
            return None
    return lines, cap


def brute_force(grants, invoices, max_total):
    """Exhaustive optimum, written from the rules without any of the engine's code.

    Grants are taken in drawdown order; for each, every integer split over the cells it may
    pay is tried (memoised on what is still due), keeping the best
    (total, per-grant totals, per-(grant, invoice) totals, per-cell amounts), all compared
    lexicographically in (grant rank, invoice, line) order.
    """
    ranked = sorted(
        grants,
        key=lambda g: (g.expires_at is None, g.expires_at or LONG_AGO, g.effective_at, g.pk),
    )
    shape = [len(inv.lines) for inv in invoices]

    options = [[eligible(g, inv) for inv in invoices] for g in ranked]

    def splits(r, due):
        """Every allocation of grant r: {(j, n): amount} respecting its own limits."""
        g = ranked[r]
        cells = [
            (j, n)
            for j, opt in enumerate(options[r])
            if opt is not None
            for n in opt[0]
            if due[j][n] > 0
        ]
        out = []

        def rec(k, left, per_invoice, chosen):
            if k == len(cells):
                used = [j for j, amount in per_invoice.items() if amount > 0]
                if g.usage_limit == ONE_TIME and len(used) > 1:
                    return
                if g.usage_limit == MONTHLY:
                    months = [month(invoices[j].at) for j in used]
                    if len(set(months)) != len(months):
                        return
                out.append(dict(chosen))
                return
            j, n = cells[k]
            room = options[r][j][1] - per_invoice.get(j, 0)
            for amount in range(min(left, room, due[j][n]) + 1):
                chosen[(j, n)] = amount
                per_invoice[j] = per_invoice.get(j, 0) + amount
                rec(k + 1, left - amount, per_invoice, chosen)
                per_invoice[j] -= amount
            del chosen[(j, n)]

        rec(0, g.available, {}, {})
        return out

    pair_count = len(invoices)
    cell_order = [(j, n) for j in range(len(invoices)) for n in range(shape[j])]

    @cache
    def best(r, due, total_left):
        """Best (total, G, X, x, cells) for grants r.. given what is still due."""
        if r == len(ranked):
            return (0, (), (), (), ())
        winner = None
        for split in splits(r, due):
            amount = sum(split.values())
            if total_left is not None and amount > total_left:
                continue
            new_due = tuple(
                tuple(due[j][n] - split.get((j, n), 0) for n in range(shape[j]))
                for j in range(len(invoices))
            )
            rest = best(r + 1, new_due, None if total_left is None else total_left - amount)
            per_invoice = tuple(
                sum(v for (j, _n), v in split.items() if j == jj) for jj in range(pair_count)
            )
            per_cell = tuple(split.get(c, 0) for c in cell_order)
            candidate = (
                amount + rest[0],
                (amount, *rest[1]),
                per_invoice + rest[2],
                per_cell + rest[3],
                tuple((r, j, n, v) for (j, n), v in split.items() if v > 0) + rest[4],
            )
            if winner is None or candidate[:4] > winner[:4]:
                winner = candidate
        return winner

    start = tuple(tuple(ln.due for ln in inv.lines) for inv in invoices)
    total, _g, _x, _c, cells = best(0, start, max_total)
    return total, {
        (ranked[r].key, invoices[j].key, invoices[j].lines[n].key): v for r, j, n, v in cells
    }


@SETTINGS
@given(
    scenario(
        modes=(WILD, CONTENDED, CONTENDED), max_grants=3, max_invoices=2, max_lines=2, amount_max=4
    )
)
def test_maximize_savings_is_the_brute_force_optimum_on_small_cases(case):
    grants, invoices, max_total = case
    expected_total, expected_cells = brute_force(grants, invoices, max_total)
    p = plan(grants, invoices, strategy=MAXIMIZE_SAVINGS, max_total=max_total)
    assert p.exact
    assert p.total == expected_total
    # The tie-break is part of the contract, so the very allocation must match.
    assert {(a.grant_key, a.invoice_key, a.line_key): a.amount for a in p.allocations} == (
        expected_cells
    )
    greedy = plan(grants, invoices, max_total=max_total)
    assert greedy.total <= expected_total


@SETTINGS
@given(scenario(modes=(CONTENDED,), max_grants=4, max_invoices=3, max_lines=2, amount_max=4))
def test_heuristic_is_never_worse_than_greedy_nor_better_than_the_optimum(case):
    # Force the above-the-bound path on cases small enough to know the optimum.
    grants, invoices, max_total = case
    with mock.patch.object(allocation, "MAX_ENUMERATED_COMBINATIONS", 1):
        p = plan(grants, invoices, strategy=MAXIMIZE_SAVINGS, max_total=max_total)
    check_plan_invariants(p, grants, invoices, max_total)
    greedy = plan(grants, invoices, max_total=max_total)
    optimum, _cells = brute_force(grants, invoices, max_total)
    assert greedy.total <= p.total <= optimum
