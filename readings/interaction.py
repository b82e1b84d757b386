"""How a read compares with the AI second opinion and with another read:
the three-level category of a read, whether it calls high-grade disease,
and the human–AI interaction summary of the sequential design (CONSORT-AI
items 5(iv)–(vi)). Pure functions of stored values; no models.

Categories are those of the AI's image-level head: normal, low-grade,
high-grade. Colposcopy: the impression (suspicious for invasion counts as
high-grade). Thyroid: TR1–TR2 normal, TR3 low-grade, TR4–TR5 high-grade;
a read that suspects cancer is high-grade whatever its TR level.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

NORMAL = "normal"
LOW_GRADE = "low-grade"
HIGH_GRADE = "high-grade"
CATEGORIES = (NORMAL, LOW_GRADE, HIGH_GRADE)

_COLPOSCOPY = {
    "normal": NORMAL,
    "low_grade": LOW_GRADE,
    "high_grade": HIGH_GRADE,
    "suspicious_invasion": HIGH_GRADE,
}
_THYROID = {"TR1": NORMAL, "TR2": NORMAL, "TR3": LOW_GRADE, "TR4": HIGH_GRADE, "TR5": HIGH_GRADE}

# Fields that describe the reading session rather than the finding.
_NOT_FINDINGS = {"time_spent_s", "feature_points"}


def read_category(form: str, values: Mapping[str, Any]) -> str | None:
    """The read's category on the AI's scale, or None when the values do
    not say (an unsigned or incomplete read)."""
    if form == "colposcopy":
        return _COLPOSCOPY.get(str(values.get("impression", "")))
    if form == "thyroid":
        if values.get("cancer_suspected") is True:
            return HIGH_GRADE
        return _THYROID.get(str(values.get("category", "")))
    raise ValueError(f"Unknown form {form!r}.")


def calls_high_grade(form: str, values: Mapping[str, Any]) -> bool | None:
    category = read_category(form, values)
    return None if category is None else category == HIGH_GRADE


def changed_fields(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, list[Any]]:
    """{field: [before, after]} for every finding that differs."""
    names = sorted((set(before) | set(after)) - _NOT_FINDINGS)
    return {name: [before.get(name), after.get(name)] for name in names if before.get(name) != after.get(name)}


def _seconds(start: dt.datetime | None, end: dt.datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 1)


def _agrees(category: str | None, ai_category: str | None) -> bool | None:
    if category is None or ai_category is None:
        return None
    return category == ai_category


def interaction_summary(
    *,
    form: str,
    unaided: Mapping[str, Any],
    final: Mapping[str, Any],
    unaided_opened_at: dt.datetime,
    unaided_signed_at: dt.datetime,
    final_opened_at: dt.datetime,
    final_signed_at: dt.datetime,
    displays: Sequence[tuple[dt.datetime, str]],
    ai_category: str | None,
    ai_probability: float | None,
    ai_result_id: int | None,
    ai_status: str | None,
) -> dict[str, Any]:
    """The interaction record stored with a final read of the sequential
    design: whether and when the AI was viewed, the time to each decision,
    every finding changed, and agreement with the AI before and after."""
    first_view = min((when for when, _ in displays), default=None)
    category_unaided = read_category(form, unaided)
    category_final = read_category(form, final)
    agreed_before = _agrees(category_unaided, ai_category)
    agreed_after = _agrees(category_final, ai_category)
    if agreed_before is None or agreed_after is None or category_unaided == category_final:
        movement = "unchanged" if category_unaided == category_final and category_final is not None else None
    elif agreed_after:
        movement = "towards_ai"
    elif agreed_before:
        movement = "away_from_ai"
    else:
        movement = "changed_not_towards_ai"
    return {
        "ai_status": ai_status,
        "ai_result": ai_result_id,
        "ai_category": ai_category,
        "ai_probability": ai_probability,
        "ai_viewed": first_view is not None,
        "ai_first_viewed_at": first_view.isoformat() if first_view is not None else None,
        "ai_displays": len(displays),
        "ai_displayed": sorted({what for _, what in displays}),
        "seconds_to_unaided_decision": _seconds(unaided_opened_at, unaided_signed_at),
        "seconds_to_final_decision": _seconds(first_view or final_opened_at, final_signed_at),
        "changed_fields": changed_fields(unaided, final),
        "category_unaided": category_unaided,
        "category_final": category_final,
        "agreed_with_ai_unaided": agreed_before,
        "agreed_with_ai_final": agreed_after,
        "category_change": movement,
    }
