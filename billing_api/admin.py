"""Admin of the partner API: API keys (revocable, never showing a hash's key) and idempotency
records (read-only)."""

from django.contrib import admin, messages

from billing_api.models import IdempotencyRecord
from billing_api.services import api_key_revoke
from credits.models import ApiKey


class ApiKeyAdmin(admin.ModelAdmin):
    list_display = (
        "prefix",
        "partner",
        "name",
        "scope_list",
        "created_at",
        "last_used_at",
        "revoked_at",
    )
    list_filter = ("partner", ("revoked_at", admin.EmptyFieldListFilter))
    search_fields = ("prefix", "name", "partner__name")
    list_select_related = ("partner",)
    readonly_fields = ("partner", "prefix", "key_hash", "created_at", "last_used_at", "revoked_at")
    fields = ("partner", "name", "prefix", "scopes", "created_at", "last_used_at", "revoked_at")
    actions = ["revoke_keys"]

    @admin.display(description="scopes")
    def scope_list(self, obj) -> str:
        return ", ".join(obj.scopes or [])

    def has_add_permission(self, request) -> bool:
        # A key's raw value must be shown once to whoever made it: use create_api_key.
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        # Revoked, not deleted: ledger actors name keys by prefix forever.
        return False

    @admin.action(description="Revoke the selected API keys", permissions=["change"])
    def revoke_keys(self, request, queryset):
        count = 0
        for key in queryset.filter(revoked_at__isnull=True):
            api_key_revoke(key=key)
            count += 1
        self.message_user(request, f"Revoked {count} API key(s).", messages.SUCCESS)


class IdempotencyRecordAdmin(admin.ModelAdmin):
    list_display = ("key", "partner", "method", "path", "response_status", "created_at")
    list_filter = ("partner", "method", "response_status")
    search_fields = ("key", "path")
    list_select_related = ("partner",)
    date_hierarchy = "created_at"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


# Another app may already own ApiKey's admin; ours is registered only if it does not.
if not admin.site.is_registered(ApiKey):
    admin.site.register(ApiKey, ApiKeyAdmin)
admin.site.register(IdempotencyRecord, IdempotencyRecordAdmin)
