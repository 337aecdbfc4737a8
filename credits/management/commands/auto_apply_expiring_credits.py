"""Apply credits expiring within 7 days to the pending and overdue invoices of accounts that
opted in (the auto_apply_expiring_credits job)."""

from credits.management.commands._job_command import JobCommand


class Command(JobCommand):
    help = (
        "For accounts with auto_apply_expiring_credits on, apply credits expiring within "
        "AUTO_APPLY_EXPIRING_WITHIN_DAYS to their open invoices, soonest expiring first."
    )
    job_name = "auto_apply_expiring_credits"
