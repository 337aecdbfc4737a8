"""`manage.py create_api_key PARTNER --scopes credits:read,credits:issue`: a new partner API
key (the partner is created if new). The raw key is printed once, as the last line."""

from django.core.management.base import BaseCommand, CommandError

from billing_api.keys import SCOPES, parse_scopes
from billing_api.services import api_key_create


class Command(BaseCommand):
    help = "Create an API key for a partner; prints the raw key once, as the last line."

    def add_arguments(self, parser):
        parser.add_argument("partner", help="Partner name (slug); created if new.")
        parser.add_argument(
            "--scopes",
            required=True,
            help="Comma-separated scopes, or 'all'. Known: " + ", ".join(sorted(SCOPES)),
        )
        parser.add_argument("--name", default="", help="A label for the key.")

    def handle(self, *args, partner, scopes, name, **options):
        try:
            scope_list = parse_scopes(scopes)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if not partner.replace("-", "").replace("_", "").isalnum():
            raise CommandError("PARTNER must be a slug (letters, digits, - and _).")
        key, raw = api_key_create(partner_name=partner, scopes=scope_list, name=name)
        self.stdout.write(
            f"Created API key {key.prefix} for partner {key.partner.name} "
            f"with scopes: {', '.join(scope_list)}"
        )
        self.stdout.write("Store it now: it is shown only once and cannot be recovered.")
        self.stdout.write(raw)
