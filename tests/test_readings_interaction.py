"""readings.interaction: the three-level category of a read, whether it
calls high-grade disease, the fields changed between two reads and the
human–AI interaction summary stored with the final read of the sequential
design (CONSORT-AI 5(iv)–(vi)). Pure functions: no database. The reads are
made by the real form validators, so the keys the functions look up are
those a signed read stores."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from readings.interaction import (
    CATEGORIES,
    HIGH_GRADE,
    LOW_GRADE,
    NORMAL,
    calls_high_grade,
    changed_fields,
    interaction_summary,
    read_category,
)
from readings.scoring import validate_colposcopy_read, validate_thyroid_read
from tests.reading_fixtures import COLPOSCOPY_READ, THYROID_READ

T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


def thyroid(**changes: Any) -> dict[str, Any]:
    return validate_thyroid_read({**THYROID_READ, **changes}).to_dict()


def colposcopy(**changes: Any) -> dict[str, Any]:
    return validate_colposcopy_read({**COLPOSCOPY_READ, **changes}).to_dict()


# Thyroid reads of each TI-RADS level (points in the comment).
TR1 = {"composition": "cystic", "echogenicity": "anechoic"}  # 0
TR2 = {"composition": "mixed_cystic_solid", "echogenicity": "hyperechoic_isoechoic"}  # 2
TR3 = {"composition": "solid", "echogenicity": "hyperechoic_isoechoic"}  # 3
TR4: dict[str, Any] = {}  # THYROID_READ: solid + hypoechoic = 4
TR5 = {"echogenicity": "very_hypoechoic", "shape": "taller_than_wide"}  # 2 + 3 + 3 = 8
SUSPICIOUS = {"impression": "suspicious_invasion", "figo_stage": "IB1", "biopsy_recommended": True}
HIGH = {"impression": "high_grade", "swede_acetowhite": 2, "swede_vessels": 2, "biopsy_recommended": True}


@pytest.mark.parametrize(
    ("changes", "level", "category"),
    [
        (TR1, "TR1", NORMAL),
        (TR2, "TR2", NORMAL),
        (TR3, "TR3", LOW_GRADE),
        (TR4, "TR4", HIGH_GRADE),
        (TR5, "TR5", HIGH_GRADE),
    ],
)
def test_thyroid_category_follows_the_tirads_level(changes: dict[str, Any], level: str, category: str) -> None:
    values = thyroid(**changes)
    assert values["category"] == level
    assert read_category("thyroid", values) == category
    assert calls_high_grade("thyroid", values) is (category == HIGH_GRADE)


def test_a_thyroid_read_suspecting_cancer_is_high_grade_whatever_its_level() -> None:
    values = thyroid(**TR1, cancer_suspected=True, tnm_t="T1a", tnm_n="N0a", tnm_m="M0")
    assert values["category"] == "TR1"
    assert read_category("thyroid", values) == HIGH_GRADE
    assert calls_high_grade("thyroid", values) is True


@pytest.mark.parametrize(
    ("changes", "category"),
    [
        ({}, NORMAL),
        ({"impression": "low_grade", "swede_acetowhite": 1}, LOW_GRADE),
        (HIGH, HIGH_GRADE),
        (SUSPICIOUS, HIGH_GRADE),
    ],
)
def test_colposcopy_category_follows_the_impression(changes: dict[str, Any], category: str) -> None:
    values = colposcopy(**changes)
    assert read_category("colposcopy", values) == category
    assert calls_high_grade("colposcopy", values) is (category == HIGH_GRADE)


def test_incomplete_or_unknown_values_have_no_category() -> None:
    assert read_category("thyroid", {}) is None
    assert read_category("thyroid", {"category": "TR9"}) is None
    assert read_category("colposcopy", {"impression": "unsure"}) is None
    assert calls_high_grade("colposcopy", {}) is None
    with pytest.raises(ValueError, match="Unknown form 'mammography'"):
        read_category("mammography", {})


def test_changed_fields_lists_findings_only() -> None:
    before = thyroid()
    after = thyroid(**TR3, time_spent_s=400, note="Rechecked the echogenicity")
    changes = changed_fields(before, after)
    # The reading time and the per-feature points are not findings; the
    # totals they lead to are.
    assert changes == {
        "category": ["TR4", "TR3"],
        "echogenicity": ["hypoechoic", "hyperechoic_isoechoic"],
        "fna": [before["fna"], after["fna"]],
        "note": ["", "Rechecked the echogenicity"],
        "points": [4, 3],
    }
    assert changed_fields(before, dict(before)) == {}
    # A field present on one side only counts as changed.
    assert changed_fields({"a": 1}, {"b": 2}) == {"a": [1, None], "b": [None, 2]}


def summary(
    unaided: dict[str, Any],
    final: dict[str, Any],
    *,
    displays: list[tuple[dt.datetime, str]] | None = None,
    ai_category: str | None = NORMAL,
    form: str = "thyroid",
) -> dict[str, Any]:
    return interaction_summary(
        form=form,
        unaided=unaided,
        final=final,
        unaided_opened_at=T0,
        unaided_signed_at=T0 + dt.timedelta(seconds=95.04),
        final_opened_at=T0 + dt.timedelta(seconds=100),
        final_signed_at=T0 + dt.timedelta(seconds=160),
        displays=displays if displays is not None else [],
        ai_category=ai_category,
        ai_probability=0.7 if ai_category else None,
        ai_result_id=12 if ai_category else None,
        ai_status="done" if ai_category else None,
    )


def test_summary_of_a_read_that_viewed_the_ai_and_moved_towards_it() -> None:
    displays = [
        (T0 + dt.timedelta(seconds=130), "contour"),
        (T0 + dt.timedelta(seconds=110), "suggestion"),
        (T0 + dt.timedelta(seconds=131), "contour"),
    ]
    result = summary(thyroid(), thyroid(**TR1), displays=displays, ai_category=NORMAL)
    assert result["ai_viewed"] is True
    assert result["ai_first_viewed_at"] == (T0 + dt.timedelta(seconds=110)).isoformat()
    assert result["ai_displays"] == 3
    assert result["ai_displayed"] == ["contour", "suggestion"]
    assert result["ai_status"] == "done" and result["ai_result"] == 12
    assert result["ai_category"] == NORMAL and result["ai_probability"] == 0.7
    assert result["seconds_to_unaided_decision"] == 95.0
    # The final decision is timed from the first view of the AI.
    assert result["seconds_to_final_decision"] == 50.0
    assert result["changed_fields"]["composition"] == ["solid", "cystic"]
    assert result["changed_fields"]["category"] == ["TR4", "TR1"]
    assert result["category_unaided"] == HIGH_GRADE and result["category_final"] == NORMAL
    assert result["agreed_with_ai_unaided"] is False and result["agreed_with_ai_final"] is True
    assert result["category_change"] == "towards_ai"


def test_summary_of_a_read_that_never_viewed_the_ai() -> None:
    result = summary(thyroid(), thyroid(), ai_category=LOW_GRADE)
    assert result["ai_viewed"] is False
    assert result["ai_first_viewed_at"] is None
    assert result["ai_displays"] == 0 and result["ai_displayed"] == []
    # Without a view the final decision is timed from the opening of the final read.
    assert result["seconds_to_final_decision"] == 60.0
    assert result["changed_fields"] == {}
    assert result["agreed_with_ai_unaided"] is False and result["agreed_with_ai_final"] is False
    assert result["category_change"] == "unchanged"


@pytest.mark.parametrize(
    ("unaided", "final", "ai_category", "movement", "before", "after"),
    [
        (TR1, TR4, NORMAL, "away_from_ai", True, False),
        (TR1, TR3, HIGH_GRADE, "changed_not_towards_ai", False, False),
        (TR3, TR4, HIGH_GRADE, "towards_ai", False, True),
        (TR4, TR5, HIGH_GRADE, "unchanged", True, True),  # TR4 → TR5: the same category
        (TR3, TR4, None, None, None, None),  # no AI category: agreement unknown
        (TR3, TR3, None, "unchanged", None, None),
    ],
)
def test_category_change_relative_to_the_ai(
    unaided: dict[str, Any],
    final: dict[str, Any],
    ai_category: str | None,
    movement: str | None,
    before: bool | None,
    after: bool | None,
) -> None:
    result = summary(thyroid(**unaided), thyroid(**final), ai_category=ai_category)
    assert result["category_change"] == movement
    assert result["agreed_with_ai_unaided"] is before
    assert result["agreed_with_ai_final"] is after


def test_colposcopy_summary_uses_the_impression() -> None:
    result = summary(colposcopy(), colposcopy(**HIGH), form="colposcopy", ai_category=HIGH_GRADE)
    assert result["category_unaided"] == NORMAL and result["category_final"] == HIGH_GRADE
    assert result["category_change"] == "towards_ai"
    assert result["changed_fields"]["impression"] == ["normal", "high_grade"]
    assert result["changed_fields"]["swede_total"] == [0, 4]


def test_categories_are_the_ai_heads_labels() -> None:
    assert CATEGORIES == ("normal", "low-grade", "high-grade")
