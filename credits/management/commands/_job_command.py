"""Base of the job commands: run one credits.jobs function, print its summary and counts.
The module name starts with an underscore so Django does not list it as a command."""

from django.core.management.base import BaseCommand

from credits import jobs


class JobCommand(BaseCommand):
    job_name = ""

    def handle(self, *args, **options):
        result = self.run_job(**options)
        self.stdout.write(result.summary)
        if options.get("verbosity", 1) >= 2:
            for key, value in {**result.counts, **result.amounts}.items():
                self.stdout.write(f"  {key}: {value}")

    def run_job(self, **options) -> jobs.JobResult:
        return jobs.JOBS[self.job_name]()
