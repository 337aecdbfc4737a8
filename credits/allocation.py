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

    The graphs here have a few dozen nodes, so a queue-based Bellman-Ford per augmentation
    is plenty and, unlike Dijkstra with potentials, needs no care about the negative costs
    that encode our preferences. Each augmentation pushes the path's bottleneck, so the
    number of rounds depends on the graph's shape, not on the amounts (up to ~1e12).
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
    total: int
    value: int  # lexicographic preference score; higher is better for the same total
    cells: dict  # (rank, invoice index, line index) -> amount

    @property
    def key(self) -> tuple[int, int]:
        return (self.total, self.value)


class _MaxSavings:
    """Max-flow for the largest total, with costs that make ties lexicographic.

    Network: super-source -[max_total]-> source -[available]-> grant
    -[min(available, maximum_discount - prior)]-> (grant, invoice) -[due]-> line -[due]-> sink.

    Tie-break. Among plans with the maximum total we prefer, lexicographically, the vector
        (G_0, ..., G_n-1,  X_00, X_01, ..., X_n-1,m-1,  x_000, x_001, ...)
    where G_r is what grant of drawdown rank r gives in total, X_rj what it gives to invoice
    j and x_rjl what it gives to line l of invoice j (pairs and cells in (rank, invoice,
    line) order): first more from earlier grants, then, for each grant, more on earlier
    invoices, then on earlier lines. Every component lies in [0, U] with U = sum of all
    dues, so with base B = U + 1 and weights w_k = B ** (K - 1 - k) the score sum(w_k * v_k)
    is the vector read as a K-digit base-B number: comparing scores is exactly comparing
    vectors lexicographically (any tail sum(w_k * v_k, k > i) <= B ** (K - 1 - i) - 1 <
    w_i). Each unit of flow through cell (r, j, l) adds to G_r, X_rj and x_rjl, so the
    edges source->grant, grant->pair and pair->line carry the costs -w(G_r), -w(X_rj) and
    -w(x_rjl). Successive shortest paths ends with a maximum flow of minimum cost, i.e. the
    maximum total with the highest score. Because the score determines the whole vector, two
    solutions with equal (total, score) are the same allocation, which is what lets us
    compare solutions of different sub-networks without any further tie-break. The weights
    are huge integers; Python's unbounded ints keep them exact.
    """

    def __init__(self, ctx: _Context) -> None:
        self.ctx = ctx
        self.pairs = ctx.pairs
        self.cells = [
            (r, j, idx)
            for r, j in self.pairs
            for idx in ctx.elig[r][j].lines
            if ctx.invoices[j].lines[idx].due > 0
        ]
        base = sum(line.due for inv in ctx.invoices for line in inv.lines) + 1
        grant_ranks = sorted({r for r, _j in self.pairs})
        components = (
            [("G", r) for r in grant_ranks]
            + [("X", *pair) for pair in self.pairs]
            + [("x", *cell) for cell in self.cells]
        )
        size = len(components)
        self.weight = {comp: base ** (size - 1 - k) for k, comp in enumerate(components)}
        self.selectors = self._selectors()
        self._cache: dict[frozenset, _Solution] = {}

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

    def solve(self, choice: dict[int, int]) -> _Solution:
        """Optimum when selector s may only use invoice choice[s]; unchosen ones are free."""
        cache_key = frozenset(choice.items())
        cached = self._cache.get(cache_key)
        if cached is not None:
            return cached
        ctx = self.ctx
        banned = {
            (self.selectors[s][0], j)
            for s, chosen in choice.items()
            for j in self.selectors[s][1]
            if j != chosen
        }
        pairs = [pair for pair in self.pairs if pair not in banned]
        super_source, source, sink = 0, 1, 2
        node_of_grant: dict[int, int] = {}
        node_of_pair: dict[tuple[int, int], int] = {}
        node_of_line: dict[tuple[int, int], int] = {}
        next_node = 3
        for r, j in pairs:
            if r not in node_of_grant:
                node_of_grant[r] = next_node
                next_node += 1
            node_of_pair[(r, j)] = next_node
            next_node += 1
        for r, j, idx in self.cells:
            if (r, j) in node_of_pair and (j, idx) not in node_of_line:
                node_of_line[(j, idx)] = next_node
                next_node += 1
        net = _FlowNetwork(next_node)
        uncapped = sum(ctx.grants[r].available for r in node_of_grant)
        net.add_edge(
            super_source,
            source,
            uncapped if ctx.max_total is None else ctx.max_total,
            0,
        )
        for r, node in node_of_grant.items():
            net.add_edge(source, node, ctx.grants[r].available, -self.weight[("G", r)])
        for (r, j), node in node_of_pair.items():
            room = ctx.elig[r][j].room
            cap = ctx.grants[r].available if room is None else min(room, ctx.grants[r].available)
            net.add_edge(node_of_grant[r], node, cap, -self.weight[("X", r, j)])
        cell_edges = {}
        for r, j, idx in self.cells:
            if (r, j) in node_of_pair:
                cell_edges[(r, j, idx)] = net.add_edge(
                    node_of_pair[(r, j)],
                    node_of_line[(j, idx)],
                    ctx.invoices[j].lines[idx].due,
                    -self.weight[("x", r, j, idx)],
                )
        for (j, idx), node in node_of_line.items():
            net.add_edge(node, sink, ctx.invoices[j].lines[idx].due, 0)
        total, cost = net.run(super_source, sink)
        cells = {cell: net.flow_on(edge) for cell, edge in cell_edges.items()}
        solution = _Solution(total, -cost, {c: a for c, a in cells.items() if a > 0})
        self._cache[cache_key] = solution
        return solution

    def _violated(self, solution: _Solution, choice: dict[int, int]) -> int | None:
        drawn = {(r, j) for r, j, _idx in solution.cells}
        for s, (r, js) in enumerate(self.selectors):
            if s not in choice and sum((r, j) in drawn for j in js) > 1:
                return s
        return None

    def combinations(self) -> int:
        count = 1
        for _r, js in self.selectors:
            count *= len(js)
        return count

    def exact(self) -> _Solution:
        """Branch and bound over the selectors' choices; same result as trying them all.

        "No invoice at all" is never a better choice than any one invoice: adding edges to a
        network cannot lower its maximum flow nor, at equal flow, raise its minimum cost. So
        only real invoices are enumerated. A network in which some selectors are still free
        is a relaxation of all its completions, so its (total, score) bounds theirs: we prune
        when that bound does not beat the best plan found, and stop descending as soon as
        the relaxed optimum already respects every usage limit.
        """
        best: _Solution | None = None

        def branch(choice: dict[int, int]) -> None:
            nonlocal best
            solution = self.solve(choice)
            if best is not None and solution.key <= best.key:
                return
            s = self._violated(solution, choice)
            if s is None:
                best = solution
                return
            r, js = self.selectors[s]
            # Try first the invoice the relaxation liked best: finds a good bound early.
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
        """Too many combinations to be exact: fix selectors one at a time, then improve.

        Heuristic, not guaranteed optimal. In drawdown order, each selector takes the
        invoice giving the best (total, score) with the earlier ones fixed and the later
        ones still free. The choices the greedy drawdown made are a second starting point,
        which is what guarantees we never do worse than minimize_expiration. Then we keep
        changing one selector at a time while that strictly improves (total, score); this
        terminates because the set of choices is finite, and at its end no single grant
        could draw more by switching invoice, so every zero decision has a concrete cause.
        """
        choice: dict[int, int] = {}
        for s, (_r, js) in enumerate(self.selectors):
            choice[s] = max(js, key=lambda j, s=s: self.solve({**choice, s: j}).key)
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
            for s, (_r, js) in enumerate(self.selectors):
                for j in js:
                    if j == choice[s]:
                        continue
                    candidate = self.solve({**choice, s: j})
                    if candidate.key > best.key:
                        choice, best, improved = {**choice, s: j}, candidate, True
        return best


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
    grants = sorted(grants, key=drawdown_key)
    invoices = list(invoices)
    _validate(grants, invoices, max_total)
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
