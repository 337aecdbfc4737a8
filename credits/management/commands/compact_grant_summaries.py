"""Fold the grant summary's delta rows, one row per account and key (the
compact_grant_summaries job, for cron and by hand)."""

from credits.management.commands._job_command import JobCommand


class Command(JobCommand):
    help = "Fold each account's grant summary deltas into one row per key (PostgreSQL)."
    job_name = "compact_grant_summaries"
