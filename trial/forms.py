"""HTML forms of the enrollment pages. They check the shape of what was typed
(dates, choices, lengths); the trial's rules live in trial.services."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.db.models import QuerySet

from trial.models import (
    KIND_FOR_INDICATION,
    Bethesda,
    CervicalHistology,
    FigoStage,
    Indication,
    ReferenceKind,
    ReferenceStandardResult,
    ScreeningEntry,
    ScreeningStatus,
    Sex,
    Site,
    ThyroidHistology,
    ThyroidM,
    ThyroidN,
    ThyroidT,
    Trial,
    WithdrawalScope,
)
from trial.services import REFERENCE_FIELDS

REASON_MAX_LENGTH = 2000
_BLANK = [("", "—")]
_DATE_WIDGET = forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")
_DATETIME_WIDGET = forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M")


def _date_field(label: str, **kwargs: Any) -> forms.DateField:
    return forms.DateField(label=label, widget=_DATE_WIDGET, input_formats=["%Y-%m-%d"], **kwargs)


def _reason_field(label: str = "Reason", *, required: bool = True, help_text: str = "") -> forms.CharField:
    return forms.CharField(
        label=label,
        required=required,
        max_length=REASON_MAX_LENGTH,
        help_text=help_text,
        widget=forms.Textarea(attrs={"rows": 2}),
    )


def _site_label(site: Site) -> str:
    return f"{site.code} {site.name} ({site.trial.code})"


class PageForm(forms.Form):
    """Several forms share a page: each gets its own id prefix, so that every
    label points at its own field."""

    id_prefix = "id"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", f"{self.id_prefix}_%s")
        super().__init__(*args, **kwargs)


class SiteChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Any) -> str:
        return _site_label(obj)


class StaffChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Any) -> str:
        full_name = obj.get_full_name()
        return f"{full_name} ({obj.get_username()})" if full_name else obj.get_username()


# --- Screening -----------------------------------------------------------------


class ScreeningCreateForm(PageForm):
    id_prefix = "screening"

    site = SiteChoiceField(queryset=Site.objects.none(), empty_label=None)
    screened_on = _date_field("Screening date")
    # No default: a preselected indication or sex would be recorded unread.
    indication = forms.ChoiceField(choices=[("", "— choose —"), *Indication.choices])
    year_of_birth = forms.IntegerField(min_value=1850, max_value=2200)
    sex = forms.ChoiceField(choices=[("", "— choose —"), *Sex.choices])
    # Generated when the form is shown: a second click posts the same key and
    # the service hands back the entry the first click created.
    submission_key = forms.UUIDField(widget=forms.HiddenInput)

    def __init__(self, *args: Any, sites: QuerySet[Site], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        site_field: forms.ModelChoiceField = self.fields["site"]  # type: ignore[assignment]
        site_field.queryset = sites
        if len(sites) != 1:
            site_field.empty_label = "— choose a site —"


class ScreeningFilterForm(PageForm):
    id_prefix = "filter"

    site = SiteChoiceField(queryset=Site.objects.none(), required=False, empty_label="All sites")
    status = forms.ChoiceField(choices=[("", "All statuses"), *ScreeningStatus.choices], required=False)

    def __init__(self, *args: Any, sites: QuerySet[Site], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["site"].queryset = sites  # type: ignore[attr-defined]


class EligibilityForm(PageForm):
    """One required yes/no question per criterion of the protocol in effect."""

    id_prefix = "eligibility"

    def __init__(self, *args: Any, criteria: list[dict[str, Any]], reassessing: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.criteria = criteria
        for criterion in criteria:
            kind = "Inclusion" if criterion["kind"] == "inclusion" else "Exclusion"
            self.fields[self.field_name(criterion["code"])] = forms.ChoiceField(
                label=f"{criterion['code']} — {criterion['text']}",
                help_text=kind,
                choices=[("yes", "Yes"), ("no", "No")],
                widget=forms.RadioSelect,
            )
        if reassessing:
            self.fields["reason"] = _reason_field(
                "Reason for re-assessment", help_text="Required: eligibility was already recorded."
            )

    @staticmethod
    def field_name(code: str) -> str:
        return f"criterion_{code}"

    @classmethod
    def initial_from(cls, answers: dict[str, bool]) -> dict[str, str]:
        return {cls.field_name(code): "yes" if value else "no" for code, value in answers.items()}

    def answers(self) -> dict[str, bool]:
        return {c["code"]: self.cleaned_data[self.field_name(c["code"])] == "yes" for c in self.criteria}


class ConsentForm(PageForm):
    id_prefix = "consent"

    form_version = forms.CharField(label="Consent form version", max_length=32)
    consented_at = forms.DateTimeField(label="Consent date and time (UTC)", widget=_DATETIME_WIDGET)
    taken_by = StaffChoiceField(queryset=get_user_model().objects.none(), label="Consent taken by")

    def __init__(self, *args: Any, staff: QuerySet[Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["taken_by"].queryset = staff  # type: ignore[attr-defined]


class EnrollForm(ConsentForm):
    """Consent plus the protocol's stratification covariates."""

    def __init__(self, *args: Any, staff: QuerySet[Any], covariates: list[dict[str, Any]], **kwargs: Any) -> None:
        super().__init__(*args, staff=staff, **kwargs)
        self.covariate_definitions = covariates
        for definition in covariates:
            self.fields[f"covariate_{definition['name']}"] = forms.ChoiceField(
                label=definition.get("label") or definition["name"],
                choices=[("", "— choose —"), *[(choice, choice) for choice in definition["choices"]]],
            )

    def covariates(self) -> dict[str, str]:
        return {d["name"]: self.cleaned_data[f"covariate_{d['name']}"] for d in self.covariate_definitions}


class ScreeningCloseForm(PageForm):
    id_prefix = "close"

    outcome = forms.ChoiceField(
        choices=[
            (ScreeningStatus.DECLINED.value, "Declined to participate"),
            (ScreeningStatus.NOT_ENROLLED.value, "Not enrolled (other reason)"),
        ]
    )
    reason = _reason_field()


class ScreeningCorrectForm(PageForm):
    id_prefix = "correct"

    screened_on = _date_field("Screening date")
    year_of_birth = forms.IntegerField(min_value=1850, max_value=2200)
    sex = forms.ChoiceField(choices=Sex.choices)
    reason = _reason_field("Reason for correction")

    @staticmethod
    def initial_from(entry: ScreeningEntry) -> dict[str, Any]:
        return {"screened_on": entry.screened_on, "year_of_birth": entry.year_of_birth, "sex": entry.sex}

    def changes(self, entry: ScreeningEntry) -> dict[str, Any]:
        """Only the fields whose value differs, so the audit event names what changed."""
        return {
            name: self.cleaned_data[name]
            for name in ("screened_on", "year_of_birth", "sex")
            if self.cleaned_data[name] != getattr(entry, name)
        }


# --- Participants ----------------------------------------------------------------


class ParticipantFilterForm(PageForm):
    id_prefix = "filter"

    q = forms.CharField(label="Study id", required=False, max_length=24)
    site = SiteChoiceField(queryset=Site.objects.none(), required=False, empty_label="All sites")

    def __init__(self, *args: Any, sites: QuerySet[Site], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["site"].queryset = sites  # type: ignore[attr-defined]


class WithdrawForm(PageForm):
    id_prefix = "withdraw"

    withdrawn_on = _date_field("Withdrawal date")
    scope = forms.ChoiceField(choices=WithdrawalScope.choices, widget=forms.RadioSelect)
    reason = _reason_field()


_REFERENCE_FIELDS_BY_INDICATION = {
    Indication.CERVICAL: ["kind", "sample_date", "result_date", "cervical_histology", "figo_stage", "notes"],
    Indication.THYROID: [
        "kind",
        "sample_date",
        "result_date",
        "bethesda_category",
        "thyroid_histology",
        "tnm_t",
        "tnm_n",
        "tnm_m",
        "notes",
    ],
}
_REFERENCE_EMPTY: dict[str, Any] = {
    "cervical_histology": "",
    "bethesda_category": None,
    "thyroid_histology": "",
    "figo_stage": "",
    "tnm_t": "",
    "tnm_n": "",
    "tnm_m": "",
    "notes": "",
}


class ReferenceResultForm(PageForm):
    """The fields of services.REFERENCE_FIELDS that fit the participant's
    indication; the others go to the service empty."""

    id_prefix = "reference"
    kind = forms.ChoiceField(label="Kind of result", choices=ReferenceKind.choices)
    sample_date = _date_field("Sample date", help_text="Biopsy, FNA or surgery")
    result_date = _date_field("Result date")
    cervical_histology = forms.ChoiceField(
        label="Histology", choices=_BLANK + CervicalHistology.choices, required=False
    )
    figo_stage = forms.ChoiceField(
        label="FIGO stage (2018)", choices=_BLANK + FigoStage.choices, required=False, help_text="Invasive cancer only"
    )
    bethesda_category = forms.TypedChoiceField(
        label="Bethesda category",
        choices=_BLANK + [(str(value), label) for value, label in Bethesda.choices],
        coerce=int,
        empty_value=None,
        required=False,
        help_text="Cytology only",
    )
    thyroid_histology = forms.ChoiceField(
        label="Surgical histology", choices=_BLANK + ThyroidHistology.choices, required=False
    )
    tnm_t = forms.ChoiceField(label="T (AJCC 8th)", choices=_BLANK + ThyroidT.choices, required=False)
    tnm_n = forms.ChoiceField(label="N", choices=_BLANK + ThyroidN.choices, required=False)
    tnm_m = forms.ChoiceField(label="M", choices=_BLANK + ThyroidM.choices, required=False)
    notes = forms.CharField(required=False, max_length=4000, widget=forms.Textarea(attrs={"rows": 2}))

    def __init__(self, *args: Any, indication: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        kept = _REFERENCE_FIELDS_BY_INDICATION[Indication(indication)]
        for name in list(self.fields):
            if name not in kept and name != "reason":
                del self.fields[name]
        kinds = KIND_FOR_INDICATION[Indication(indication)]
        self.fields["kind"].choices = [(k.value, k.label) for k in ReferenceKind if k in kinds]  # type: ignore[attr-defined]

    def values(self) -> dict[str, Any]:
        """Every field of services.REFERENCE_FIELDS, those not on the form empty."""
        return {name: self.cleaned_data.get(name, _REFERENCE_EMPTY.get(name)) for name in REFERENCE_FIELDS}


class ReferenceCorrectForm(ReferenceResultForm):
    id_prefix = "reference_correct"

    reason = _reason_field("Reason for correction")

    @staticmethod
    def initial_from(result: ReferenceStandardResult) -> dict[str, Any]:
        return {name: getattr(result, name) for name in REFERENCE_FIELDS}

    def changes(self, result: ReferenceStandardResult) -> dict[str, Any]:
        return {name: value for name, value in self.values().items() if value != getattr(result, name)}


# --- Audit trail ----------------------------------------------------------------


class TrialChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Any) -> str:
        return obj.code


class AuditFilterForm(PageForm):
    id_prefix = "filter"

    trial = TrialChoiceField(queryset=Trial.objects.none(), required=False, empty_label="All trials")
    site = SiteChoiceField(queryset=Site.objects.none(), required=False, empty_label="All sites")
    actor = forms.CharField(required=False, max_length=150, help_text="User name contains")
    action = forms.CharField(required=False, max_length=64, help_text="e.g. participant.enroll")
    object_type = forms.CharField(required=False, max_length=64, help_text="e.g. trial.participant")
    object_id = forms.CharField(required=False, max_length=64)
    date_from = _date_field("From (UTC)", required=False)
    date_to = _date_field("To (UTC)", required=False)

    def __init__(self, *args: Any, trials: QuerySet[Trial], sites: QuerySet[Site], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["trial"].queryset = trials  # type: ignore[attr-defined]
        self.fields["site"].queryset = sites  # type: ignore[attr-defined]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        date_from: dt.date | None = cleaned.get("date_from")
        date_to: dt.date | None = cleaned.get("date_to")
        if date_from and date_to and date_from > date_to:
            self.add_error("date_to", "The end date is before the start date.")
        return cleaned
