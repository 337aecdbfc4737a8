"""Warn customers (email) and partners (signed webhook) 30, 7 and 1 days before their credits
expire, once per credit and threshold, then deliver what is due (the send_expiry_warnings job).
"""

import time

from django.utils import timezone

from credits import jobs
from credits.management.commands._job_command import JobCommand


class Command(JobCommand):
    help = (
        "Claim due expiry warnings and deliver them by email and webhook; deliveries that fail "
        "are retried with backoff by later runs (or, with --wait, by this one)."
    )
    job_name = "send_expiry_warnings"

    def add_arguments(self, parser):
        parser.add_argument(
            "--wait",
            type=float,
            default=0,
            metavar="SECONDS",
            help="Keep retrying failed deliveries as their backoff ends, for up to SECONDS.",
        )

    def run_job(self, **options) -> jobs.JobResult:
        result = jobs.send_expiry_warnings()
        deadline = time.monotonic() + options["wait"]
        while result.next_retry_at is not None:
            delay = (result.next_retry_at - timezone.now()).total_seconds()
            if time.monotonic() + max(delay, 0) > deadline:
                break
            self.stdout.write(result.summary)
            time.sleep(max(delay, 0))
            result = jobs.deliver_notifications()
        return result
