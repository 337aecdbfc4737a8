"""Shared fixtures. Tests run on PostgreSQL when DATABASE_URL points at it, else on SQLite;
tests marked `postgres` are skipped on SQLite with the reason shown."""

import pytest
from django.db import connection

from credits.actors import Actor


def pytest_collection_modifyitems(config, items):
    from django.conf import settings

    engine = settings.DATABASES["default"]["ENGINE"]
    if "postgresql" in engine:
        return
    skip = pytest.mark.skip(
        reason="needs PostgreSQL (row locks, triggers): set DATABASE_URL=postgres://..."
    )
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def is_postgres() -> bool:
    return connection.vendor == "postgresql"


@pytest.fixture
def actor() -> Actor:
    return Actor.for_job("tests")


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user(
        username="fiona", password="pw-fiona-123", is_staff=True
    )


@pytest.fixture
def other_staff_user(django_user_model):
    return django_user_model.objects.create_user(
        username="oscar", password="pw-oscar-123", is_staff=True
    )
