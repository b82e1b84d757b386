"""The CONSORT-AI checklist (Liu et al., Nat Med 2020;26:1364–1374) of a
trial's report: for each extension item, what the platform can write from
the trial's data ("filled"), or what the authors must still add.

`consort_ai_checklist` reads the database in a constant number of queries
(the active models, the protocol, the images, the imaging studies' devices,
the AI results, the final clinical reads' interaction logs) and the
analysis it accompanies. Every count is pooled over the arms, so an open
report's checklist reveals no arm; only item 19 (the AI's errors, which
are by arm) waits for the closed report.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from django.db.models import Count

from ai_engine.models import AiResult, AiResultStatus, TrialModel
from analysis.results import ChecklistItem, TrialAnalysis
from imaging.models import Image, ImageStatus, ImagingStudy
from readings.models import Phase, Read, ReadStatus, TaskKind
from trial.models import ProtocolVersion, Trial

TOP_REASONS = 5


def _reasons(counts: Iterable[tuple[str, int]]) -> str:
    """'reason (n); …', most frequent first, at most TOP_REASONS."""
    merged: Counter[str] = Counter()
    for reason, n in counts:
        merged[reason.strip() or "no reason recorded"] += n
    shown = [f"{reason} ({n})" for reason, n in merged.most_common(TOP_REASONS)]
    rest = len(merged) - len(shown)
    return "; ".join(shown) + (f"; {rest} other reasons" if rest > 0 else "")


def _models(trial: Trial) -> str:
    deployments = list(
        TrialModel.objects.filter(trial=trial, active=True).select_related("model_version").order_by("indication")
    )
    if not deployments:
        return "no model is active for this trial"
    parts = []
    for deployment in deployments:
        model = deployment.model_version
        use = model.intended_use.strip() or "no intended use recorded in the model card"
        parts.append(f"{deployment.indication}: {model.name} {model.version} — {use}")
    return " | ".join(parts)


def _protocol(trial: Trial) -> tuple[bool, str]:
    protocol = ProtocolVersion.objects.filter(trial=trial).order_by("-effective_date", "-id").first()
    if protocol is None:
        return False, "no protocol version is recorded on the platform: give the eligibility criteria"
    criteria = [
        f"{c.get('code', '?')} ({c.get('kind', '?')}"
        + (f", {c['indication']}" if c.get("indication") else "")
        + f"): {c.get('text', '')}"
        for c in protocol.eligibility_criteria
    ]
    listed = "; ".join(criteria) if criteria else "no criteria recorded"
    return True, f"protocol v{protocol.version} (effective {protocol.effective_date:%Y-%m-%d}): {listed}"


def consort_ai_checklist(trial: Trial, analysis: TrialAnalysis) -> list[ChecklistItem]:
    """The CONSORT-AI extension items for this trial's report, in the
    checklist's order."""
    participants = {"participant__trial": trial, "participant__data_withdrawn": False}
    images = list(
        Image.objects.filter(trial=trial, participant__data_withdrawn=False)
        .values("status", "kind", "rejection_reason")
        .annotate(n=Count("id"))
    )
    devices = list(
        ImagingStudy.objects.filter(**participants)
        .values("kind", "device_manufacturer", "device_model")
        .annotate(n=Count("id"))
    )
    ai = list(
        AiResult.objects.filter(image__trial=trial, image__participant__data_withdrawn=False)
        .values("status", "reason", "model_version__name", "model_version__version", "model_version__sha256")
        .annotate(n=Count("id"))
    )
    interactions = list(
        Read.objects.filter(
            task__trial=trial,
            task__kind=TaskKind.CLINICAL,
            task__participant__data_withdrawn=False,
            phase=Phase.FINAL,
            current=True,
            status=ReadStatus.SIGNED,
        ).values_list("interaction", flat=True)
    )

    # 4a(ii), 5(iii): the quality gate and the AI's abstentions.
    received = sum(row["n"] for row in images)
    rejected = [(row["rejection_reason"], row["n"]) for row in images if row["status"] == ImageStatus.REJECTED]
    review = sum(row["n"] for row in images if row["status"] == ImageStatus.NEEDS_REVIEW)
    n_rejected = sum(n for _, n in rejected)
    abstained = [(row["reason"], row["n"]) for row in ai if row["status"] == AiResultStatus.ABSTAINED]
    n_abstained = sum(n for _, n in abstained)
    judged = sum(row["n"] for row in ai if row["status"] == AiResultStatus.DONE)
    gate = (
        f"{received} images received; {n_rejected} rejected at upload"
        + (f" ({_reasons(rejected)})" if rejected else "")
        + f"; {review} accepted with burned-in text to review"
    )
    abstentions = f"the AI abstained on {n_abstained} images" + (f" ({_reasons(abstained)})" if abstained else "")

    # 5(i): the model versions whose results the analysis used.
    versions = Counter[str]()
    for row in ai:
        if row["status"] == AiResultStatus.DONE:
            key = (
                f"{row['model_version__name']} {row['model_version__version']} (sha256 {row['model_version__sha256']})"
            )
            versions[key] += row["n"]
    used = "; ".join(f"{key}: {n} images" for key, n in sorted(versions.items())) or "no finished AI result yet"

    # 5(ii): what images, from which devices.
    kinds = Counter[str]()
    for row in images:
        if row["status"] != ImageStatus.REJECTED:
            kinds[row["kind"] or "unknown kind"] += row["n"]
    machines = Counter[str]()
    for row in devices:
        name = " ".join(p for p in (row["device_manufacturer"], row["device_model"]) if p) or "device not recorded"
        machines[f"{row['kind']}: {name}"] += row["n"]
    acquisition = (
        "accepted images by kind: "
        + (", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) or "none")
        + "; imaging studies by device: "
        + (", ".join(f"{k} ({n})" for k, n in sorted(machines.items())) or "none")
    )

    # 5(iv), 5(v): how readers met the AI output.
    logs = [log or {} for log in interactions]
    viewed = sum(1 for log in logs if log.get("ai_viewed"))
    displays = sum(int(log.get("ai_displays") or 0) for log in logs)
    shown = Counter(what for log in logs for what in log.get("ai_displayed") or [])
    interaction = (
        "sequential reading: the clinical reader signs an unaided read, then the AI second opinion is "
        f"offered and the final read is signed; the AI output was viewed before {viewed} of {len(logs)} "
        f"signed final clinical reads ({displays} displays in all)"
    )
    output = (
        "per image the AI gives a category (normal / low-grade / high-grade) with its probabilities, a lesion "
        "mask and a lesion probability map, or an abstention with its reason; displayed to readers: "
        + (", ".join(f"{what} ({n} reads)" for what, n in sorted(shown.items())) or "nothing displayed yet")
    )

    # 5(vi): influence, pooled over the groups.
    def total(attr: str) -> int:
        return sum(int(getattr(o, attr) or 0) for o in analysis.outcomes.values())

    sequential = [o for o in analysis.outcomes.values() if o.changed_after_ai is not None]
    if sequential:
        contribution_filled = True
        contribution = (
            f"the final category differed from the unaided one in {total('changed_after_ai')} participants "
            f"(the high-grade call moved towards the reference standard in {total('changed_towards_reference')}, "
            f"away from it in {total('changed_away_from_reference')})"
        )
    else:
        contribution_filled = False
        contribution = (
            "no participant has both an unaided and a final clinical read yet: describe how the output was used"
        )

    # 19: the AI's errors (closed report only).
    if analysis.closed:
        errors = Counter(case.kind for case in analysis.errors)
        performance = (
            f"AI false negatives {errors['false negative']}, false positives {errors['false positive']} "
            "(listed with their images in the AI error analysis); their review is for the authors"
        )
    else:
        performance = "the AI's errors are by arm: they are counted and listed in the closed report"

    protocol_filled, protocol_text = _protocol(trial)
    return [
        ChecklistItem(
            "1a,b(i)",
            "AI in the title and abstract",
            False,
            "say that the intervention involves AI and name the type of model",
        ),
        ChecklistItem("2a(i)", "Intended use of the AI", True, _models(trial)),
        ChecklistItem("4a(i)", "Participant eligibility", protocol_filled, protocol_text),
        ChecklistItem("4a(ii)", "Input data eligibility", True, f"{gate}; {abstentions}"),
        ChecklistItem(
            "4b",
            "Integration setting",
            True,
            "the AI runs on the platform on every accepted image; where the clinical reader gets the AI second "
            "opinion, it is shown only after the unaided read is signed, and otherwise it stays hidden from the "
            "reader (shadow mode); panel readers read blinded to the arm, the AI output, the other reads and the "
            "reference standard",
        ),
        ChecklistItem("5(i)", "AI version", judged > 0, used),
        ChecklistItem("5(ii)", "Input data acquisition", received > 0, acquisition),
        ChecklistItem(
            "5(iii)",
            "Poor-quality input",
            True,
            f"images failing the upload checks are rejected with a reason ({n_rejected}); {abstentions}; "
            "an abstention is shown to the reader as such, with no category",
        ),
        ChecklistItem("5(iv)", "Human–AI interaction", True, interaction),
        ChecklistItem("5(v)", "AI output", True, output),
        ChecklistItem("5(vi)", "How the AI output contributed", contribution_filled, contribution),
        ChecklistItem("19", "Performance errors", analysis.closed, performance),
        ChecklistItem(
            "25",
            "Access to the AI code and algorithm",
            False,
            "state whether and how the AI intervention and its code can be accessed, and any restrictions",
        ),
    ]
