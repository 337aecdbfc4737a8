"""Check SPEC §5 over the whole database; exit non-zero naming every broken grant. On
PostgreSQL it also checks the grant summary rows against the grants (credits.summaries)."""

from django.core.management.base import BaseCommand, CommandError

from credits.models import CreditGrant, LedgerEntry
from credits.selectors import ledger_problems
from credits.summaries import summary_problems


class Command(BaseCommand):
    help = (
        "Verify every grant against its ledger (remaining, used, bounds, last balance) and the "
        "grant summary against the grants."
    )

    def handle(self, *args, **options):
        problems = ledger_problems()
        for p in problems:
            self.stderr.write(f"{p.credit_id}: {p.problem}")
        summary = summary_problems()
        for p in summary:
            self.stderr.write(f"summary of {p.account_id} ({p.key}): {p.problem}")
        grants = CreditGrant.objects.count()
        entries = LedgerEntry.objects.count()
        failures = []
        if problems:
            failures.append(f"{len(problems)} of {grants} grants break the ledger invariant")
        if summary:
            failures.append(f"{len(summary)} grant summary key(s) do not match the grants")
        if failures:
            raise CommandError("; ".join(failures) + ".")
        self.stdout.write(
            self.style.SUCCESS(f"Ledger OK: {grants} grants, {entries} entries, no problem.")
        )
