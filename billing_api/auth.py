"""Bearer API keys, scopes per endpoint, and the per-key request budget."""

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.cache import caches
from django.utils import timezone
from rest_framework import exceptions, permissions, throttling

from billing_api.keys import hash_key
from credits.exceptions import PermissionDenied
from credits.models import ApiKey, Partner

# last_used_at is written at most this often per key: one UPDATE a minute, not one per request.
LAST_USED_RESOLUTION = timedelta(seconds=60)


@dataclass(frozen=True)
class PartnerPrincipal:
    """request.user of an API request: the partner behind the key (there is no Django user)."""

    partner: Partner
    key: ApiKey
    is_authenticated: bool = True
    is_staff: bool = False

    @property
    def pk(self):
        return None

    def __str__(self) -> str:
        return f"{self.partner.name} ({self.key.prefix})"


class ApiKeyAuthentication:
    """`Authorization: Bearer <key>`; the key's SHA-256 is looked up, revoked keys refused."""

    keyword = "bearer"

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, raw = header.partition(" ")
        raw = raw.strip()
        if scheme.lower() != self.keyword or not raw or " " in raw:
            raise exceptions.AuthenticationFailed(
                "Use the header 'Authorization: Bearer <API key>'.", code="invalid_authorization"
            )
        key = ApiKey.objects.select_related("partner").filter(key_hash=hash_key(raw)).first()
        if key is None:
            raise exceptions.AuthenticationFailed("Unknown API key.", code="invalid_api_key")
        if key.revoked_at is not None:
            raise exceptions.AuthenticationFailed(
                "This API key has been revoked.", code="api_key_revoked"
            )
        now = timezone.now()
        if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
            ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
            key.last_used_at = now
        return PartnerPrincipal(partner=key.partner, key=key), key

    def authenticate_header(self, request) -> str:
        # Makes DRF answer 401 (not 403) to a missing or bad key.
        return 'Bearer realm="billing"'


class HasScope(permissions.BasePermission):
    """The view's `required_scopes[method]` must all be among the key's scopes."""

    def has_permission(self, request, view) -> bool:
        key = request.auth
        if not isinstance(key, ApiKey):
            raise exceptions.NotAuthenticated(
                "Authentication required: send 'Authorization: Bearer <API key>'."
            )
        needed = view.required_scopes.get(request.method, ())
        missing = [s for s in needed if s not in (key.scopes or [])]
        if missing:
            raise PermissionDenied(
                f"This API key lacks the scope {', '.join(missing)} needed here.",
                code="insufficient_scope",
                required=missing,
            )
        return True


class ApiKeyThrottle(throttling.SimpleRateThrottle):
    """A request budget per API key (settings.BILLING_API_THROTTLE_RATE), counted in the
    "billing_api" cache (Redis when configured, so all web processes share one budget)."""

    scope = "api_key"

    def __init__(self):
        self.cache = caches["billing_api"]
        super().__init__()

    def get_rate(self) -> str:
        return settings.BILLING_API_THROTTLE_RATE

    def get_cache_key(self, request, view):
        key = request.auth
        if isinstance(key, ApiKey):
            return f"billing_api:throttle:{key.pk}"
        return None
