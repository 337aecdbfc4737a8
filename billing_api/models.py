"""Idempotency records of the partner API: one row per (partner, Idempotency-Key).

The row is inserted in the same transaction as the request's effect and completed with the
response before commit, so it exists iff the effect happened: a replay returns what the first
request answered, and a concurrent duplicate waits on the unique index until the first commits.
"""

from django.db import models
from django.utils import timezone

from credits.models import ApiKey, Partner


class IdempotencyRecord(models.Model):
    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="+")
    api_key = models.ForeignKey(ApiKey, on_delete=models.SET_NULL, null=True, related_name="+")
    key = models.CharField("Idempotency-Key", max_length=255)
    method = models.CharField(max_length=8)
    path = models.CharField(max_length=500)
    fingerprint = models.CharField(
        max_length=64, help_text="SHA-256 of method, path and the request body."
    )
    response_status = models.PositiveSmallIntegerField(default=0)
    response_body = models.TextField(blank=True, help_text="The JSON the first request answered.")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        verbose_name = "idempotency record"
        constraints = [
            models.UniqueConstraint(fields=["partner", "key"], name="idempotency_partner_key"),
        ]

    def __str__(self) -> str:
        return f"{self.key} ({self.method} {self.path})"
