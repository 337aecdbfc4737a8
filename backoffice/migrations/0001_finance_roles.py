"""Creates the four finance groups with exactly the permissions of backoffice.roles."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

# Frozen copy of backoffice.roles at the time of this migration (a test checks they agree; a
# change of roles is a new migration).
VIEWER = "Finance viewer"
ISSUER = "Finance issuer"
APPROVER = "Finance approver"
ADMIN = "Finance admin"

_READ = [
    ("credits", "view_account"),
    ("credits", "view_partner"),
    ("credits", "view_creditgrant"),
    ("credits", "view_credithold"),
    ("credits", "view_ledgerentry"),
    ("credits", "view_grantevent"),
    ("invoices", "view_invoice"),
    ("invoices", "view_invoiceline"),
    ("invoices", "view_invoiceevent"),
]

# The maker: issues credits (one by one or a campaign from CSV), opens accounts and drafts
# invoices and finalizes them.
_ISSUE = [
    ("credits", "add_creditgrant"),
    ("credits", "add_account"),
    ("credits", "change_account"),
    ("invoices", "add_invoice"),
    ("invoices", "change_invoice"),
    ("invoices", "finalize_invoice"),
]

# The checker: approves what others issued above the threshold, and does what takes money back
# or moves it (void, transfer) or closes an invoice (void, paid).
_APPROVE = [
    ("credits", "approve_creditgrant"),
    ("credits", "void_creditgrant"),
    ("credits", "transfer_creditgrant"),
    ("invoices", "void_invoice"),
    ("invoices", "pay_invoice"),
]

_ADMINISTER = [
    ("credits", "add_partner"),
    ("credits", "change_partner"),
    ("credits", "view_apikey"),
    ("admin", "view_logentry"),
]

ROLES: dict[str, list[tuple[str, str]]] = {
    VIEWER: _READ,
    ISSUER: _READ + _ISSUE,
    APPROVER: _READ + _APPROVE,
    ADMIN: _READ + _ISSUE + _APPROVE + _ADMINISTER,
}



def _ensure_permissions(apps):
    # Permissions are normally created after all migrations (post_migrate); on a fresh database
    # they do not exist yet when this runs, so create them now from the migration state.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None


def create_roles(apps, schema_editor):
    _ensure_permissions(apps)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, perms in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        wanted = []
        for app_label, codename in perms:
            wanted.append(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )
        group.permissions.set(wanted)


def drop_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=list(ROLES)).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("admin", "0003_logentry_add_action_flag_choices"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("credits", "0002_initial"),
        ("invoices", "0001_initial"),
    ]

    operations = [migrations.RunPython(create_roles, drop_roles)]
