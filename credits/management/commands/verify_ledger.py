"""Check SPEC §5 over the whole database; exit non-zero naming every broken grant."""

from django.core.management.base import BaseCommand, CommandError

from credits.models import CreditGrant, LedgerEntry
from credits.selectors import ledger_problems


class Command(BaseCommand):
    help = "Verify every grant against its ledger (remaining, used, bounds, last balance)."

    def handle(self, *args, **options):
        problems = ledger_problems()
        for p in problems:
            self.stderr.write(f"{p.credit_id}: {p.problem}")
        grants = CreditGrant.objects.count()
        entries = LedgerEntry.objects.count()
        if problems:
            raise CommandError(f"{len(problems)} of {grants} grants break the ledger invariant.")
        self.stdout.write(
            self.style.SUCCESS(f"Ledger OK: {grants} grants, {entries} entries, no problem.")
        )
