"""`manage.py revoke_api_key PREFIX`: revoke a partner API key at once (it answers 401 after)."""

from django.core.management.base import BaseCommand, CommandError

from billing_api.services import api_key_revoke
from credits.models import ApiKey


class Command(BaseCommand):
    help = "Revoke an API key by its prefix (the 12 characters after 'ck_')."

    def add_arguments(self, parser):
        parser.add_argument("prefix")

    def handle(self, *args, prefix, **options):
        key = ApiKey.objects.select_related("partner").filter(prefix=prefix).first()
        if key is None:
            raise CommandError(f"No API key with prefix {prefix}.")
        api_key_revoke(key=key)
        self.stdout.write(f"Revoked API key {key.prefix} of partner {key.partner.name}.")
