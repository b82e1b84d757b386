"""Field descriptions shared by the case report forms, and the cleaning
helpers that turn submitted values into typed ones.

A form is a tuple of `FieldSpec`. The web form and the API render from it, so
each choice's code, label and points live in one place. Choices that come
from the trial's reference-standard vocabularies (FIGO 2018, AJCC 8th TNM)
are read from trial.models only when asked for, because that module needs
Django's settings; everything else works without them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from readings.scoring.errors import NON_FIELD, ReadValidationError

FieldKind = Literal["choice", "multiple_choice", "boolean", "integer", "number", "text"]

ChoiceValue = str | int


@dataclass(frozen=True)
class Choice:
    value: ChoiceValue
    label: str
    points: int | None = None
    help: str = ""

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"value": self.value, "label": self.label}
        if self.points is not None:
            data["points"] = self.points
        if self.help:
            data["help"] = self.help
        return data


@dataclass(frozen=True)
class FieldSpec:
    """One field of a case report form.

    `required` is unconditional; `required_if` names another field and the
    values of it that make this field required (and, for these forms, the
    only values under which it may be filled in at all)."""

    name: str
    label: str
    kind: FieldKind
    required: bool
    help: str = ""
    static_choices: tuple[Choice, ...] = ()
    choices_from: Callable[[], tuple[Choice, ...]] | None = None
    required_if: tuple[str, tuple[ChoiceValue | bool, ...]] | None = None
    min_value: float | None = None
    max_value: float | None = None
    unit: str = ""
    max_length: int | None = None

    @property
    def choices(self) -> tuple[Choice, ...]:
        if self.choices_from is not None:
            return self.choices_from()
        return self.static_choices

    def choice(self, value: ChoiceValue) -> Choice:
        for choice in self.choices:
            if choice.value == value:
                return choice
        raise KeyError(f"{value!r} is not a choice of {self.name}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description for the API and the web form."""
        data: dict[str, Any] = {
            "name": self.name,
            "label": self.label,
            "kind": self.kind,
            "required": self.required,
            "help": self.help,
        }
        if self.kind in ("choice", "multiple_choice"):
            data["choices"] = [choice.to_dict() for choice in self.choices]
        if self.required_if is not None:
            data["required_if"] = {"field": self.required_if[0], "values": list(self.required_if[1])}
        for key in ("min_value", "max_value", "max_length"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        if self.unit:
            data["unit"] = self.unit
        return data


def field_map(fields: tuple[FieldSpec, ...]) -> dict[str, FieldSpec]:
    return {spec.name: spec for spec in fields}


def points_table(spec: FieldSpec) -> dict[ChoiceValue, int]:
    return {choice.value: choice.points for choice in spec.static_choices if choice.points is not None}


_INTEGER = re.compile(r"[+-]?\d+")
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _is_empty(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list | tuple | set | frozenset):
        return len(value) == 0
    return False


def as_integer(value: object) -> int | None:
    """A whole number from an int, an integral float/Decimal or a string of
    digits; None for anything else (booleans included)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        return int(value)
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value.strip())
    return None


def as_number(value: object) -> float | None:
    """A finite number from an int, float, Decimal or numeric string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, Decimal | str):
        try:
            number = float(Decimal(str(value).strip()))
        except (InvalidOperation, ValueError):
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _match_choice(value: object, choices: tuple[Choice, ...]) -> ChoiceValue | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    for choice in choices:
        if str(choice.value) == text:
            return choice.value
    folded = text.casefold()
    matches = [choice.value for choice in choices if str(choice.value).casefold() == folded]
    return matches[0] if len(matches) == 1 else None


def _options(spec: FieldSpec) -> str:
    """The choices as a reader can type them: the code, and the label where
    it says more than the code."""
    return "; ".join(
        choice.label if choice.label.startswith(str(choice.value)) else f"{choice.value} ({choice.label})"
        for choice in spec.choices
    )


def _show(value: object) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "…"


class FormCleaner:
    """Collects every problem of one submitted read, field by field, and
    raises them together at the end (`finish`)."""

    def __init__(self, data: object, fields: tuple[FieldSpec, ...], *, form_title: str) -> None:
        self.fields = field_map(fields)
        self.errors: dict[str, str] = {}
        if not isinstance(data, Mapping):
            raise ReadValidationError({NON_FIELD: f"The {form_title} must be a set of named fields."})
        self.data: Mapping[Any, object] = data
        for key in data:
            if key not in self.fields:
                self.errors[str(key)] = f"The {form_title} has no field called '{_show(key)}'."

    def error(self, name: str, message: str) -> None:
        # The first problem of a field is the one the reader needs to fix first.
        self.errors.setdefault(name, message)

    def given(self, name: str) -> bool:
        return not _is_empty(self.data.get(name))

    def _missing(self, name: str, required: bool) -> bool:
        if self.given(name):
            return False
        if required:
            self.error(name, f"{self.fields[name].label} is required.")
        return True

    def choice(self, name: str, *, required: bool | None = None) -> ChoiceValue | None:
        spec = self.fields[name]
        if self._missing(name, spec.required if required is None else required):
            return None
        raw = self.data[name]
        value = _match_choice(raw, spec.choices)
        if value is None:
            self.error(name, f"'{_show(raw)}' is not an option for {spec.label}. Choose one of: {_options(spec)}.")
        return value

    def choices(self, name: str) -> tuple[ChoiceValue, ...] | None:
        """A multiple choice: a list of codes (a single code is taken as a
        list of one). Repeats are dropped; the result follows the order of
        the choices."""
        spec = self.fields[name]
        if self._missing(name, spec.required):
            return None
        raw = self.data[name]
        items = [raw] if isinstance(raw, str | int) else raw
        if not isinstance(items, list | tuple | set | frozenset):
            self.error(name, f"{spec.label} must be a list of options.")
            return None
        chosen: set[ChoiceValue] = set()
        unknown: list[str] = []
        for item in items:
            value = _match_choice(item, spec.choices)
            if value is None:
                unknown.append(f"'{_show(item)}'")
            else:
                chosen.add(value)
        if unknown:
            are = "is not an option" if len(unknown) == 1 else "are not options"
            self.error(name, f"{', '.join(unknown)} {are} for {spec.label}. Choose from: {_options(spec)}.")
            return None
        return tuple(choice.value for choice in spec.choices if choice.value in chosen)

    def boolean(self, name: str) -> bool | None:
        spec = self.fields[name]
        if self._missing(name, spec.required):
            return None
        raw = self.data[name]
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().casefold() if isinstance(raw, str | int) else ""
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        self.error(name, f"{spec.label}: answer yes or no.")
        return None

    def integer(self, name: str, *, message: str, required: bool | None = None) -> int | None:
        """A whole number within the field's min_value..max_value, else `message`."""
        spec = self.fields[name]
        if self._missing(name, spec.required if required is None else required):
            return None
        value = as_integer(self.data[name])
        if value is None or not _within(value, spec):
            self.error(name, message)
            return None
        return value

    def number(self, name: str, *, message: str, exclusive_minimum: bool = False) -> float | None:
        spec = self.fields[name]
        if self._missing(name, spec.required):
            return None
        value = as_number(self.data[name])
        too_small = value is not None and exclusive_minimum and spec.min_value is not None and value <= spec.min_value
        if value is None or too_small or not _within(value, spec):
            self.error(name, message)
            return None
        return value

    def text(self, name: str) -> str:
        spec = self.fields[name]
        raw = self.data.get(name)
        if raw is None:
            return ""
        if not isinstance(raw, str):
            self.error(name, f"{spec.label} must be text.")
            return ""
        text = raw.strip()
        if spec.max_length is not None and len(text) > spec.max_length:
            self.error(name, f"{spec.label} is {len(text)} characters long; the limit is {spec.max_length} characters.")
        return text

    def refuse(self, name: str, message: str) -> None:
        """The field must be left empty under the read's other answers."""
        if self.given(name):
            self.error(name, message)

    def finish(self) -> None:
        if self.errors:
            raise ReadValidationError(self.errors)


def _within(value: float, spec: FieldSpec) -> bool:
    if spec.min_value is not None and value < spec.min_value:
        return False
    return spec.max_value is None or value <= spec.max_value


# --- Fields both forms share -------------------------------------------------

MAX_TIME_SPENT_S = 4 * 60 * 60
MAX_NOTE_LENGTH = 4000

CONFIDENCE = FieldSpec(
    name="confidence",
    label="Confidence",
    kind="integer",
    required=True,
    help="How sure you are of this read: 1 = not at all sure, 5 = certain.",
    min_value=1,
    max_value=5,
)
TIME_SPENT = FieldSpec(
    name="time_spent_s",
    label="Time spent",
    kind="integer",
    required=True,
    help="Time spent on this read, in seconds (at most 4 hours).",
    min_value=1,
    max_value=MAX_TIME_SPENT_S,
    unit="s",
)
NOTE = FieldSpec(
    name="note",
    label="Note",
    kind="text",
    required=False,
    help="Free text for anything the structured fields do not capture.",
    max_length=MAX_NOTE_LENGTH,
)


def clean_common(cleaner: FormCleaner) -> tuple[int | None, int | None, str]:
    """Confidence, time spent and note, as every read has them."""
    confidence = cleaner.integer(
        CONFIDENCE.name, message="Confidence must be a whole number from 1 (not at all sure) to 5 (certain)."
    )
    time_spent_s = cleaner.integer(
        TIME_SPENT.name,
        message=f"Time spent must be a whole number of seconds, at least 1 and at most {MAX_TIME_SPENT_S} (4 hours).",
    )
    note = cleaner.text(NOTE.name)
    return confidence, time_spent_s, note


def reference_choices(vocabulary: str) -> tuple[Choice, ...]:
    """The codes of one of the trial's reference-standard vocabularies
    (trial.models: FigoStage, ThyroidT, ThyroidN, ThyroidM), so that a read
    and the reference standard it is compared with use the same codes.
    Imported here, not at module level, because trial.models needs Django's
    settings and the scoring itself does not."""
    from trial import models as trial_models

    choices = getattr(trial_models, vocabulary).choices
    return tuple(Choice(value, str(label)) for value, label in choices)
