"""Credit allocation engine: which credit grant pays which invoice line, and why.

This module owns the arithmetic of applying credits and nothing else: the eligibility
rules of a grant for an invoice, the Octane drawdown order, the greedy drawdown used when
an invoice is finalized (``minimize_expiration``), the max-savings optimisation
(``maximize_savings``) and the one-sentence explanation of every grant/invoice decision.

It is deliberately pure Python with no Django import: the services around it lock rows,
build the frozen inputs below, call :func:`plan` and write the ledger from the returned
:class:`Plan`. Keeping persistence out means the money rules can be tested exhaustively
without a database. Money is integer minor units everywhere in here; floats are refused
at the boundary because a single rounding error in a ledger is a reconciliation incident.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

UNLIMITED, ONE_TIME, MONTHLY = "unlimited", "one_time", "monthly"
MINIMIZE_EXPIRATION, MAXIMIZE_SAVINGS = "minimize_expiration", "maximize_savings"
EXPIRING_FIRST = "expiring_first"

STRATEGIES = frozenset({MINIMIZE_EXPIRATION, MAXIMIZE_SAVINGS})
_STRATEGY_ALIASES = {EXPIRING_FIRST: MINIMIZE_EXPIRATION}
USABLE_STATUSES = frozenset({"active", "reserved"})

# Above this many combinations of one-time/monthly choices, maximize_savings stops being
# exact and falls back to a heuristic; the bound keeps the worst case of a request that
# holds row locks predictable.
MAX_ENUMERATED_COMBINATIONS = 4096

# Decision codes. They are persisted and shown in the back office, so they must stay stable.
CURRENCY_MISMATCH = "currency_mismatch"
NOT_USABLE_STATUS = "not_usable_status"
NOT_YET_EFFECTIVE = "not_yet_effective"
EXPIRED = "expired"
NOTHING_AVAILABLE = "nothing_available"
NO_APPLICABLE_LINES = "no_applicable_lines"
MINIMUM_SPEND_NOT_MET = "minimum_spend_not_met"
ONE_TIME_ALREADY_USED = "one_time_already_used"
MONTHLY_ALREADY_USED = "monthly_already_used"
MAXIMUM_DISCOUNT_REACHED = "maximum_discount_reached"
INVOICE_FULLY_COVERED = "invoice_fully_covered"
GRANT_EXHAUSTED = "grant_exhausted"
ONE_TIME_USED_IN_PLAN = "one_time_used_in_plan"
MONTHLY_USED_IN_PLAN = "monthly_used_in_plan"
MAX_TOTAL_REACHED = "max_total_reached"
APPLIED = "applied"
# Only reachable if the optimiser's guarantees were broken; kept so that a finance user
# still gets a sentence instead of a crash while the plan itself stays within every limit.
NOT_SELECTED = "not_selected"

# Stand-in expiry for never-expiring grants; the leading flag of drawdown_key already
# sorts them last, this only keeps the tuple comparable.
_NO_EXPIRY_PLACEHOLDER = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class GrantCandidate:
    key: str
    pk: int
    currency: str
    status: str
    available: int
    effective_at: datetime
    expires_at: datetime | None
    applicable_services: frozenset[str] | None = None
    minimum_spend: int = 0
    maximum_discount: int | None = None
    usage_limit: str = UNLIMITED
    usage: tuple[tuple[str, datetime], ...] = ()
    prior_on_invoice: tuple[tuple[str, int], ...] = ()
    description: str = ""


@dataclass(frozen=True)
class LineDue:
    key: str
    service: str
    gross: int
    due: int


@dataclass(frozen=True)
class InvoiceTarget:
    key: str
    currency: str
    at: datetime
    lines: tuple[LineDue, ...]


@dataclass(frozen=True)
class Allocation:
    grant_key: str
    invoice_key: str
    line_key: str
    amount: int


@dataclass(frozen=True)
class Decision:
    grant_key: str
    invoice_key: str
    amount: int
    code: str
    reason: str


@dataclass
class Plan:
    """The outcome of :func:`plan`.

    ``allocations`` has one entry per (grant, invoice, line) with a positive amount, ordered
    by the grant's drawdown rank, then invoice order, then line order; ``decisions`` has one
    entry per (grant, invoice) pair, grants in drawdown order, invoices in the given order.
    """

    strategy: str
    allocations: list[Allocation]
    decisions: list[Decision]
    total: int
    # False only when maximize_savings had too many one-time/monthly combinations to
    # enumerate and used the heuristic; callers may want to log it.
    exact: bool = True

    def total_for_invoice(self, invoice_key: str) -> int:
        return sum(a.amount for a in self.allocations if a.invoice_key == invoice_key)

    def total_for_grant(self, grant_key: str) -> int:
        return sum(a.amount for a in self.allocations if a.grant_key == grant_key)

    def allocations_for_invoice(self, invoice_key: str) -> list[Allocation]:
        return [a for a in self.allocations if a.invoice_key == invoice_key]

    def decisions_for_invoice(self, invoice_key: str) -> list[Decision]:
        return [d for d in self.decisions if d.invoice_key == invoice_key]

    def decision(self, grant_key: str, invoice_key: str) -> Decision:
        for d in self.decisions:
            if d.grant_key == grant_key and d.invoice_key == invoice_key:
                return d
        raise KeyError((grant_key, invoice_key))


def drawdown_key(g: GrantCandidate) -> tuple:
    """Octane drawdown order: soonest expiry first, no expiry last, then effective_at, pk."""
    never = g.expires_at is None
    return (
        never,
        _NO_EXPIRY_PLACEHOLDER if never else g.expires_at,
        g.effective_at,
        g.pk,
    )


# --------------------------------------------------------------------------- validation


def _require_amount(what: str, value: object, *, minimum: int | None = None) -> None:
    # bool is an int subclass and Decimal/float would silently mix with ints; money here is
    # exact integer minor units only.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int of minor units, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value}")


def _require_aware(what: str, value: datetime) -> None:
    # Month boundaries and expiry instants are only meaningful in UTC; a naive datetime
    # would be read in the server's zone and move money across a month boundary.
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware")


def _validate(grants: list[GrantCandidate], invoices: list[InvoiceTarget], max_total) -> None:
    for g in grants:
        _require_amount(f"grant {g.key} available", g.available)
        _require_amount(f"grant {g.key} minimum_spend", g.minimum_spend, minimum=0)
        if g.maximum_discount is not None:
            _require_amount(f"grant {g.key} maximum_discount", g.maximum_discount, minimum=0)
        for invoice_key, amount in g.prior_on_invoice:
            _require_amount(f"grant {g.key} prior_on_invoice[{invoice_key}]", amount)
        _require_aware(f"grant {g.key} effective_at", g.effective_at)
        if g.expires_at is not None:
            _require_aware(f"grant {g.key} expires_at", g.expires_at)
        for invoice_key, applied_at in g.usage:
            _require_aware(f"grant {g.key} usage[{invoice_key}]", applied_at)
        if g.usage_limit not in (UNLIMITED, ONE_TIME, MONTHLY):
            raise ValueError(f"grant {g.key} has unknown usage_limit {g.usage_limit!r}")
    for inv in invoices:
        _require_aware(f"invoice {inv.key} at", inv.at)
        for line in inv.lines:
            _require_amount(f"line {line.key} gross", line.gross)
            _require_amount(f"line {line.key} due", line.due, minimum=0)
    if max_total is not None:
        _require_amount("max_total", max_total, minimum=0)


# -------------------------------------------------------------------------- eligibility


def _utc_month(at: datetime) -> tuple[int, int]:
    at = at.astimezone(UTC)
    return (at.year, at.month)


def _month_label(month: tuple[int, int]) -> str:
    return f"{month[0]:04d}-{month[1]:02d}"


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


def _prior_on(g: GrantCandidate, invoice_key: str) -> int:
    return sum(amount for key, amount in g.prior_on_invoice if key == invoice_key)


@dataclass(frozen=True)
class _Eligibility:
    eligible: bool
    code: str = ""
    reason: str = ""
    lines: tuple[int, ...] = ()  # indexes into invoice.lines the grant may pay, in line order
    room: int | None = None  # maximum_discount minus prior on this invoice; None = no cap
    prior: int = 0

    @staticmethod
    def refuse(code: str, reason: str) -> _Eligibility:
        return _Eligibility(False, code, reason)


def _check(g: GrantCandidate, inv: InvoiceTarget) -> _Eligibility:
    """Static eligibility of one grant for one invoice; the first failing rule wins."""
    if g.currency != inv.currency:
        return _Eligibility.refuse(
            CURRENCY_MISMATCH,
            f"Grant {g.key} is in {g.currency} but invoice {inv.key} is in {inv.currency}, "
            "so it cannot pay it.",
        )
    if g.status not in USABLE_STATUSES:
        return _Eligibility.refuse(
            NOT_USABLE_STATUS,
            f"Grant {g.key} has status '{g.status}'; only active or reserved grants can be "
            "drawn on.",
        )
    if g.effective_at > inv.at:
        return _Eligibility.refuse(
            NOT_YET_EFFECTIVE,
            f"Grant {g.key} only becomes effective at {_iso(g.effective_at)}, after invoice "
            f"{inv.key} applies its credits at {_iso(inv.at)}.",
        )
    if g.expires_at is not None and g.expires_at <= inv.at:
        return _Eligibility.refuse(
            EXPIRED,
            f"Grant {g.key} expired at {_iso(g.expires_at)}, not after invoice {inv.key} "
            f"applies its credits at {_iso(inv.at)}.",
        )
    if g.available <= 0:
        return _Eligibility.refuse(
            NOTHING_AVAILABLE,
            f"Grant {g.key} has {g.available} available to draw (the rest of its balance "
            "is used or held by other drafts).",
        )
    lines = tuple(
        idx
        for idx, line in enumerate(inv.lines)
        if g.applicable_services is None or line.service in g.applicable_services
    )
    if not lines:
        services = ", ".join(sorted(g.applicable_services or ())) or "none"
        present = ", ".join(sorted({line.service for line in inv.lines})) or "none"
        return _Eligibility.refuse(
            NO_APPLICABLE_LINES,
            f"Grant {g.key} only applies to services ({services}) and invoice {inv.key} "
            f"has no line for them (its services: {present}).",
        )
    subtotal = sum(inv.lines[idx].gross for idx in lines)
    if subtotal < g.minimum_spend:
        return _Eligibility.refuse(
            MINIMUM_SPEND_NOT_MET,
            f"Grant {g.key} needs a minimum spend of {g.minimum_spend} on the services it "
            f"covers, but invoice {inv.key} only has {subtotal}.",
        )
    if g.usage_limit == ONE_TIME:
        for other, applied_at in g.usage:
            if other != inv.key:
                return _Eligibility.refuse(
                    ONE_TIME_ALREADY_USED,
                    f"Grant {g.key} can be used once and was already used on invoice {other} "
                    f"at {_iso(applied_at)}.",
                )
    if g.usage_limit == MONTHLY:
        month = _utc_month(inv.at)
        for other, applied_at in g.usage:
            if other != inv.key and _utc_month(applied_at) == month:
                return _Eligibility.refuse(
                    MONTHLY_ALREADY_USED,
                    f"Grant {g.key} can be used once per month and was already used in "
                    f"{_month_label(month)} on invoice {other} at {_iso(applied_at)}.",
                )
    prior = _prior_on(g, inv.key)
    room = None
    if g.maximum_discount is not None:
        room = g.maximum_discount - prior
        if room <= 0:
            return _Eligibility.refuse(
                MAXIMUM_DISCOUNT_REACHED,
                f"Grant {g.key} may take at most {g.maximum_discount} off one invoice and "
                f"has already taken {prior} off invoice {inv.key}.",
            )
    return _Eligibility(True, lines=lines, room=room, prior=prior)


# ------------------------------------------------------------------------- explanations

_LIMIT_AVAILABLE, _LIMIT_DISCOUNT, _LIMIT_DUE, _LIMIT_MAX_TOTAL = (
    "available",
    "discount",
    "due",
    "max_total",
)


def _applied_reason(
    g: GrantCandidate,
    inv: InvoiceTarget,
    e: _Eligibility,
    amount: int,
    limits: list[str],
    max_total: int | None,
) -> str:
    phrases = []
    for limit in limits:
        if limit == _LIMIT_AVAILABLE:
            phrases.append(f"its available balance of {g.available} is now fully drawn")
        elif limit == _LIMIT_DISCOUNT:
            before = f", {e.prior} of it taken before" if e.prior else ""
            phrases.append(
                f"it is capped by its maximum discount of {g.maximum_discount} per invoice{before}"
            )
        elif limit == _LIMIT_DUE:
            phrases.append("nothing more is due on the invoice lines it may pay")
        elif limit == _LIMIT_MAX_TOTAL:
            phrases.append(f"the plan's limit of {max_total} in total credits is reached")
    sentence = f"Grant {g.key} takes {amount} off invoice {inv.key}"
    if phrases:
        sentence += "; it took no more because " + " and ".join(phrases)
    return sentence + "."


def _zero_decision(
    g: GrantCandidate,
    inv: InvoiceTarget,
    *,
    due_left: int,
    available_left: int,
    used_on: tuple[str, tuple[int, int]] | None,
    total_left: int | None,
    max_total: int | None,
) -> tuple[str, str]:
    """Code and reason for an eligible grant that draws nothing, most basic cause first."""
    if due_left <= 0:
        return INVOICE_FULLY_COVERED, (
            f"Grant {g.key} was not drawn: the invoice {inv.key} lines it may pay have "
            "0 left due after other credits."
        )
    if available_left <= 0:
        return GRANT_EXHAUSTED, (
            f"Grant {g.key} was not drawn on invoice {inv.key}: all {g.available} it had "
            "available went to other invoices in this plan."
        )
    if used_on is not None and g.usage_limit == ONE_TIME:
        return ONE_TIME_USED_IN_PLAN, (
            f"Grant {g.key} can be used once and this plan uses it on invoice {used_on[0]}, "
            f"so it takes 0 off invoice {inv.key}."
        )
    if used_on is not None and g.usage_limit == MONTHLY:
        return MONTHLY_USED_IN_PLAN, (
            f"Grant {g.key} can be used once per month and this plan uses it in "
            f"{_month_label(used_on[1])} on invoice {used_on[0]}, so it takes 0 off "
            f"invoice {inv.key}."
        )
    if total_left is not None and total_left <= 0:
        return MAX_TOTAL_REACHED, (
            f"Grant {g.key} was not drawn on invoice {inv.key}: the plan's limit of "
            f"{max_total} in total credits was already reached."
        )
    return NOT_SELECTED, (
        f"Grant {g.key} was not selected for invoice {inv.key} although {due_left} is due "
        f"on lines it may pay and {available_left} of it is available."
    )


def _usage_scope(g: GrantCandidate, inv: InvoiceTarget) -> tuple[int, int] | None:
    """The bucket in which a usage-limited grant may touch only one invoice of a plan."""
    if g.usage_limit == ONE_TIME:
        return (0, 0)
    if g.usage_limit == MONTHLY:
        return _utc_month(inv.at)
    return None


def _used_elsewhere(
    g: GrantCandidate,
    j: int,
    invoices: list[InvoiceTarget],
    drawn_on: dict[int, int],
) -> tuple[str, tuple[int, int]] | None:
    scope = _usage_scope(g, invoices[j])
    if scope is None:
        return None
    for other, amount in drawn_on.items():
        if other != j and amount > 0 and _usage_scope(g, invoices[other]) == scope:
            return invoices[other].key, _utc_month(invoices[other].at)
    return None


# ----------------------------------------------------------------------- shared context


@dataclass
class _Context:
    grants: list[GrantCandidate]  # in drawdown order; index = rank
    invoices: list[InvoiceTarget]  # in the caller's order
    elig: list[list[_Eligibility]]  # [rank][invoice index]
    max_total: int | None

    @property
    def pairs(self) -> list[tuple[int, int]]:
        return [
            (r, j)
            for r in range(len(self.grants))
            for j in range(len(self.invoices))
            if self.elig[r][j].eligible
        ]


def _build_plan(
    ctx: _Context,
    strategy: str,
    cells: dict[tuple[int, int, int], int],
    explained: dict[tuple[int, int], tuple[str, str]],
    exact: bool,
) -> Plan:
    allocations = [
        Allocation(
            grant_key=ctx.grants[r].key,
            invoice_key=ctx.invoices[j].key,
            line_key=ctx.invoices[j].lines[line].key,
            amount=amount,
        )
        for (r, j, line), amount in sorted(cells.items())
        if amount > 0
    ]
    drawn: dict[tuple[int, int], int] = {}
    for (r, j, _line), amount in cells.items():
        drawn[(r, j)] = drawn.get((r, j), 0) + amount
    decisions = []
    for r, g in enumerate(ctx.grants):
        for j, inv in enumerate(ctx.invoices):
            e = ctx.elig[r][j]
            if e.eligible:
                code, reason = explained[(r, j)]
            else:
                code, reason = e.code, e.reason
            decisions.append(Decision(g.key, inv.key, drawn.get((r, j), 0), code, reason))
    return Plan(
        strategy=strategy,
        allocations=allocations,
        decisions=decisions,
        total=sum(a.amount for a in allocations),
        exact=exact,
    )


# ---------------------------------------------------------------------------- greedy


def _greedy(ctx: _Context) -> tuple[dict, dict]:
    """Invoice by invoice, each grant in drawdown order takes all it may (finalization)."""
    due = [[line.due for line in inv.lines] for inv in ctx.invoices]
    available = [g.available for g in ctx.grants]
    drawn_on: list[dict[int, int]] = [{} for _ in ctx.grants]
    total_left = ctx.max_total
    cells: dict[tuple[int, int, int], int] = {}
    explained: dict[tuple[int, int], tuple[str, str]] = {}
    for j, inv in enumerate(ctx.invoices):
        for r, g in enumerate(ctx.grants):
            e = ctx.elig[r][j]
            if not e.eligible:
                continue
            due_left = sum(due[j][idx] for idx in e.lines)
            used_on = _used_elsewhere(g, j, ctx.invoices, drawn_on[r])
            limits = {_LIMIT_AVAILABLE: available[r], _LIMIT_DUE: due_left}
            if e.room is not None:
                limits[_LIMIT_DISCOUNT] = e.room
            if total_left is not None:
                limits[_LIMIT_MAX_TOTAL] = total_left
            amount = 0 if used_on is not None else min(limits.values())
            if amount <= 0:
                explained[(r, j)] = _zero_decision(
                    g,
                    inv,
                    due_left=due_left,
                    available_left=available[r],
                    used_on=used_on,
                    total_left=total_left,
                    max_total=ctx.max_total,
                )
                continue
            remaining = amount
            for idx in e.lines:
                take = min(due[j][idx], remaining)
                if take > 0:
                    cells[(r, j, idx)] = take
                    due[j][idx] -= take
                    remaining -= take
            available[r] -= amount
            drawn_on[r][j] = amount
            if total_left is not None:
                total_left -= amount
            binding = [name for name, value in limits.items() if value == amount]
            explained[(r, j)] = (
                APPLIED,
                _applied_reason(g, inv, e, amount, _ordered_limits(binding), ctx.max_total),
            )
    return cells, explained


def _ordered_limits(limits: list[str]) -> list[str]:
    order = (_LIMIT_AVAILABLE, _LIMIT_DISCOUNT, _LIMIT_DUE, _LIMIT_MAX_TOTAL)
    return [name for name in order if name in limits]


# ------------------------------------------------------------------ min-cost max-flow


class _FlowNetwork:
    """Successive shortest paths (SPFA) min-cost max-flow with exact integer costs.

    The graphs have one node per grant, (grant, invoice) pair and line, so they stay small;
    a queue-based Bellman-Ford per augmentation is enough and, unlike Dijkstra, needs no
    potentials to cope with the negative costs that encode our preferences. Each
    augmentation pushes the path's bottleneck, so the number of rounds depends on the
    graph's shape, not on the amounts (up to ~1e12 minor units).
    """

    def __init__(self, n_nodes: int) -> None:
        self.adj: list[list[int]] = [[] for _ in range(n_nodes)]
        self.to: list[int] = []
        self.cap: list[int] = []
        self.cost: list[int] = []

    def add_edge(self, u: int, v: int, cap: int, cost: int) -> int:
        edge = len(self.to)
        # Forward edge at an even index, its residual twin at the next odd one: edge ^ 1.
        self.to += [v, u]
        self.cap += [cap, 0]
        self.cost += [cost, -cost]
        self.adj[u].append(edge)
        self.adj[v].append(edge + 1)
        return edge

    def flow_on(self, edge: int) -> int:
        return self.cap[edge + 1]

    def run(self, source: int, sink: int) -> tuple[int, int]:
        total_flow = total_cost = 0
        n = len(self.adj)
        while True:
            dist: list[int | None] = [None] * n
            via = [-1] * n
            queued = [False] * n
            dist[source] = 0
            queue = deque([source])
            while queue:
                u = queue.popleft()
                queued[u] = False
                du = dist[u]
                for edge in self.adj[u]:
                    if self.cap[edge] <= 0:
                        continue
                    v = self.to[edge]
                    candidate = du + self.cost[edge]
                    if dist[v] is None or candidate < dist[v]:
                        dist[v] = candidate
                        via[v] = edge
                        if not queued[v]:
                            queued[v] = True
                            queue.append(v)
            if dist[sink] is None:
                return total_flow, total_cost
            push = None
            node = sink
            while node != source:
                edge = via[node]
                push = self.cap[edge] if push is None else min(push, self.cap[edge])
                node = self.to[edge ^ 1]
            node = sink
            while node != source:
                edge = via[node]
                self.cap[edge] -= push
                self.cap[edge ^ 1] += push
                node = self.to[edge ^ 1]
            total_flow += push
            total_cost += push * dist[sink]


# ---------------------------------------------------------------------- max savings


@dataclass(frozen=True)
class _Solution:
    # (total, G, X, x) as described on _MaxSavings; tuples compare lexicographically, and
    # since x is the whole allocation, equal keys mean the very same plan.
    key: tuple
    cells: dict  # (rank, invoice index, line index) -> amount > 0


def _lexicographic_weights(items: list, bound: int) -> dict:
    """Costs that turn "maximise these amounts lexicographically" into one linear objective.

    Every amount lies in [0, bound]. With base B = bound + 1 and w_k = B ** (K - 1 - k),
    sum(w_k * v_k) is the vector read as a K-digit number in base B, so comparing sums is
    exactly comparing vectors lexicographically: whatever the later amounts, their weighted
    sum is at most sum(bound * B ** i for i < K - 1 - k) = B ** (K - 1 - k) - 1 < w_k.
    Python integers are unbounded, so these (large) weights stay exact.
    """
    base = bound + 1
    return {item: base ** (len(items) - 1 - k) for k, item in enumerate(items)}


@dataclass(frozen=True)
class _Head:
    key: tuple  # (total, G)
    per_grant: dict[int, int]
    per_pair: dict[tuple[int, int], int]


class _MaxSavings:
    """The largest total the restrictions allow, ties broken lexicographically.

    Network (integer capacities): super-source -[max_total]-> source -[available]-> grant
    -[min(available, maximum_discount - prior)]-> (grant, invoice) -[due]-> line -[due]->
    sink, with a (grant, invoice) -> line edge for each line the grant may pay.

    Preference among plans with the largest total: lexicographically more of
        G = (G_0, G_1, ...)      what each grant gives in total, grants in drawdown order,
        X = (X_00, X_01, ...)    what grant r gives invoice j, in (rank, invoice) order,
        x = (x_000, x_001, ...)  what grant r gives line l of invoice j, in that order,
    G first, then X, then x: more from earlier grants, then on earlier invoices, then on
    earlier lines. Successive shortest paths returns a maximum flow of minimum cost, so
    putting lexicographic weights (see _lexicographic_weights) as negative costs on the
    edges that carry a component yields the preferred maximum flow.

    One flow with weights for G, X and x at once would be exact but needs integers of
    (#grants + #pairs + #cells) * 40 bits for amounts near 1e12, which made large plans
    slow. A lexicographic optimum can be taken one block at a time instead, so we solve in
    phases with smaller weights: (1) costs on source->grant give the total and the best G;
    (2) with each source->grant capacity set to its G (the total is unchanged, so every one
    is saturated) costs on grant->pair give the best X for that G; (3) with each X fixed
    the invoices no longer interact, and a small flow per invoice with costs on pair->line
    gives the best x. Every component is at most the sum of what is due, which bounds the
    weights' base.
    """

    def __init__(self, ctx: _Context) -> None:
        self.ctx = ctx
        self.pairs = ctx.pairs
        self.grant_ranks = sorted({r for r, _j in self.pairs})
        self.cells = [
            (r, j, idx)
            for r, j in self.pairs
            for idx in ctx.elig[r][j].lines
            if ctx.invoices[j].lines[idx].due > 0
        ]
        bound = sum(line.due for inv in ctx.invoices for line in inv.lines)
        self.grant_weight = _lexicographic_weights(self.grant_ranks, bound)
        self.pair_weight = _lexicographic_weights(self.pairs, bound)
        self.cell_weight = {}
        for j, inv in enumerate(ctx.invoices):
            cells = [cell for cell in self.cells if cell[1] == j]
            self.cell_weight.update(
                _lexicographic_weights(cells, sum(line.due for line in inv.lines))
            )
        self.selectors = self._selectors()
        self._heads: dict[frozenset, _Head] = {}
        self._solutions: dict[frozenset, _Solution] = {}

    def _selectors(self) -> list[tuple[int, tuple[int, ...]]]:
        """Groups of invoices among which a usage-limited grant may draw on only one.

        A one_time grant has one group (all its eligible invoices), a monthly grant one per
        UTC month. Groups of one invoice cannot be violated and are left out.
        """
        groups: dict[tuple[int, tuple[int, int]], list[int]] = {}
        for r, j in self.pairs:
            scope = _usage_scope(self.ctx.grants[r], self.ctx.invoices[j])
            if scope is not None:
                groups.setdefault((r, scope), []).append(j)
        return [(r, tuple(js)) for (r, _scope), js in sorted(groups.items()) if len(js) > 1]

    def combinations(self) -> int:
        count = 1
        for _r, js in self.selectors:
            count *= len(js)
        return count

    def _allowed(self, choice: dict[int, int]) -> list[tuple[int, int]]:
        """Pairs usable when selector s may only use invoice choice[s] (others are free)."""
        banned = {
            (self.selectors[s][0], j)
            for s, chosen in choice.items()
            for j in self.selectors[s][1]
            if j != chosen
        }
        return [pair for pair in self.pairs if pair not in banned]

    def _grants_to_lines(
        self,
        pairs: list[tuple[int, int]],
        grant_cap: dict[int, int],
        grant_weight: dict[int, int],
        pair_weight: dict[tuple[int, int], int],
    ) -> tuple[int, dict[int, int], dict[tuple[int, int], int]]:
        """Phases 1 and 2: the whole network, weighted on source->grant or grant->pair."""
        ctx = self.ctx
        grants = sorted({r for r, _j in pairs if grant_cap.get(r, 0) > 0})
        pairs = [(r, j) for r, j in pairs if grant_cap.get(r, 0) > 0]
        usable = set(pairs)
        lines = sorted({(j, idx) for r, j, idx in self.cells if (r, j) in usable})
        super_source, source, sink = 0, 1, 2
        node = {("g", r): 3 + k for k, r in enumerate(grants)}
        node.update({("p", *pair): 3 + len(node) + k for k, pair in enumerate(pairs)})
        offset = 3 + len(node)
        node.update({("l", *ln): offset + k for k, ln in enumerate(lines)})
        net = _FlowNetwork(3 + len(node))
        total_cap = sum(grant_cap[r] for r in grants)
        if ctx.max_total is not None:
            total_cap = min(total_cap, ctx.max_total)
        net.add_edge(super_source, source, total_cap, 0)
        grant_edge = {
            r: net.add_edge(source, node[("g", r)], grant_cap[r], -grant_weight.get(r, 0))
            for r in grants
        }
        pair_edge = {}
        for r, j in pairs:
            room = ctx.elig[r][j].room
            cap = ctx.grants[r].available if room is None else min(room, ctx.grants[r].available)
            pair_edge[(r, j)] = net.add_edge(
                node[("g", r)], node[("p", r, j)], cap, -pair_weight.get((r, j), 0)
            )
        for r, j, idx in self.cells:
            if ("p", r, j) in node:
                net.add_edge(
                    node[("p", r, j)], node[("l", j, idx)], ctx.invoices[j].lines[idx].due, 0
                )
        for j, idx in lines:
            net.add_edge(node[("l", j, idx)], sink, ctx.invoices[j].lines[idx].due, 0)
        total, _cost = net.run(super_source, sink)
        return (
            total,
            {r: net.flow_on(edge) for r, edge in grant_edge.items()},
            {pair: net.flow_on(edge) for pair, edge in pair_edge.items()},
        )

    def _pairs_to_lines(self, j: int, supply: dict[tuple[int, int], int]) -> dict:
        """Phase 3 for invoice j: each pair gives exactly its X; prefer earlier cells."""
        lines = self.ctx.invoices[j].lines
        cells = [(r, jj, idx) for r, jj, idx in self.cells if jj == j and supply.get((r, j))]
        used_lines = sorted({idx for _r, _j, idx in cells})
        source, sink = 0, 1
        pair_node = {pair: 2 + k for k, pair in enumerate(supply)}
        line_node = {idx: 2 + len(pair_node) + k for k, idx in enumerate(used_lines)}
        net = _FlowNetwork(2 + len(pair_node) + len(line_node))
        for pair, amount in supply.items():
            net.add_edge(source, pair_node[pair], amount, 0)
        cell_edge = {
            (r, jj, idx): net.add_edge(
                pair_node[(r, jj)], line_node[idx], lines[idx].due, -self.cell_weight[(r, jj, idx)]
            )
            for r, jj, idx in cells
        }
        for idx in used_lines:
            net.add_edge(line_node[idx], sink, lines[idx].due, 0)
        net.run(source, sink)
        return {cell: net.flow_on(edge) for cell, edge in cell_edge.items()}

    def head(self, choice: dict[int, int]) -> _Head:
        """Phase 1 only: (total, G), the cheap prefix of the key, with one flow achieving it."""
        cache_key = frozenset(choice.items())
        if cache_key not in self._heads:
            caps = {r: self.ctx.grants[r].available for r in self.grant_ranks}
            total, per_grant, per_pair = self._grants_to_lines(
                self._allowed(choice), caps, self.grant_weight, {}
            )
            g_vector = tuple(per_grant.get(r, 0) for r in self.grant_ranks)
            self._heads[cache_key] = _Head((total, g_vector), per_grant, per_pair)
        return self._heads[cache_key]

    def solve(self, choice: dict[int, int]) -> _Solution:
        """Preferred plan when selector s may only use invoice choice[s]; others are free."""
        cache_key = frozenset(choice.items())
        cached = self._solutions.get(cache_key)
        if cached is not None:
            return cached
        head = self.head(choice)
        total, g_vector = head.key
        _total, _g, per_pair = self._grants_to_lines(
            self._allowed(choice), head.per_grant, {}, self.pair_weight
        )
        cells = {}
        for j in range(len(self.ctx.invoices)):
            supply = {(r, jj): amount for (r, jj), amount in per_pair.items() if jj == j and amount}
            if supply:
                cells.update(self._pairs_to_lines(j, supply))
        cells = {cell: amount for cell, amount in cells.items() if amount > 0}
        key = (
            total,
            g_vector,
            tuple(per_pair.get(pair, 0) for pair in self.pairs),
            tuple(cells.get(cell, 0) for cell in self.cells),
        )
        solution = _Solution(key, cells)
        self._solutions[cache_key] = solution
        return solution

    def _drawn_on(self, solution: _Solution, r: int, js: tuple[int, ...]) -> list[int]:
        drawn = {j for rr, j, _idx in solution.cells if rr == r}
        return [j for j in js if j in drawn]

    def _violated(self, solution: _Solution, choice: dict[int, int]) -> int | None:
        for s, (r, js) in enumerate(self.selectors):
            if s not in choice and len(self._drawn_on(solution, r, js)) > 1:
                return s
        return None

    def exact(self) -> _Solution:
        """Branch and bound over the selectors' choices; same result as trying them all.

        "No invoice at all" is never a better choice than any one invoice: adding edges to a
        network cannot lower its maximum flow nor, at equal flow, worsen its preferred
        plan. So only real invoices are enumerated. A network in which some selectors are
        still free is a relaxation of all its completions, so its key bounds theirs: we
        prune when that bound (or already its cheap (total, G) prefix) does not beat the
        best plan found, and stop descending once the relaxed optimum respects every limit.
        """
        best: _Solution | None = None

        def branch(choice: dict[int, int]) -> None:
            nonlocal best
            if best is not None and self.head(choice).key < best.key[:2]:
                return
            solution = self.solve(choice)
            if best is not None and solution.key <= best.key:
                return
            s = self._violated(solution, choice)
            if s is None:
                best = solution
                return
            r, js = self.selectors[s]
            # Try first the invoice the relaxation drew most on: finds a good bound early.
            drawn = dict.fromkeys(js, 0)
            for (rr, j, _idx), amount in solution.cells.items():
                if rr == r and j in drawn:
                    drawn[j] += amount
            for j in sorted(js, key=lambda j: -drawn[j]):
                branch({**choice, s: j})

        branch({})
        assert best is not None
        return best

    def heuristic(self, greedy_cells: dict) -> _Solution:
        """Too many combinations to be exact: fix selectors one at a time, then repair.

        Heuristic, not guaranteed optimal. In drawdown order, each selector takes the
        invoice giving the largest total (then the best G, then the earliest invoice) with
        the earlier ones fixed and the later ones still free, without trying the others when
        the relaxed optimum already respects it. The greedy drawdown's own choices are a
        second candidate, which guarantees we never do worse than minimize_expiration.
        Last, a usage-limited grant left idle in a group is moved to another invoice of the
        group while that improves (total, G). This terminates (finitely many choices) and
        leaves no idle grant that could still have saved something by moving, so every zero
        decision has a concrete cause. The chosen combination itself is solved exactly.
        """
        choice: dict[int, int] = {}
        for s, (r, js) in enumerate(self.selectors):
            current = self.head(choice)
            drawn = [j for j in js if current.per_pair.get((r, j), 0) > 0]
            if len(drawn) <= 1:
                # That flow stays feasible with s fixed to the invoice it uses, and fixing
                # only removes options, so (total, G) is unchanged: no need to solve again.
                choice = {**choice, s: drawn[0] if drawn else js[0]}
                self._heads.setdefault(frozenset(choice.items()), current)
            else:
                choice[s] = self._best_option(choice, s, js)
        greedy_choice = {}
        for s, (r, js) in enumerate(self.selectors):
            used = [j for j in js if any(c[0] == r and c[1] == j for c in greedy_cells)]
            greedy_choice[s] = used[0] if used else js[0]
        if self.solve(greedy_choice).key > self.solve(choice).key:
            choice = greedy_choice
        best = self.solve(choice)
        improved = True
        while improved:
            improved = False
            for s, (r, js) in enumerate(self.selectors):
                if self._drawn_on(best, r, js):
                    continue
                for j in js:
                    trial = {**choice, s: j}
                    # An idle grant that could pay somewhere raises the total when moved
                    # there, so phase 1 alone tells; it spares a full solve per try.
                    if self.head(trial).key > best.key[:2]:
                        choice, best, improved = trial, self.solve(trial), True
                        break
        return best

    def _best_option(self, choice: dict[int, int], s: int, js: tuple[int, ...]) -> int:
        # Ranked on (total, G) from phase 1 alone, ties to the earliest invoice: the later
        # phases cost far more and would only reorder plans equal on total and G.
        return max(js, key=lambda j: self.head({**choice, s: j}).key)


def _explain_final(ctx: _Context, cells: dict) -> dict[tuple[int, int], tuple[str, str]]:
    """Explain each eligible pair from the final state of an optimised plan.

    In a maximum flow a grant stops short on an invoice only because a limit is binding
    (its balance, its per-invoice cap, the invoice's due, max_total) or because a usage
    limit sent it elsewhere, so the final state names the cause.
    """
    due = [[line.due for line in inv.lines] for inv in ctx.invoices]
    granted = [0] * len(ctx.grants)
    per_pair: dict[tuple[int, int], int] = {}
    drawn_on: list[dict[int, int]] = [{} for _ in ctx.grants]
    for (r, j, idx), amount in cells.items():
        due[j][idx] -= amount
        granted[r] += amount
        per_pair[(r, j)] = per_pair.get((r, j), 0) + amount
        drawn_on[r][j] = drawn_on[r].get(j, 0) + amount
    total = sum(granted)
    total_left = None if ctx.max_total is None else ctx.max_total - total
    explained = {}
    for r, j in ctx.pairs:
        g, inv, e = ctx.grants[r], ctx.invoices[j], ctx.elig[r][j]
        amount = per_pair.get((r, j), 0)
        due_left = sum(due[j][idx] for idx in e.lines)
        available_left = g.available - granted[r]
        if amount > 0:
            limits = []
            if available_left <= 0:
                limits.append(_LIMIT_AVAILABLE)
            if e.room is not None and amount >= e.room:
                limits.append(_LIMIT_DISCOUNT)
            if due_left <= 0:
                limits.append(_LIMIT_DUE)
            if total_left is not None and total_left <= 0:
                limits.append(_LIMIT_MAX_TOTAL)
            explained[(r, j)] = (
                APPLIED,
                _applied_reason(g, inv, e, amount, limits, ctx.max_total),
            )
        else:
            explained[(r, j)] = _zero_decision(
                g,
                inv,
                due_left=due_left,
                available_left=available_left,
                used_on=_used_elsewhere(g, j, ctx.invoices, drawn_on[r]),
                total_left=total_left,
                max_total=ctx.max_total,
            )
    return explained


# -------------------------------------------------------------------------- entry point


def plan(grants, invoices, *, strategy=MINIMIZE_EXPIRATION, max_total: int | None = None) -> Plan:
    """Decide how much each grant draws on each invoice line, and explain every pair.

    ``grants`` and ``invoices`` are GrantCandidate and InvoiceTarget values as they stand
    (the caller holds the locks); nothing is mutated. ``max_total`` caps the whole plan.
    """
    strategy = _STRATEGY_ALIASES.get(strategy, strategy)
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown allocation strategy {strategy!r}")
    grants, invoices = list(grants), list(invoices)
    # Validate before sorting: sorting would already trip over a naive datetime.
    _validate(grants, invoices, max_total)
    grants.sort(key=drawdown_key)
    ctx = _Context(
        grants=grants,
        invoices=invoices,
        elig=[[_check(g, inv) for inv in invoices] for g in grants],
        max_total=max_total,
    )
    if strategy == MINIMIZE_EXPIRATION:
        cells, explained = _greedy(ctx)
        return _build_plan(ctx, strategy, cells, explained, exact=True)

    engine = _MaxSavings(ctx)
    exact = engine.combinations() <= MAX_ENUMERATED_COMBINATIONS
    if exact:
        solution = engine.exact()
    else:
        greedy_cells, _ = _greedy(ctx)
        solution = engine.heuristic(greedy_cells)
    return _build_plan(ctx, strategy, solution.cells, _explain_final(ctx, solution.cells), exact)


__all__ = [
    "EXPIRING_FIRST",
    "MAXIMIZE_SAVINGS",
    "MINIMIZE_EXPIRATION",
    "MONTHLY",
    "ONE_TIME",
    "UNLIMITED",
    "Allocation",
    "Decision",
    "GrantCandidate",
    "InvoiceTarget",
    "LineDue",
    "Plan",
    "drawdown_key",
    "plan",
]
