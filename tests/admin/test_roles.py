"""The roles migration creates the four finance groups with exactly their permissions."""

import importlib

import pytest
from django.contrib.auth.models import Group

from backoffice import roles

pytestmark = pytest.mark.django_db


def test_each_finance_group_has_exactly_its_permissions():
    for name, perms in roles.ROLES.items():
        group = Group.objects.get(name=name)
        have = set(group.permissions.values_list("content_type__app_label", "codename").order_by())
        assert have == set(perms), name


def test_migration_holds_the_same_roles_as_the_module():
    migration = importlib.import_module("backoffice.migrations.0001_finance_roles")
    assert migration.ROLES == roles.ROLES


def test_custom_permissions_are_given_to_approvers_only_among_non_admins():
    approve = ("credits", "approve_creditgrant")
    void = ("credits", "void_creditgrant")
    transfer = ("credits", "transfer_creditgrant")
    for perm in (approve, void, transfer):
        assert perm in roles.ROLES[roles.APPROVER]
        assert perm in roles.ROLES[roles.ADMIN]
        assert perm not in roles.ROLES[roles.ISSUER]
        assert perm not in roles.ROLES[roles.VIEWER]


def test_nobody_may_delete_financial_records():
    for perms in roles.ROLES.values():
        assert not [codename for _, codename in perms if codename.startswith("delete_")]
