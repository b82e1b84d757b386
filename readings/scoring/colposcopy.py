"""The Swede score and the colposcopy case report form.

Sources
- Bornstein J, Bentley J, Bösze P, et al. 2011 Colposcopic Terminology of
  the International Federation for Cervical Pathology and Colposcopy
  (IFCPC, "Rio 2011"). Obstet Gynecol 2012;120(1):166–172.
  doi:10.1097/AOG.0b013e318254f90c. General assessment: adequate or
  inadequate with the reason (cervix obscured by inflammation, bleeding,
  scar); squamocolumnar junction completely, partially or not visible;
  transformation zone type 1 (completely ectocervical, fully visible), 2
  (endocervical component, fully visible), 3 (endocervical component, not
  fully visible). Abnormal findings: grade 1 (minor), grade 2 (major),
  suspicious for invasion.
- Strander B, Ellström-Andersson A, Franzén S, Milsom I, Rådberg T. The
  performance of a new scoring system for colposcopy in detecting high-grade
  dysplasia in the uterine cervix. Acta Obstet Gynecol Scand
  2005;84(10):1013–1017 (the Swede score: five items, 0–2 each).
- Bowring J, Strander B, Young M, Evans H, Walker P. The Swede score:
  evaluation of a scoring system designed to improve the predictive value of
  colposcopy. J Low Genit Tract Dis 2010;14(4):301–305.
- The item descriptors as the IARC Atlas of Colposcopy: Principles and
  Practice reproduces them (documentation of colposcopic findings).
- FIGO 2018 staging of carcinoma of the cervix uteri: the reference
  standard's codes (trial.models.FigoStage).

Rules implemented beyond the single fields
- A reason is required when the examination is inadequate and refused when it
  is adequate; the reason "other" must be described in the note.
- Transformation zone type and junction visibility must agree, as the IFCPC
  defines the types by it: types 1 and 2 are fully visible, type 3 is not.
- The FIGO stage is required when the impression is suspicious for invasion
  and refused otherwise.
- A Swede total typed by the reader must equal the sum of the five items.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from readings.scoring.errors import NON_FIELD, ReadValidationError
from readings.scoring.fields import (
    CONFIDENCE,
    NOTE,
    TIME_SPENT,
    Choice,
    FieldSpec,
    FormCleaner,
    clean_common,
    reference_choices,
)

ADEQUATE = "adequate"
INADEQUATE = "inadequate"
OTHER_REASON = "other"
COMPLETELY_VISIBLE = "completely_visible"
SUSPICIOUS_FOR_INVASION = "suspicious_invasion"
SWEDE_MAX = 10


def _swede_item(name: str, label: str, descriptors: tuple[str, str, str], help: str = "") -> FieldSpec:
    return FieldSpec(
        name=name,
        label=label,
        kind="choice",
        required=True,
        help=help or "Swede score item: 0, 1 or 2 points.",
        static_choices=tuple(Choice(score, text, score) for score, text in enumerate(descriptors)),
    )


SWEDE_ITEMS: tuple[FieldSpec, ...] = (
    _swede_item(
        "swede_acetowhite",
        "Aceto uptake",
        ("Zero or transparent", "Shady, milky (not transparent, not opaque)", "Distinct, opaque white (stearin)"),
    ),
    _swede_item(
        "swede_margins_surface",
        "Margins and surface",
        (
            "Zero or diffuse",
            "Sharp but irregular, jagged, 'geographical'; satellites",
            "Sharp and even, difference in surface level, including 'cuffing'",
        ),
    ),
    _swede_item("swede_vessels", "Vessels", ("Fine, regular", "Absent", "Coarse or atypical")),
    _swede_item(
        "swede_lesion_size",
        "Lesion size",
        ("< 5 mm", "5–15 mm or 2 quadrants", "> 15 mm, or 3–4 quadrants, or endocervically undefined"),
    ),
    _swede_item(
        "swede_iodine",
        "Iodine staining",
        ("Brown", "Faintly or patchy yellow", "Distinct yellow"),
        help="Swede score item after Lugol's iodine: 0, 1 or 2 points.",
    ),
)
SWEDE_ITEM_NAMES: tuple[str, ...] = tuple(spec.name for spec in SWEDE_ITEMS)

FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec(
        name="adequacy",
        label="Adequacy",
        kind="choice",
        required=True,
        help="Whether the cervix could be assessed.",
        static_choices=(Choice(ADEQUATE, "Adequate"), Choice(INADEQUATE, "Inadequate")),
    ),
    FieldSpec(
        name="inadequacy_reason",
        label="Reason the examination is inadequate",
        kind="choice",
        required=False,
        help="Only when the examination is inadequate. For 'Other', describe the reason in the note.",
        static_choices=(
            Choice("inflammation", "Cervix obscured by inflammation"),
            Choice("bleeding", "Cervix obscured by bleeding"),
            Choice("scar", "Cervix obscured by scar"),
            Choice(OTHER_REASON, "Other (describe in the note)"),
        ),
        required_if=("adequacy", (INADEQUATE,)),
    ),
    FieldSpec(
        name="scj_visibility",
        label="Squamocolumnar junction visibility",
        kind="choice",
        required=True,
        static_choices=(
            Choice(COMPLETELY_VISIBLE, "Completely visible"),
            Choice("partially_visible", "Partially visible"),
            Choice("not_visible", "Not visible"),
        ),
    ),
    FieldSpec(
        name="transformation_zone",
        label="Transformation zone type",
        kind="choice",
        required=True,
        static_choices=(
            Choice(1, "Type 1 — completely ectocervical, fully visible"),
            Choice(2, "Type 2 — has an endocervical component, fully visible"),
            Choice(3, "Type 3 — has an endocervical component, not fully visible"),
        ),
    ),
    *SWEDE_ITEMS,
    FieldSpec(
        name="swede_total",
        label="Swede score",
        kind="integer",
        required=False,
        help="Optional: the total you arrived at. It is checked against the five items.",
        min_value=0,
        max_value=SWEDE_MAX,
    ),
    FieldSpec(
        name="impression",
        label="Colposcopic impression",
        kind="choice",
        required=True,
        static_choices=(
            Choice("normal", "Normal"),
            Choice("low_grade", "Low-grade (grade 1, minor)"),
            Choice("high_grade", "High-grade (grade 2, major)"),
            Choice(SUSPICIOUS_FOR_INVASION, "Suspicious for invasion"),
        ),
    ),
    FieldSpec(name="biopsy_recommended", label="Biopsy recommended", kind="boolean", required=True),
    FieldSpec(
        name="figo_stage",
        label="FIGO stage (2018)",
        kind="choice",
        required=False,
        help="Only when the impression is suspicious for invasion.",
        choices_from=lambda: reference_choices("FigoStage"),
        required_if=("impression", (SUSPICIOUS_FOR_INVASION,)),
    ),
    CONFIDENCE,
    TIME_SPENT,
    NOTE,
)


def _clean_swede_items(cleaner: FormCleaner) -> dict[str, int] | None:
    items = {name: cleaner.choice(name) for name in SWEDE_ITEM_NAMES}
    if any(value is None for value in items.values()):
        return None
    return {name: int(value) for name, value in items.items() if value is not None}


def swede_total(items: Mapping[str, object]) -> int:
    """Swede score, 0–10: the sum of the five items (each 0, 1 or 2), keyed
    by their field names. Other keys are ignored; a missing or out-of-range
    item raises ReadValidationError."""
    if not isinstance(items, Mapping):
        raise ReadValidationError({NON_FIELD: "The Swede score items must be a set of named fields."})
    cleaner = FormCleaner({name: items.get(name) for name in SWEDE_ITEM_NAMES}, SWEDE_ITEMS, form_title="Swede score")
    scores = _clean_swede_items(cleaner)
    cleaner.finish()
    assert scores is not None
    return sum(scores.values())


@dataclass(frozen=True)
class ColposcopyRead:
    """A validated colposcopy read with its Swede total. The reason is ""
    when the examination is adequate, the FIGO stage "" unless invasion is
    suspected."""

    adequacy: str
    inadequacy_reason: str
    scj_visibility: str
    transformation_zone: int
    swede_acetowhite: int
    swede_margins_surface: int
    swede_vessels: int
    swede_lesion_size: int
    swede_iodine: int
    swede_total: int
    impression: str
    biopsy_recommended: bool
    figo_stage: str
    confidence: int
    time_spent_s: int
    note: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values, e.g. for storing the read."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def _visibility_label(value: str) -> str:
    return value.replace("_", " ")


def validate_colposcopy_read(data: Mapping[str, object]) -> ColposcopyRead:
    """Clean and check one colposcopy read. Raises ReadValidationError with
    every field's problem at once; returns the read with its Swede total."""
    cleaner = FormCleaner(data, FIELDS, form_title="colposcopy read")

    adequacy = cleaner.choice("adequacy")
    if adequacy == ADEQUATE:
        cleaner.refuse("inadequacy_reason", "Leave the reason empty: the examination was recorded as adequate.")
        reason = None
    else:
        reason = cleaner.choice("inadequacy_reason", required=adequacy == INADEQUATE)

    visibility = cleaner.choice("scj_visibility")
    zone = cleaner.choice("transformation_zone")
    if visibility is not None and zone is not None:
        if zone == 3 and visibility == COMPLETELY_VISIBLE:
            cleaner.error(
                "transformation_zone",
                "Transformation zone type 3 means the squamocolumnar junction is not fully visible, "
                "but the junction was recorded as completely visible.",
            )
        elif zone in (1, 2) and visibility != COMPLETELY_VISIBLE:
            cleaner.error(
                "transformation_zone",
                f"Transformation zone type {zone} means the squamocolumnar junction is fully visible, "
                f"but the junction was recorded as {_visibility_label(str(visibility))}.",
            )

    items = _clean_swede_items(cleaner)
    total = sum(items.values()) if items is not None else None
    typed_total = cleaner.integer(
        "swede_total", message=f"The Swede score must be a whole number from 0 to {SWEDE_MAX}."
    )
    if typed_total is not None and total is not None and typed_total != total:
        cleaner.error(
            "swede_total", f"A Swede score of {typed_total} was entered but the five items add up to {total}."
        )

    impression = cleaner.choice("impression")
    biopsy_recommended = cleaner.boolean("biopsy_recommended")
    if impression is not None and impression != SUSPICIOUS_FOR_INVASION:
        cleaner.refuse(
            "figo_stage",
            "Leave the FIGO stage empty: it is recorded only when the impression is suspicious for invasion.",
        )
        figo_stage = None
    else:
        figo_stage = cleaner.choice("figo_stage", required=impression == SUSPICIOUS_FOR_INVASION)

    confidence, time_spent_s, note = clean_common(cleaner)
    if reason == OTHER_REASON and not note:
        cleaner.error("note", "Describe in the note why the examination was inadequate (the reason given is 'Other').")

    cleaner.finish()
    assert adequacy is not None and visibility is not None and zone is not None
    assert items is not None and total is not None and impression is not None and biopsy_recommended is not None
    assert confidence is not None and time_spent_s is not None
    return ColposcopyRead(
        adequacy=str(adequacy),
        inadequacy_reason="" if reason is None else str(reason),
        scj_visibility=str(visibility),
        transformation_zone=int(zone),
        swede_acetowhite=items["swede_acetowhite"],
        swede_margins_surface=items["swede_margins_surface"],
        swede_vessels=items["swede_vessels"],
        swede_lesion_size=items["swede_lesion_size"],
        swede_iodine=items["swede_iodine"],
        swede_total=total,
        impression=str(impression),
        biopsy_recommended=biopsy_recommended,
        figo_stage="" if figo_stage is None else str(figo_stage),
        confidence=confidence,
        time_spent_s=time_spent_s,
        note=note,
    )


__all__ = [
    "FIELDS",
    "SWEDE_ITEMS",
    "ColposcopyRead",
    "swede_total",
    "validate_colposcopy_read",
]
