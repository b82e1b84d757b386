"""The one error a case report form raises: every field's problem at once."""

from __future__ import annotations

from collections.abc import Mapping

from trial.errors import RuleViolation

# Key for a problem that belongs to the whole read rather than one field
# (Django's convention, so a web form can show it above the fields).
NON_FIELD = "__all__"


class ReadValidationError(RuleViolation):
    """A read was refused. `errors` maps each field name to one message
    written for the clinician; all problems are reported together so that
    the reader can correct the form in one pass.

    It is a `RuleViolation`, so the API's error handler already answers 400
    with the messages."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        if not errors:
            raise ValueError("ReadValidationError needs at least one field error")
        self.errors: dict[str, str] = dict(errors)
        summary = " ".join(
            message if name == NON_FIELD else f"{name}: {message}" for name, message in self.errors.items()
        )
        only_field = next(iter(self.errors)) if len(self.errors) == 1 else None
        super().__init__(summary, field=None if only_field == NON_FIELD else only_field)
