"""The Celery app (SPEC §9): broker, beat schedule and options come from Django settings
(the CELERY_* names in credits_project/settings.py).

Redis when REDIS_URL is set (production, CI); otherwise kombu's filesystem transport under
var/queue, so the embedded default runs web, worker and beat with no server to install.
Tasks live in each app's tasks.py and are found by autodiscovery.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "credits_project.settings")

app = Celery("credits_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
