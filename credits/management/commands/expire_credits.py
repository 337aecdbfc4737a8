"""Expire the remainder of credits past their expiry (the expire_credits job)."""

from credits import jobs
from credits.management.commands._job_command import JobCommand


class Command(JobCommand):
    help = "Expire the unused remainder of every credit past its expiry, with ledger entries."
    job_name = "expire_credits"

    def add_arguments(self, parser):
        parser.add_argument(
            "--batch-size",
            type=int,
            default=None,
            help="Grants per transaction (default: CREDIT_EXPIRE_BATCH_SIZE).",
        )

    def run_job(self, **options) -> jobs.JobResult:
        return jobs.expire_credits(batch_size=options["batch_size"])
