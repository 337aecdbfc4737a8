"""Mark pending invoices past their due date overdue (the mark_overdue_invoices job)."""

from credits.management.commands._job_command import JobCommand


class Command(JobCommand):
    help = "Mark pending invoices whose due date has passed as overdue."
    job_name = "mark_overdue_invoices"
