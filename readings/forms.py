"""The case report form as the web pages show it, built from the scoring
`FieldSpec`s: one control per field, filled with a read's data; the posted
form turned back into the data a read stores; the computed scores; a signed
read's values as rows. Nothing here judges a value: readings.services
validates (readings.scoring) and answers with each field's message, which
the pages show next to the field.

Also the reading policy form of the trial admin (the service checks every
range)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django import forms
from django.http import QueryDict

from readings.models import AdjudicationRule, FormKind, ReadingPolicy, TaskKind, TaskStatus
from readings.scoring import (
    COLPOSCOPY_FIELDS,
    FNA_LABELS,
    NON_FIELD,
    THYROID_FIELDS,
    TIRADS_LEVELS,
    FieldSpec,
    ReadValidationError,
    fna_recommendation,
    swede_total,
    tirads_category,
    tirads_points,
)
from readings.scoring.fields import as_integer, as_number

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
BOOLEAN_CHOICES = (("true", "Yes"), ("false", "No"))
LEVEL_LABELS = {str(level.value): level.label for level in TIRADS_LEVELS}


def fields_for(form: str) -> tuple[FieldSpec, ...]:
    return COLPOSCOPY_FIELDS if form == FormKind.COLPOSCOPY else THYROID_FIELDS


# --- Controls ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    value: str
    label: str
    selected: bool
    help: str = ""
    points: int | None = None


@dataclass(frozen=True)
class FieldView:
    """One field as the template draws it: `control` is select, checkboxes,
    number or textarea."""

    spec: FieldSpec
    control: str
    value: str = ""
    options: list[Option] = field(default_factory=list)
    error: str = ""

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def help(self) -> str:
        return self.spec.help

    @property
    def required(self) -> bool:
        return self.spec.required

    @property
    def unit(self) -> str:
        return self.spec.unit

    @property
    def step(self) -> str:
        return "1" if self.spec.kind == "integer" else "any"

    @property
    def min_value(self) -> str:
        return "" if self.spec.min_value is None else f"{self.spec.min_value:g}"

    @property
    def max_value(self) -> str:
        return "" if self.spec.max_value is None else f"{self.spec.max_value:g}"

    @property
    def max_length(self) -> int | None:
        return self.spec.max_length

    @property
    def required_if_field(self) -> str:
        return self.spec.required_if[0] if self.spec.required_if else ""

    @property
    def required_if_values(self) -> str:
        if not self.spec.required_if:
            return ""
        return " ".join(as_text(value) for value in self.spec.required_if[1])


def as_text(value: object) -> str:
    """A stored value as a form control holds it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _boolean_text(value: object) -> str:
    text = as_text(value).strip().casefold()
    if text in _TRUE:
        return "true"
    if text in _FALSE:
        return "false"
    return as_text(value)


def _points(points: int | None) -> str:
    return "" if points is None else f" ({points} point{'' if points == 1 else 's'})"


def field_views(form: str, data: Mapping[str, Any], errors: Mapping[str, str] | None = None) -> list[FieldView]:
    errors = errors or {}
    views: list[FieldView] = []
    for spec in fields_for(form):
        value = data.get(spec.name)
        error = errors.get(spec.name, "")
        if spec.kind == "choice":
            text = as_text(value)
            options = [
                Option(str(c.value), f"{c.label}{_points(c.points)}", str(c.value) == text, c.help, c.points)
                for c in spec.choices
            ]
            views.append(FieldView(spec, "select", text, options, error))
        elif spec.kind == "multiple_choice":
            items = value if isinstance(value, list | tuple) else ([] if value in (None, "") else [value])
            chosen = {as_text(item) for item in items}
            options = [
                Option(str(c.value), f"{c.label}{_points(c.points)}", str(c.value) in chosen, c.help, c.points)
                for c in spec.choices
            ]
            views.append(FieldView(spec, "checkboxes", "", options, error))
        elif spec.kind == "boolean":
            text = _boolean_text(value)
            options = [Option(code, label, code == text) for code, label in BOOLEAN_CHOICES]
            views.append(FieldView(spec, "select", text, options, error))
        elif spec.kind in ("integer", "number"):
            views.append(FieldView(spec, "number", as_text(value), [], error))
        else:
            views.append(FieldView(spec, "textarea", as_text(value), [], error))
    return views


# --- The posted form -----------------------------------------------------------------------


def _typed(spec: FieldSpec, text: str) -> object:
    """The value in the type the API would send, where the text says it
    unambiguously; anything else as typed, for the service to judge."""
    if spec.kind == "boolean":
        folded = text.casefold()
        return True if folded in _TRUE else False if folded in _FALSE else text
    if spec.kind == "integer":
        number = as_integer(text)
        return text if number is None else number
    if spec.kind == "number":
        whole = as_integer(text)
        if whole is not None:
            return whole
        real = as_number(text)
        return text if real is None else real
    if spec.kind in ("choice", "multiple_choice"):
        for choice in spec.choices:
            if str(choice.value) == text:
                return choice.value
    return text


def posted_data(form: str, post: QueryDict) -> dict[str, Any]:
    """The read's data from a posted form: the fields of this form that
    were filled in (an empty control means the field is empty)."""
    data: dict[str, Any] = {}
    for spec in fields_for(form):
        if spec.kind == "multiple_choice":
            items = [item.strip() for item in post.getlist(spec.name) if item.strip()]
            if items:
                data[spec.name] = [_typed(spec, item) for item in items]
            continue
        raw = post.get(spec.name, "")
        if not raw.strip():
            continue
        data[spec.name] = raw if spec.kind == "text" else _typed(spec, raw.strip())
    return data


def form_field_errors(errors: Mapping[str, str], form: str) -> dict[str, str]:
    """The messages that belong next to a field of the form."""
    names = {spec.name for spec in fields_for(form)}
    return {name: message for name, message in errors.items() if name in names}


def other_errors(errors: Mapping[str, str], form: str) -> list[str]:
    """The messages of a refused read that no field of the form shows: a
    problem of the whole read first, then any field the form does not have."""
    names = {spec.name for spec in fields_for(form)}
    others = [message for name, message in errors.items() if name not in names and name != NON_FIELD]
    return [errors[NON_FIELD], *others] if NON_FIELD in errors else others


# --- Computed scores -----------------------------------------------------------------------


@dataclass(frozen=True)
class Score:
    """One computed score; `labels` are the words of each code, for the
    page's script that previews the scores as the reader fills the form."""

    key: str
    label: str
    value: str
    labels: dict[str, str] = field(default_factory=dict)


def computed(form: str, data: Mapping[str, Any]) -> list[Score]:
    """What the scoring computes from the fields entered so far ("—" until
    the fields it needs are filled in and valid)."""
    if form == FormKind.COLPOSCOPY:
        try:
            total = str(swede_total(data))
        except ReadValidationError:
            total = "—"
        return [Score("swede_total", "Swede score (0–10)", total)]
    try:
        points: int | None = tirads_points(data)
    except ReadValidationError:
        points = None
    category = tirads_category(points) if points is not None else None
    fna = "—"
    # Any text or number as entered: fna_recommendation refuses what is not a diameter.
    diameter: Any = data.get("largest_diameter_mm")
    if category is not None and diameter is not None:
        try:
            fna = FNA_LABELS[fna_recommendation(category, diameter)]
        except ValueError:
            fna = "—"
    return [
        Score("points", "TI-RADS points", "—" if points is None else str(points)),
        Score("category", "TI-RADS level", LEVEL_LABELS[category] if category else "—", dict(LEVEL_LABELS)),
        Score("fna", "Recommendation", fna, {str(code): words for code, words in FNA_LABELS.items()}),
    ]


# --- A signed read's values ----------------------------------------------------------------


def _display(spec: FieldSpec | None, value: Any) -> str:
    if value is None or value == "" or value == []:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if spec is not None and spec.kind in ("choice", "multiple_choice"):
        items = value if isinstance(value, list) else [value]
        labels = []
        for item in items:
            try:
                labels.append(spec.choice(item).label)
            except KeyError:
                labels.append(str(item))
        return ", ".join(labels)
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{text} {spec.unit}" if spec is not None and spec.unit else text


def value_rows(form: str, values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A signed read's values as (label, text), in the form's order, then
    the computed scores."""
    rows = [(spec.label, _display(spec, values[spec.name])) for spec in fields_for(form) if spec.name in values]
    if form == FormKind.THYROID:
        if "points" in values:
            rows.append(("TI-RADS points", str(values["points"])))
        if "category" in values:
            rows.append(("TI-RADS level", LEVEL_LABELS.get(str(values["category"]), str(values["category"]))))
        if "fna" in values:
            rows.append(("Recommendation", FNA_LABELS.get(values["fna"], str(values["fna"]))))
    return rows


# --- Oversight and the reading policy ------------------------------------------------------


class OversightFilter(forms.Form):
    status = forms.ChoiceField(choices=[("", "Any status"), *TaskStatus.choices], required=False)
    kind = forms.ChoiceField(choices=[("", "Any kind"), *TaskKind.choices], required=False)


def _number(attrs: dict[str, str]) -> forms.NumberInput:
    return forms.NumberInput(attrs=attrs)


class ReadingPolicyForm(forms.Form):
    """Types only; readings.services.reading_policy_set checks each range
    and answers with the field's message."""

    panel_fraction = forms.FloatField(
        label="Share of cases read by the panel",
        help_text="From 0 to 1: 1 sends every randomized case to the panel.",
        widget=_number({"step": "any", "min": "0", "max": "1"}),
    )
    panel_readers_per_case = forms.IntegerField(
        label="Panel readers per case",
        help_text="Blinded readers who read each panel case (1 to 10).",
        widget=_number({"step": "1", "min": "1", "max": "10"}),
    )
    reread_fraction = forms.FloatField(
        label="Share of each reader's cases read again",
        help_text="From 0 to 1: intra-reader agreement.",
        widget=_number({"step": "any", "min": "0", "max": "1"}),
    )
    washout_days = forms.IntegerField(
        label="Wash-out before a re-read (days)",
        help_text="0 to 365.",
        widget=_number({"step": "1", "min": "0", "max": "365"}),
    )
    adjudication_rule = forms.ChoiceField(label="Adjudication", choices=AdjudicationRule.choices)
    clinical_due_days = forms.IntegerField(
        label="Clinical read due within (days)",
        help_text="1 to 365.",
        widget=_number({"step": "1", "min": "1", "max": "365"}),
    )
    panel_due_days = forms.IntegerField(
        label="Panel read due within (days)",
        help_text="1 to 365.",
        widget=_number({"step": "1", "min": "1", "max": "365"}),
    )

    @classmethod
    def initial_from(cls, policy: ReadingPolicy) -> dict[str, Any]:
        return {name: getattr(policy, name) for name in cls.base_fields}
