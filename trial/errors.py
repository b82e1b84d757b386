"""Domain errors raised by services. Views and the API turn them into clear
4xx answers; a service never returns an error code."""

from __future__ import annotations


class DomainError(Exception):
    """Base class: `message` is shown to the user as it is."""

    status_code = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class RuleViolation(DomainError):
    """The request breaks a protocol or data rule (400)."""


class Conflict(DomainError):
    """The request clashes with the current state, e.g. a second consent (409)."""

    status_code = 409


class NotAllowed(DomainError):
    """The actor's role does not permit this action (403)."""

    status_code = 403
