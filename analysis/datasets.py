"""The trial's analysis data sets, built from the live database: one row per
randomized participant and one row per signed current read, with the column
definitions that both the CSV files and their data dictionary are made from
(one source of truth).

Who may have them and what of the arm they see is decided in
analysis.selectors. Withdrawal scopes: participants who withdrew their data
are left out entirely; for those who stopped AI processing every AI column is
empty; for those who stopped follow-up nothing dated after the withdrawal
(reads signed, reference results reported) is used.

Everything is read in a fixed number of queries whatever the trial size.
CSV: UTF-8, a header row, "," separated, ISO 8601 dates (times in UTC),
booleans as 1/0, an empty field for a missing value, lists joined by ";".
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from ai_engine.models import AiResult, AiResultStatus
from analysis.selectors import ArmMode, ExportScope, export_scope
from randomization.models import Arm
from readings import interaction
from readings.models import FormKind, Phase, Read, ReadStatus, TaskKind
from readings.scoring import colposcopy, thyroid
from readings.scoring.fields import FieldSpec
from readings.services import USABLE
from trial.models import (
    HIGH_GRADE_CERVICAL,
    MALIGNANT_THYROID,
    Bethesda,
    CervicalHistology,
    Indication,
    Participant,
    ReferenceKind,
    ReferenceStandardResult,
    Sex,
    ThyroidHistology,
    Trial,
    WithdrawalScope,
)

# --- Column definitions -----------------------------------------------------------------

STRING = "string"
CATEGORY = "category"
INTEGER = "integer"
NUMBER = "number"
BOOLEAN = "boolean"  # 1/0
DATE = "date"  # YYYY-MM-DD
DATETIME = "datetime"  # YYYY-MM-DDTHH:MM:SSZ (UTC)


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    description: str
    allowed: tuple[str, ...] = ()


CATEGORIES = interaction.CATEGORIES  # normal, low-grade, high-grade
AI_INFLUENCE = ("unchanged", "towards_ai", "away_from_ai", "changed_not_towards_ai")
AI_STATUSES = tuple(AiResultStatus.values)
TASK_KINDS = (TaskKind.CLINICAL, TaskKind.PANEL, TaskKind.ADJUDICATION)
PHASES = (Phase.UNAIDED, Phase.FINAL)
_FINISHED = (AiResultStatus.DONE, AiResultStatus.ABSTAINED)


def _choices(spec: FieldSpec) -> tuple[str, ...]:
    return tuple(str(choice.value) for choice in spec.choices)


_SPECS = {"colposcopy": {s.name: s for s in colposcopy.FIELDS}, "thyroid": {s.name: s for s in thyroid.FIELDS}}
_KIND_TYPES = {"choice": CATEGORY, "multiple_choice": STRING, "boolean": BOOLEAN, "integer": INTEGER, "number": NUMBER}


@dataclass(frozen=True)
class ValueColumn:
    """One field of a signed read's values, flattened into reads.csv."""

    column: str
    key: str  # the key in Read.values
    form: str  # colposcopy, thyroid or both
    spec: str = ""  # the form field it comes from (empty: computed at signing)
    type: str = ""
    description: str = ""

    def definition(self) -> Column:
        forms = ("colposcopy", "thyroid") if self.form == "both" else (self.form,)
        spec = _SPECS[forms[0]].get(self.spec) if self.spec else None
        kind = self.type or (_KIND_TYPES[spec.kind] if spec is not None else STRING)
        description = self.description or (spec.label if spec is not None else self.column)
        if spec is not None and spec.min_value is not None and spec.max_value is not None:
            description += f" ({spec.min_value:g}–{spec.max_value:g}{' ' + spec.unit if spec.unit else ''})"
        where = "both forms" if self.form == "both" else f"{self.form} reads only"
        allowed = _choices(spec) if spec is not None else ()
        if kind == STRING and spec is not None and spec.kind == "multiple_choice":
            description += f"; any of {', '.join(allowed)} joined by ';'"
            allowed = ()
        return Column(self.column, kind, f"{description} ({where})", allowed)


READ_VALUES: tuple[ValueColumn, ...] = (
    ValueColumn("adequacy", "adequacy", "colposcopy", "adequacy"),
    ValueColumn("inadequacy_reason", "inadequacy_reason", "colposcopy", "inadequacy_reason"),
    ValueColumn("scj_visibility", "scj_visibility", "colposcopy", "scj_visibility"),
    ValueColumn("transformation_zone", "transformation_zone", "colposcopy", "transformation_zone"),
    ValueColumn("swede_acetowhite", "swede_acetowhite", "colposcopy", "swede_acetowhite"),
    ValueColumn("swede_margins_surface", "swede_margins_surface", "colposcopy", "swede_margins_surface"),
    ValueColumn("swede_vessels", "swede_vessels", "colposcopy", "swede_vessels"),
    ValueColumn("swede_lesion_size", "swede_lesion_size", "colposcopy", "swede_lesion_size"),
    ValueColumn("swede_iodine", "swede_iodine", "colposcopy", "swede_iodine"),
    ValueColumn("swede_total", "swede_total", "colposcopy", "", INTEGER, "Swede score total (0–10, computed)"),
    ValueColumn("impression", "impression", "colposcopy", "impression"),
    ValueColumn("biopsy_recommended", "biopsy_recommended", "colposcopy", "biopsy_recommended"),
    ValueColumn("figo_stage", "figo_stage", "colposcopy", "figo_stage"),
    ValueColumn("composition", "composition", "thyroid", "composition"),
    ValueColumn("echogenicity", "echogenicity", "thyroid", "echogenicity"),
    ValueColumn("shape", "shape", "thyroid", "shape"),
    ValueColumn("margin", "margin", "thyroid", "margin"),
    ValueColumn("echogenic_foci", "echogenic_foci", "thyroid", "echogenic_foci"),
    ValueColumn("largest_diameter_mm", "largest_diameter_mm", "thyroid", "largest_diameter_mm"),
    ValueColumn("cancer_suspected", "cancer_suspected", "thyroid", "cancer_suspected"),
    ValueColumn("tnm_t", "tnm_t", "thyroid", "tnm_t"),
    ValueColumn("tnm_n", "tnm_n", "thyroid", "tnm_n"),
    ValueColumn("tnm_m", "tnm_m", "thyroid", "tnm_m"),
    ValueColumn("tirads_points", "points", "thyroid", "", INTEGER, "ACR TI-RADS points (computed)"),
    ValueColumn("tirads_level", "category", "thyroid", "tirads_category", CATEGORY, "ACR TI-RADS level (computed)"),
    ValueColumn("fna", "fna", "thyroid", "", CATEGORY, "FNA recommendation from TI-RADS level and size (computed)"),
    ValueColumn("confidence", "confidence", "both", "confidence"),
    ValueColumn("time_spent_s", "time_spent_s", "both", "time_spent_s"),
)
_FNA = ("fna", "follow-up", "none")


def _value_definitions() -> list[Column]:
    columns = []
    for value in READ_VALUES:
        column = value.definition()
        if value.column == "fna":
            column = Column(column.name, column.type, column.description, _FNA)
        columns.append(column)
    return columns


def _clinical_columns(phase: str) -> list[Column]:
    what = (
        "unaided read (before the AI second opinion; AI-assisted arm only)"
        if phase == Phase.UNAIDED
        else ("final read")
    )
    p = phase
    return [
        Column(f"{p}_category", CATEGORY, f"Clinical {what}: category on the AI's scale", CATEGORIES),
        Column(f"{p}_high_grade", BOOLEAN, f"Clinical {what}: calls high-grade disease (CIN2+ / TR4–TR5 or cancer)"),
        Column(f"{p}_tirads_points", INTEGER, f"Clinical {what}: ACR TI-RADS points (thyroid)"),
        Column(f"{p}_tirads_level", CATEGORY, f"Clinical {what}: ACR TI-RADS level (thyroid)", _THYROID_LEVELS),
        Column(f"{p}_swede_total", INTEGER, f"Clinical {what}: Swede score total (colposcopy)"),
        Column(
            f"{p}_sampling_recommended",
            BOOLEAN,
            f"Clinical {what}: biopsy (colposcopy) or FNA (thyroid TI-RADS) recommended",
        ),
        Column(f"{p}_confidence", INTEGER, f"Clinical {what}: reader's confidence (1–5)"),
        Column(f"{p}_time_spent_s", INTEGER, f"Clinical {what}: time spent as recorded by the reader, seconds"),
        Column(f"{p}_signed_at", DATETIME, f"Clinical {what}: when the current version was signed"),
    ]


_THYROID_LEVELS = ("TR1", "TR2", "TR3", "TR4", "TR5")


def participant_columns(trial: Trial, arm_mode: ArmMode, arm_labels: Mapping[str, str]) -> list[Column]:
    arm: list[Column] = []
    if arm_mode == "masked":
        arm = [Column("arm", CATEGORY, "Randomized arm, masked (labels fixed for the trial)", ("A", "B"))]
    elif arm_mode == "real":
        meaning = "; ".join(f"{arm_labels[code]} = {label}" for code, label in Arm.choices)
        arm = [Column("arm", CATEGORY, f"Randomized arm ({meaning})", tuple(sorted(set(arm_labels.values()))))]
    covariates = [
        Column(
            f"cov_{c['name']}",
            CATEGORY,
            f"Stratification covariate: {c.get('label') or c['name']}"
            + (f" ({c['indication']} only)" if c.get("indication") else ""),
            tuple(str(choice) for choice in c.get("choices", [])),
        )
        for c in trial.stratification_covariates
    ]
    return [
        Column("study_id", STRING, "Participant's study id"),
        Column("site", STRING, "Site code"),
        Column("indication", CATEGORY, "Indication", tuple(Indication.values)),
        *arm,
        Column("stratum", STRING, "Randomization stratum"),
        *covariates,
        Column("year_of_birth", INTEGER, "Year of birth"),
        Column("sex", CATEGORY, "Sex", tuple(Sex.values)),
        Column("enrolled_at", DATETIME, "Enrollment (consent recorded)"),
        Column("randomized_at", DATETIME, "Randomization"),
        Column("follow_up_stopped", BOOLEAN, "Withdrew from follow-up (data after the date are not used)"),
        Column("follow_up_stopped_on", DATE, "Date of the withdrawal from follow-up"),
        Column("ai_processing_stopped", BOOLEAN, "Withdrew from AI processing (AI columns empty)"),
        Column("ai_processing_stopped_on", DATE, "Date of the withdrawal from AI processing"),
        Column("clinical_reader", STRING, "Clinical reader, pseudonymised for this export (R1, R2, …)"),
        *_clinical_columns(Phase.UNAIDED),
        *_clinical_columns(Phase.FINAL),
        Column("ai_viewed", BOOLEAN, "The AI second opinion was displayed before the final read (sequential design)"),
        Column(
            "ai_influence",
            CATEGORY,
            "Category of the final read against the unaided read and the AI's category",
            AI_INFLUENCE,
        ),
        Column("panel_n", INTEGER, "Signed first reads of the blinded panel"),
        Column("panel_n_high_grade", INTEGER, "Panel reads calling high-grade disease"),
        Column("panel_majority_category", CATEGORY, "Category of more than half the panel reads", CATEGORIES),
        Column("adjudication_category", CATEGORY, "Category of the adjudication read", CATEGORIES),
        Column("ai_status", CATEGORY, "AI result: done if any image was judged, else the latest status", AI_STATUSES),
        Column("ai_images", INTEGER, "Images judged by the AI (done)"),
        Column("ai_category", CATEGORY, "AI category (the most severe over the images)", CATEGORIES),
        Column("ai_category_probability", NUMBER, "AI probability of that category"),
        Column("ai_high_grade_probability", NUMBER, "AI probability of high-grade (the highest over the images)"),
        Column("ai_lesion_count", INTEGER, "Lesions found by the AI (summed over the images)"),
        Column("ai_model_version", STRING, "Model name and version of the AI result (';' between several)"),
        Column("reference_n", INTEGER, "Reference standard results used"),
        Column(
            "reference_kind",
            CATEGORY,
            "Reference standard used: the latest histology, else the latest conclusive result, else the latest",
            tuple(ReferenceKind.values),
        ),
        Column(
            "reference_high_grade", BOOLEAN, "Reference: CIN2+ (cervix) or malignant (thyroid); empty if inconclusive"
        ),
        Column(
            "reference_category",
            CATEGORY,
            "Reference on the readers' three-level scale (for a weighted staging kappa): cervix negative = normal, "
            "CIN1 = low-grade, CIN2/CIN3/AIS/invasive = high-grade; thyroid histology benign = normal, "
            "NIFTP = low-grade, carcinoma = high-grade; thyroid cytology Bethesda II = normal, III–IV = low-grade, "
            "V–VI = high-grade, I (non-diagnostic) empty",
            CATEGORIES,
        ),
        Column("reference_sample_date", DATE, "Reference: biopsy, FNA or surgery date"),
        Column("reference_result_date", DATE, "Reference: date the result was reported"),
        Column("days_to_diagnosis", INTEGER, "Days from randomization to the reference result date"),
    ]


def read_columns() -> list[Column]:
    return [
        Column("study_id", STRING, "Participant's study id"),
        Column("site", STRING, "Site code"),
        Column("indication", CATEGORY, "Indication", tuple(Indication.values)),
        Column("task_kind", CATEGORY, "Reading task", TASK_KINDS),
        Column("reread", BOOLEAN, "A panel re-read after the wash-out"),
        Column("phase", CATEGORY, "Phase of the read", PHASES),
        Column("version", INTEGER, "Version of the read (above 1: corrected)"),
        Column("reader", STRING, "Reader, pseudonymised for this export (R1, R2, …)"),
        Column("form", CATEGORY, "Case report form", tuple(FormKind.values)),
        Column("opened_at", DATETIME, "When the reader opened this phase"),
        Column("signed_at", DATETIME, "When this version was signed"),
        Column("category", CATEGORY, "Category on the AI's scale", CATEGORIES),
        Column("high_grade", BOOLEAN, "Calls high-grade disease"),
        *_value_definitions(),
    ]


# --- Building the rows ------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    name: str
    columns: list[Column]
    rows: list[dict[str, Any]]

    def to_csv(self) -> bytes:
        return to_csv(self.columns, self.rows)


@dataclass(frozen=True)
class AnalysisDatasets:
    scope: ExportScope
    participants: Dataset
    reads: Dataset

    @property
    def datasets(self) -> tuple[Dataset, Dataset]:
        return (self.participants, self.reads)

    def dictionary_csv(self) -> bytes:
        return data_dictionary(self.datasets)


_KIND_ORDER: dict[str, int] = {kind: n for n, kind in enumerate(TASK_KINDS)}
_PHASE_ORDER: dict[str, int] = {phase: n for n, phase in enumerate(PHASES)}
_SEVERITY = {category: n for n, category in enumerate(CATEGORIES)}


def _local_date(moment: dt.datetime | None) -> dt.date | None:
    return timezone.localdate(moment) if moment is not None else None


def _follow_up_cutoff(participant: Participant) -> dt.date | None:
    for withdrawal in participant.withdrawals.all():
        if withdrawal.scope == WithdrawalScope.STOP_FOLLOW_UP:
            return withdrawal.withdrawn_on
    return None


def _withdrawn_on(participant: Participant, scope: str) -> dt.date | None:
    return next((w.withdrawn_on for w in participant.withdrawals.all() if w.scope == scope), None)


def _sampling(form: str, values: Mapping[str, Any]) -> bool | None:
    if form == FormKind.COLPOSCOPY:
        return values.get("biopsy_recommended")
    fna = values.get("fna")
    return None if fna is None else fna == "fna"


def _clinical_values(phase: str, read: Read | None) -> dict[str, Any]:
    p = phase
    if read is None:
        return {f"{p}_{name}": None for name in _CLINICAL_FIELDS}
    values = read.values
    return {
        f"{p}_category": interaction.read_category(read.form, values),
        f"{p}_high_grade": interaction.calls_high_grade(read.form, values),
        f"{p}_tirads_points": values.get("points") if read.form == FormKind.THYROID else None,
        f"{p}_tirads_level": values.get("category") if read.form == FormKind.THYROID else None,
        f"{p}_swede_total": values.get("swede_total") if read.form == FormKind.COLPOSCOPY else None,
        f"{p}_sampling_recommended": _sampling(read.form, values),
        f"{p}_confidence": values.get("confidence"),
        f"{p}_time_spent_s": values.get("time_spent_s"),
        f"{p}_signed_at": read.signed_at,
    }


_CLINICAL_FIELDS = (
    "category",
    "high_grade",
    "tirads_points",
    "tirads_level",
    "swede_total",
    "sampling_recommended",
    "confidence",
    "time_spent_s",
    "signed_at",
)


def _majority(categories: Sequence[str | None]) -> str | None:
    counts = Counter(c for c in categories if c is not None)
    for category, n in counts.items():
        if n * 2 > len(categories):
            return category
    return None


def _ai_values(results: Sequence[AiResult]) -> dict[str, Any]:
    """The participant's AI result from the latest result of each image."""
    empty: dict[str, Any] = {
        "ai_status": None,
        "ai_images": None,
        "ai_category": None,
        "ai_category_probability": None,
        "ai_high_grade_probability": None,
        "ai_lesion_count": None,
        "ai_model_version": None,
    }
    if not results:
        return empty
    latest: dict[int, AiResult] = {}
    for result in sorted(
        results,
        key=lambda r: (r.status in _FINISHED, r.finished_at or r.created_at, r.pk),
        reverse=True,
    ):
        latest.setdefault(result.image_id, result)
    done = [r for r in latest.values() if r.status == AiResultStatus.DONE]
    if not done:
        newest = max(latest.values(), key=lambda r: (r.status in _FINISHED, r.finished_at or r.created_at, r.pk))
        return {**empty, "ai_status": newest.status, "ai_images": 0}
    worst = max(done, key=lambda r: (_SEVERITY.get(r.category, -1), r.category_probability or 0.0, -r.image_id))
    high = [r.category_probabilities.get(interaction.HIGH_GRADE) for r in done]
    lesions = [r.measurements.get("lesion_count") for r in done]
    return {
        "ai_status": AiResultStatus.DONE,
        "ai_images": len(done),
        "ai_category": worst.category or None,
        "ai_category_probability": worst.category_probability,
        "ai_high_grade_probability": max((h for h in high if h is not None), default=None),
        "ai_lesion_count": sum(n for n in lesions if n is not None) if any(n is not None for n in lesions) else None,
        "ai_model_version": ";".join(sorted({f"{r.model_version.name} {r.model_version.version}" for r in done})),
    }


_CERVICAL_CATEGORY: dict[str, str] = {
    CervicalHistology.NEGATIVE: interaction.NORMAL,
    CervicalHistology.CIN1: interaction.LOW_GRADE,
    **{value: interaction.HIGH_GRADE for value in HIGH_GRADE_CERVICAL},
}
_THYROID_CATEGORY: dict[str, str] = {
    ThyroidHistology.BENIGN: interaction.NORMAL,
    ThyroidHistology.NIFTP: interaction.LOW_GRADE,
    **{value: interaction.HIGH_GRADE for value in MALIGNANT_THYROID},
}
_BETHESDA_CATEGORY: dict[int, str] = {
    Bethesda.II: interaction.NORMAL,
    Bethesda.III: interaction.LOW_GRADE,
    Bethesda.IV: interaction.LOW_GRADE,
    Bethesda.V: interaction.HIGH_GRADE,
    Bethesda.VI: interaction.HIGH_GRADE,
}


def reference_category(result: ReferenceStandardResult) -> str | None:
    """The result on the readers' scale (normal, low-grade, high-grade); None
    when it cannot say (non-diagnostic cytology, no value recorded). Bethesda V
    counts high-grade here though `is_high_grade` leaves it undecided."""
    if result.kind == ReferenceKind.CERVICAL_HISTOLOGY:
        return _CERVICAL_CATEGORY.get(result.cervical_histology)
    if result.kind == ReferenceKind.THYROID_HISTOLOGY:
        return _THYROID_CATEGORY.get(result.thyroid_histology)
    if result.bethesda_category is None:
        return None
    return _BETHESDA_CATEGORY.get(result.bethesda_category)


def _reference(results: Sequence[ReferenceStandardResult]) -> ReferenceStandardResult | None:
    """The latest histology, else the latest conclusive result, else the latest."""
    return max(
        results,
        key=lambda r: (r.kind != ReferenceKind.THYROID_CYTOLOGY, r.is_high_grade is not None, r.sample_date, r.pk),
        default=None,
    )


def build_datasets(scope: ExportScope) -> AnalysisDatasets:
    """Both data sets of the scope's trial, in a fixed number of queries."""
    trial = scope.trial
    participants = list(
        Participant.objects.filter(trial=trial, data_withdrawn=False, allocation__isnull=False)
        .select_related("site", "screening", "allocation")
        .prefetch_related("withdrawals", "reference_results")
        .order_by("study_id", "pk")
    )
    cutoffs = {p.pk: _follow_up_cutoff(p) for p in participants}
    reads = [
        read
        for read in Read.objects.filter(
            task__trial=trial,
            task__participant__data_withdrawn=False,
            current=True,
            status=ReadStatus.SIGNED,
        ).select_related("task")
        if not _after(read.signed_at, cutoffs.get(read.task.participant_id))
    ]
    by_participant = {p.pk: p for p in participants}
    reads = [read for read in reads if read.task.participant_id in by_participant]
    reads.sort(
        key=lambda r: (
            by_participant[r.task.participant_id].study_id,
            _KIND_ORDER[r.task.kind],
            r.task.rereading_of_id is not None,
            r.task_id,
            _PHASE_ORDER[r.phase],
        )
    )
    pseudonyms: dict[int, str] = {}
    for read in reads:
        pseudonyms.setdefault(read.reader_id, f"R{len(pseudonyms) + 1}")

    ai_by_participant: dict[int, list[AiResult]] = {}
    for result in AiResult.objects.filter(
        image__participant__trial=trial, image__participant__data_withdrawn=False, image__status__in=USABLE
    ).select_related("model_version", "image"):
        ai_by_participant.setdefault(result.image.participant_id, []).append(result)

    reads_of: dict[int, list[Read]] = {}
    for read in reads:
        reads_of.setdefault(read.task.participant_id, []).append(read)

    participant_rows = [
        _participant_row(scope, p, reads_of.get(p.pk, []), ai_by_participant.get(p.pk, []), cutoffs[p.pk], pseudonyms)
        for p in participants
    ]
    read_rows = [_read_row(by_participant[r.task.participant_id], r, pseudonyms) for r in reads]
    return AnalysisDatasets(
        scope=scope,
        participants=Dataset(
            "participants", participant_columns(trial, scope.arm_mode, scope.arm_labels), participant_rows
        ),
        reads=Dataset("reads", read_columns(), read_rows),
    )


def analysis_datasets(user: Any, trial_pk: int) -> AnalysisDatasets:
    """The data sets the user may have (analysis.selectors decide)."""
    return build_datasets(export_scope(user, trial_pk))


def _after(moment: dt.datetime | dt.date | None, cutoff: dt.date | None) -> bool:
    if cutoff is None or moment is None:
        return False
    day = _local_date(moment) if isinstance(moment, dt.datetime) else moment
    return day is not None and day > cutoff


def _participant_row(
    scope: ExportScope,
    participant: Participant,
    reads: list[Read],
    ai_results: list[AiResult],
    cutoff: dt.date | None,
    pseudonyms: Mapping[int, str],
) -> dict[str, Any]:
    allocation = participant.allocation
    screening = participant.screening
    row: dict[str, Any] = {
        "study_id": participant.study_id,
        "site": participant.site.code,
        "indication": screening.indication,
    }
    if scope.arm_mode != "none":
        row["arm"] = scope.arm_labels[allocation.arm]
    row["stratum"] = allocation.stratum
    for covariate in scope.trial.stratification_covariates:
        row[f"cov_{covariate['name']}"] = participant.covariates.get(covariate["name"])
    follow_up_on = _withdrawn_on(participant, WithdrawalScope.STOP_FOLLOW_UP)
    ai_stopped_on = _withdrawn_on(participant, WithdrawalScope.STOP_AI_PROCESSING)
    row.update(
        {
            "year_of_birth": screening.year_of_birth,
            "sex": screening.sex,
            "enrolled_at": participant.enrolled_at,
            "randomized_at": allocation.allocated_at,
            "follow_up_stopped": participant.follow_up_stopped,
            "follow_up_stopped_on": follow_up_on,
            "ai_processing_stopped": participant.ai_processing_stopped,
            "ai_processing_stopped_on": ai_stopped_on,
        }
    )
    clinical = {r.phase: r for r in reads if r.task.kind == TaskKind.CLINICAL}
    final = clinical.get(Phase.FINAL)
    any_clinical = final or clinical.get(Phase.UNAIDED)
    row["clinical_reader"] = pseudonyms[any_clinical.reader_id] if any_clinical is not None else None
    row.update(_clinical_values(Phase.UNAIDED, clinical.get(Phase.UNAIDED)))
    row.update(_clinical_values(Phase.FINAL, final))
    summary = final.interaction if final is not None else {}
    row["ai_viewed"] = summary.get("ai_viewed")
    row["ai_influence"] = summary.get("category_change")

    panel = [
        interaction.read_category(r.form, r.values)
        for r in reads
        if r.task.kind == TaskKind.PANEL and r.task.rereading_of_id is None and r.phase == Phase.FINAL
    ]
    adjudication = [r for r in reads if r.task.kind == TaskKind.ADJUDICATION and r.phase == Phase.FINAL]
    row["panel_n"] = len(panel)
    row["panel_n_high_grade"] = sum(1 for c in panel if c == interaction.HIGH_GRADE)
    row["panel_majority_category"] = _majority(panel)
    row["adjudication_category"] = (
        interaction.read_category(adjudication[0].form, adjudication[0].values) if adjudication else None
    )

    ai = _ai_values(ai_results)
    if participant.ai_processing_stopped:
        ai = {key: None for key in ai}
        row["ai_influence"] = None  # it says where the AI's category lay
    row.update(ai)

    references = [r for r in participant.reference_results.all() if not _after(r.result_date, cutoff)]
    reference = _reference(references)
    row["reference_n"] = len(references)
    row["reference_kind"] = reference.kind if reference else None
    row["reference_high_grade"] = reference.is_high_grade if reference else None
    row["reference_category"] = reference_category(reference) if reference else None
    row["reference_sample_date"] = reference.sample_date if reference else None
    row["reference_result_date"] = reference.result_date if reference else None
    randomized_on = _local_date(allocation.allocated_at)
    row["days_to_diagnosis"] = (
        (reference.result_date - randomized_on).days if reference is not None and randomized_on is not None else None
    )
    return row


def _read_row(participant: Participant, read: Read, pseudonyms: Mapping[int, str]) -> dict[str, Any]:
    task = read.task
    row: dict[str, Any] = {
        "study_id": participant.study_id,
        "site": participant.site.code,
        "indication": participant.screening.indication,
        "task_kind": task.kind,
        "reread": task.rereading_of_id is not None,
        "phase": read.phase,
        "version": read.version,
        "reader": pseudonyms[read.reader_id],
        "form": read.form,
        "opened_at": read.opened_at,
        "signed_at": read.signed_at,
        "category": interaction.read_category(read.form, read.values),
        "high_grade": interaction.calls_high_grade(read.form, read.values),
    }
    for value in READ_VALUES:
        applies = value.form in ("both", read.form)
        row[value.column] = read.values.get(value.key) if applies else None
    return row


# --- CSV -------------------------------------------------------------------------------


def format_value(value: Any) -> str:
    """One CSV field: empty for missing, 1/0, ISO dates, UTC times."""
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return ";".join(format_value(item) for item in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def to_csv(columns: Sequence[Column], rows: Iterable[Mapping[str, Any]]) -> bytes:
    """The canonical CSV bytes of a data set (the export's hash is of these)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    names = [column.name for column in columns]
    writer.writerow(names)
    for row in rows:
        writer.writerow([format_value(row[name]) for name in names])
    return buffer.getvalue().encode("utf-8")


def data_dictionary(datasets: Iterable[Dataset]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["dataset", "column", "type", "description", "allowed_values"])
    for dataset in datasets:
        for column in dataset.columns:
            writer.writerow([dataset.name, column.name, column.type, column.description, ";".join(column.allowed)])
    return buffer.getvalue().encode("utf-8")
