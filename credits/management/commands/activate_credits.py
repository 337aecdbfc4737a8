"""Activate pending credits whose effective date has come and referral credits whose account
reached the qualifying spend (the activate_credits job, for cron and by hand)."""

from credits.management.commands._job_command import JobCommand


class Command(JobCommand):
    help = "Activate due pending credits (future effectiveAt reached; qualified referrals)."
    job_name = "activate_credits"
