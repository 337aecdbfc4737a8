"""Fixtures of the back-office tests: one staff user per finance role (the groups come from the
roles migration), logged-in clients, and a clean cache (the dashboard caches its figures)."""

import pytest
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.test import Client

from backoffice import roles
from tests.factories import AccountFactory


@pytest.fixture(autouse=True)
def _clean_cache():
    cache.clear()
    yield
    cache.clear()


def _member(django_user_model, username: str, *groups: str):
    user = django_user_model.objects.create_user(
        username=username, password=f"pw-{username}-123", is_staff=True
    )
    user.groups.set(Group.objects.filter(name__in=groups))
    return user


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def viewer(django_user_model):
    return _member(django_user_model, "vera", roles.VIEWER)


@pytest.fixture
def issuer(django_user_model):
    return _member(django_user_model, "ivan", roles.ISSUER)


@pytest.fixture
def approver(django_user_model):
    return _member(django_user_model, "anna", roles.APPROVER)


@pytest.fixture
def finance_admin(django_user_model):
    return _member(django_user_model, "adele", roles.ADMIN)


@pytest.fixture
def viewer_client(viewer):
    return _client(viewer)


@pytest.fixture
def issuer_client(issuer):
    return _client(issuer)


@pytest.fixture
def approver_client(approver):
    return _client(approver)


@pytest.fixture
def admin_client_fin(finance_admin):
    return _client(finance_admin)


@pytest.fixture
def account():
    return AccountFactory(account_id="account_123", name="Initech", currency="USD")
