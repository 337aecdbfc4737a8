"""Who did it: every ledger entry and audit row names its actor."""

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser


@dataclass(frozen=True)
class Actor:
    label: str  # "user:alice", "api_key:ab12cd34 (acme)", "job:expire_credits"
    user: AbstractBaseUser | None = None

    @classmethod
    def for_user(cls, user: AbstractBaseUser) -> "Actor":
        return cls(f"user:{user.get_username()}", user)

    @classmethod
    def for_job(cls, name: str) -> "Actor":
        return cls(f"job:{name}")

    @classmethod
    def for_api_key(cls, key) -> "Actor":
        return cls(f"api_key:{key.prefix} ({key.partner.name})")

    @property
    def user_id(self) -> int | None:
        return self.user.pk if self.user is not None else None

    def __str__(self) -> str:
        return self.label
