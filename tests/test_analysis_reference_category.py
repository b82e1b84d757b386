"""The participant data set's reference_category: the reference standard on
the readers' three-level scale (normal, low-grade, high-grade), for a
weighted staging kappa against the reads."""

from __future__ import annotations

import csv
import io
from typing import Any

from analysis import datasets
from tests.test_analysis_datasets import clinician, pathologist, small_trial  # noqa: F401  (fixtures)
from trial.models import Bethesda, CervicalHistology, ReferenceKind, ReferenceStandardResult, Role, ThyroidHistology

CERVICAL = {
    CervicalHistology.NEGATIVE: "normal",
    CervicalHistology.CIN1: "low-grade",
    CervicalHistology.CIN2: "high-grade",
    CervicalHistology.CIN3: "high-grade",
    CervicalHistology.AIS: "high-grade",
    CervicalHistology.INVASIVE_SQUAMOUS: "high-grade",
    CervicalHistology.INVASIVE_ADENOCARCINOMA: "high-grade",
}
THYROID = {
    ThyroidHistology.BENIGN: "normal",
    ThyroidHistology.NIFTP: "low-grade",
    ThyroidHistology.PAPILLARY: "high-grade",
    ThyroidHistology.FOLLICULAR: "high-grade",
    ThyroidHistology.ONCOCYTIC: "high-grade",
    ThyroidHistology.MEDULLARY: "high-grade",
    ThyroidHistology.ANAPLASTIC: "high-grade",
    ThyroidHistology.OTHER_MALIGNANT: "high-grade",
}
BETHESDA = {
    Bethesda.I: None,
    Bethesda.II: "normal",
    Bethesda.III: "low-grade",
    Bethesda.IV: "low-grade",
    Bethesda.V: "high-grade",
    Bethesda.VI: "high-grade",
}


def test_every_reference_value_has_its_category() -> None:
    # The tables above name every choice: a new one added to the models must be placed here too.
    assert set(CERVICAL) == set(CervicalHistology) and set(THYROID) == set(ThyroidHistology)
    assert set(BETHESDA) == set(Bethesda)
    for value, expected in CERVICAL.items():
        result = ReferenceStandardResult(kind=ReferenceKind.CERVICAL_HISTOLOGY, cervical_histology=value)
        assert datasets.reference_category(result) == expected, value
        # Consistent with the binary reference_high_grade.
        assert (expected == "high-grade") is result.is_high_grade
    for value, expected in THYROID.items():
        result = ReferenceStandardResult(kind=ReferenceKind.THYROID_HISTOLOGY, thyroid_histology=value)
        assert datasets.reference_category(result) == expected, value
        assert (expected == "high-grade") is result.is_high_grade
    for number, expected in BETHESDA.items():
        result = ReferenceStandardResult(kind=ReferenceKind.THYROID_CYTOLOGY, bethesda_category=number)
        assert datasets.reference_category(result) == expected, number
    assert datasets.reference_category(ReferenceStandardResult(kind=ReferenceKind.THYROID_CYTOLOGY)) is None
    assert datasets.reference_category(ReferenceStandardResult(kind=ReferenceKind.CERVICAL_HISTOLOGY)) is None


def test_the_column_follows_the_reference_used_and_is_described(
    small_trial: dict[str, Any],  # noqa: F811
    users: dict[str, Any],
) -> None:
    data = datasets.analysis_datasets(users[Role.STATISTICIAN_UNBLINDED], small_trial["trial"].pk)
    rows = {row["study_id"]: row for row in csv.DictReader(io.StringIO(data.participants.to_csv().decode()))}
    # Papillary carcinoma; benign histology preferred over the earlier Bethesda II cytology.
    assert rows[small_trial["ai"].participant.study_id]["reference_category"] == "high-grade"
    assert rows[small_trial["specialist"].participant.study_id]["reference_category"] == "normal"
    column = next(c for c in data.participants.columns if c.name == "reference_category")
    assert column.allowed == ("normal", "low-grade", "high-grade")
    dictionary = data.dictionary_csv().decode()
    assert "reference_category" in dictionary and "NIFTP = low-grade" in dictionary
