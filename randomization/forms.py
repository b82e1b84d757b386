"""HTML forms of randomization. They check the shape of what was typed; the
rules (block sizes against the ratio, known factors, the typed unblinding
confirmation) live in randomization.services."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.db.models import QuerySet

from randomization import algorithms
from randomization.models import ImbalanceMeasure, Method
from randomization.serializers import MAX_RATIO_PART, REASON_MAX_LENGTH, TABLE_MAX_BYTES, parse_ratio
from randomization.services import BUILT_IN_FACTORS, CONFIRMATION_WORD
from trial.forms import PageForm, StaffChoiceField
from trial.models import ProtocolVersion, Trial

WEIGHT_PREFIX = "weight_"
_BUILT_IN_LABELS = {"site": "Site", "indication": "Indication"}


def factor_choices(trial: Trial) -> list[tuple[str, str]]:
    """Site, indication and the trial's stratification covariates."""
    choices = [(name, _BUILT_IN_LABELS[name]) for name in BUILT_IN_FACTORS]
    for covariate in trial.stratification_covariates:
        label = covariate.get("label") or covariate["name"]
        if covariate.get("indication"):
            label = f"{label}, {covariate['indication']} only"
        choices.append((covariate["name"], label))
    return choices


class ProtocolChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Any) -> str:
        return f"v{obj.version} (from {obj.effective_date:%Y-%m-%d})"


class SchemeConfigureForm(PageForm):
    id_prefix = "scheme"
    wide_fields = frozenset({"method", "factors", "reason"})

    method = forms.ChoiceField(choices=Method.choices, initial=Method.PERMUTED_BLOCKS)
    ratio = forms.CharField(
        label="Allocation ratio",
        initial="1:1",
        max_length=7,
        help_text=f"AI-assisted : specialist-only, e.g. 1:1 or 2:1 (parts 1 to {MAX_RATIO_PART})",
    )
    block_sizes = forms.CharField(
        label="Block sizes",
        required=False,
        initial="4, 6",
        max_length=60,
        help_text="Permuted blocks: multiples of the ratio's sum, separated by commas; one is drawn per block",
    )
    factors = forms.MultipleChoiceField(
        label="Stratification / minimization factors",
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )
    imbalance_measure = forms.ChoiceField(
        label="Imbalance measure", choices=ImbalanceMeasure.choices, initial=algorithms.RANGE
    )
    minimization_probability = forms.FloatField(
        label="Probability of the preferred arm",
        min_value=0.5,
        max_value=1.0,
        initial=0.8,
        help_text="Minimization: 0.5 to 1 (1 = deterministic)",
    )
    low_table_warning = forms.IntegerField(
        label="Warn when a table stratum has this few left",
        min_value=0,
        max_value=10000,
        initial=10,
        help_text="Imported tables only",
    )
    protocol_version = ProtocolChoiceField(queryset=ProtocolVersion.objects.none(), empty_label=None)
    reason = forms.CharField(
        label="Reason",
        required=False,
        max_length=REASON_MAX_LENGTH,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Required when it replaces a scheme already in use",
    )

    def __init__(self, *args: Any, trial: Trial, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        choices = factor_choices(trial)
        factors_field: forms.MultipleChoiceField = self.fields["factors"]  # type: ignore[assignment]
        factors_field.choices = choices
        if "factors" not in self.initial:
            self.initial["factors"] = ["site", "indication"]
        protocols = trial.protocol_versions.order_by("-effective_date", "-id")
        protocol_field: forms.ModelChoiceField = self.fields["protocol_version"]  # type: ignore[assignment]
        protocol_field.queryset = protocols
        if "protocol_version" not in self.initial:
            self.initial["protocol_version"] = protocols.first()
        for name, label in choices:
            self.fields[f"{WEIGHT_PREFIX}{name}"] = forms.FloatField(
                label=f"Weight: {label}", required=False, min_value=0.01, max_value=100, initial=1.0
            )

    @property
    def weight_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in self.fields if name.startswith(WEIGHT_PREFIX)]

    @property
    def design_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in ("method", "ratio", "block_sizes", "protocol_version")]

    @property
    def minimization_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in ("imbalance_measure", "minimization_probability")]

    def clean_ratio(self) -> tuple[int, int]:
        try:
            return parse_ratio(self.cleaned_data["ratio"])
        except ValueError as error:
            raise forms.ValidationError(str(error)) from error

    def clean_block_sizes(self) -> list[int]:
        text = self.cleaned_data["block_sizes"].replace(";", ",")
        parts = [part.strip() for part in text.split(",") if part.strip()]
        if not all(part.isdigit() for part in parts):
            raise forms.ValidationError("Block sizes are whole numbers separated by commas, e.g. 4, 6.")
        return [int(part) for part in parts]

    def values(self) -> dict[str, Any]:
        """The keyword arguments of services.scheme_configure."""
        data = self.cleaned_data
        factors: list[str] = list(data["factors"])
        weights = {
            factor: float(data[f"{WEIGHT_PREFIX}{factor}"])
            for factor in factors
            if data.get(f"{WEIGHT_PREFIX}{factor}") is not None
        }
        return {
            "method": data["method"],
            "ratio": data["ratio"],
            "block_sizes": data["block_sizes"],
            "factors": factors,
            "factor_weights": weights,
            "imbalance_measure": data["imbalance_measure"],
            "minimization_probability": data["minimization_probability"],
            "low_table_warning": data["low_table_warning"],
            "protocol_version": data["protocol_version"],
            "reason": data["reason"],
        }


class TableUploadForm(PageForm):
    id_prefix = "table"
    wide_fields = frozenset({"file"})

    file = forms.FileField(
        label="Allocation table (CSV)",
        help_text="Columns: sequence, arm (ai_assisted or specialist_only) and one per factor of the draft",
    )

    def clean_file(self) -> Any:
        upload = self.cleaned_data["file"]
        if upload.size > TABLE_MAX_BYTES:
            raise forms.ValidationError(f"The table is larger than {TABLE_MAX_BYTES // (1024 * 1024)} MB.")
        return upload


class ActivateForm(PageForm):
    id_prefix = "activate"

    confirm = forms.BooleanField(
        label="I have checked this draft. Lock it, commit to its seed, and use it for every allocation from now on.",
    )


class MemberChoiceField(StaffChoiceField):
    """A trial member, named with their roles so that the admin picks the
    pathologist, not a namesake."""

    roles: dict[int, list[str]] = {}

    def label_from_instance(self, obj: Any) -> str:
        name = super().label_from_instance(obj)
        roles = self.roles.get(obj.pk)
        return f"{name} — {', '.join(roles)}" if roles else name


class UnblindForm(PageForm):
    id_prefix = "unblind"
    wide_fields = frozenset({"revealed_to", "reason"})

    revealed_to = MemberChoiceField(
        label="Reveal the arm to", queryset=get_user_model().objects.none(), empty_label="— choose a person —"
    )
    reason = forms.CharField(
        label="Reason (patient safety)",
        max_length=REASON_MAX_LENGTH,
        widget=forms.Textarea(attrs={"rows": 3}),
    )
    confirmation = forms.CharField(label="Confirmation", max_length=200)

    def __init__(
        self, *args: Any, members: QuerySet[Any], roles: dict[int, list[str]], study_id: str, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        member_field: MemberChoiceField = self.fields["revealed_to"]  # type: ignore[assignment]
        member_field.queryset = members
        member_field.roles = roles
        self.fields["confirmation"].help_text = f"Type {confirmation_phrase(study_id)} to confirm"
        self.fields["confirmation"].widget.attrs["autocomplete"] = "off"


def confirmation_phrase(study_id: str) -> str:
    return f"{CONFIRMATION_WORD} {study_id}"
