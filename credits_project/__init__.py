"""Project package: settings, URLs, WSGI/ASGI entry points and the Celery app."""

# Loaded with Django so that tasks sent from the web process (admin "run now", on_commit hooks)
# use this app's broker settings rather than Celery's defaults.
from credits_project.celery import app as celery_app

__all__ = ("celery_app",)
