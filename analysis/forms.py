from __future__ import annotations

from typing import Any

from django import forms

from analysis.models import ReportKind
from analysis.selectors import ReportTrial


class ReportRequestForm(forms.Form):
    trial = forms.TypedChoiceField(coerce=int, label="Trial")
    kind = forms.ChoiceField(choices=ReportKind.choices, label="Report", initial=ReportKind.OPEN)

    def __init__(self, *args: Any, trials: list[ReportTrial], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        trial_field = self.fields["trial"]
        assert isinstance(trial_field, forms.TypedChoiceField)
        trial_field.choices = [(item.trial.pk, f"{item.trial.code} — {item.trial.title}") for item in trials]
        kinds = {kind for item in trials for kind in item.kinds}
        kind_field = self.fields["kind"]
        assert isinstance(kind_field, forms.ChoiceField)
        kind_field.choices = [(value, label) for value, label in ReportKind.choices if value in kinds]
