"""Who performs a write, and from where: passed to every service."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
    from django.http import HttpRequest


@dataclass(frozen=True)
class Actor:
    """The user behind a write (None for the system itself, e.g. a migration or
    a scheduled job), the client address and the request id."""

    user: Any
    client_ip: str | None = None
    request_id: str = ""
    system_label: str = ""

    @classmethod
    def from_request(cls, request: HttpRequest) -> Actor:
        return cls(
            user=request.user,
            client_ip=getattr(request, "client_ip", None),
            request_id=getattr(request, "request_id", ""),
        )

    @classmethod
    def for_user(cls, user: AbstractBaseUser | AnonymousUser, *, label: str = "") -> Actor:
        """A user acting outside a web request (a management command)."""
        return cls(user=user, request_id=label)

    @classmethod
    def system(cls, label: str) -> Actor:
        return cls(user=None, system_label=label, request_id=label)

    @property
    def is_system(self) -> bool:
        return self.user is None

    @property
    def username(self) -> str:
        return f"system:{self.system_label}" if self.user is None else self.user.get_username()
