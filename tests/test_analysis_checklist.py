"""The CONSORT-AI checklist of a report (analysis.checklist): the items the
platform fills in from a small trial's database, pooled in an open report,
in a constant number of queries."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import connection
from django.test.utils import CaptureQueriesContext

from ai_engine.models import AiResult, AiResultStatus, TrialModel
from analysis import endpoints
from analysis.checklist import consort_ai_checklist
from analysis.datasets import build_datasets
from analysis.results import ChecklistItem
from analysis.selectors import ExportScope
from imaging import services as imaging_services
from randomization.models import Arm
from tests.conftest import actor_for
from tests.reading_fixtures import Case
from tests.test_analysis_endpoints import FLOW, read_clinical
from trial.models import ProtocolVersion, Role, Trial

ITEMS = ("1a,b(i)", "2a(i)", "4a(i)", "4a(ii)", "4b", "5(i)", "5(ii)", "5(iii)", "5(iv)", "5(v)", "5(vi)", "19", "25")


def by_item(items: list[ChecklistItem]) -> dict[str, ChecklistItem]:
    return {item.item: item for item in items}


def test_the_checklist_is_filled_from_the_trials_data(
    make_case: Callable[..., Case], users: dict[str, Any], recruiting: Trial, coordinator: Any
) -> None:
    clinician = users[Role.CLINICIAN_READER]
    ai = make_case(Arm.AI_ASSISTED, images=("grey",), ai=True)
    specialist = make_case(Arm.SPECIALIST_ONLY, images=("grey",), ai=False)
    read_clinical(clinician, ai)
    read_clinical(clinician, specialist)
    # The model is deployed: the specialist's image was queued; the model abstains on it.
    AiResult.objects.filter(image__in=specialist.images).update(
        status=AiResultStatus.ABSTAINED, reason="No thyroid in view"
    )
    rejected = imaging_services.image_upload(
        actor=actor_for(coordinator), participant=specialist.participant, name="notes.png", data=b"not an image"
    )
    assert rejected.status == "rejected" and rejected.reason

    real = ExportScope(recruiting, Role.DSMB, "real", {code: code for code in Arm.values})
    datasets = build_datasets(real)
    closed = endpoints.analyse(datasets, closed=True, consort=FLOW)
    with CaptureQueriesContext(connection) as queries:
        items = consort_ai_checklist(recruiting, closed)
    assert [item.item for item in items] == list(ITEMS)
    found = by_item(items)

    for unfilled in ("1a,b(i)", "25"):
        assert not found[unfilled].filled and found[unfilled].text
    model = TrialModel.objects.get(trial=recruiting, active=True).model_version
    assert found["2a(i)"].filled and f"{model.name} {model.version}" in found["2a(i)"].text
    assert (model.intended_use.strip() or "no intended use recorded") in found["2a(i)"].text
    protocol = ProtocolVersion.objects.get(trial=recruiting)
    assert found["4a(i)"].filled and f"protocol v{protocol.version}" in found["4a(i)"].text
    for criterion in protocol.eligibility_criteria:
        assert criterion["text"] in found["4a(i)"].text
    gate = found["4a(ii)"].text
    assert "3 images received; 1 rejected at upload" in gate
    assert f"{rejected.reason} (1)" in gate
    assert "the AI abstained on 1 images (No thyroid in view (1))" in gate
    assert found["5(iii)"].filled and "No thyroid in view (1)" in found["5(iii)"].text
    assert found["5(i)"].filled and f"(sha256 {model.sha256}): 1 images" in found["5(i)"].text
    assert found["5(ii)"].filled and "accepted images by kind: ultrasound 2" in found["5(ii)"].text
    assert "viewed before 1 of 2 signed final clinical reads (1 displays in all)" in found["5(iv)"].text
    assert "contour (1 reads)" in found["5(v)"].text
    assert found["5(vi)"].filled
    assert "differed from the unaided one in 1 participants" in found["5(vi)"].text
    assert "towards the reference standard in 0" in found["5(vi)"].text  # no reference result recorded
    errors = {"false negative": 0, "false positive": 0}
    for case in closed.errors:
        errors[case.kind] += 1
    assert found["19"].filled
    assert f"false negatives {errors['false negative']}, false positives {errors['false positive']}" in (
        found["19"].text
    )
    small = len(queries)

    # More participants, the same number of queries; an open analysis names no arm.
    make_case(Arm.AI_ASSISTED, images=("grey",), ai=False)
    pooled = endpoints.analyse(build_datasets(real), closed=False, consort=FLOW)
    with CaptureQueriesContext(connection) as queries:
        open_items = consort_ai_checklist(recruiting, pooled)
    assert len(queries) == small <= 7
    assert not by_item(open_items)["19"].filled
    assert "4 images received" in by_item(open_items)["4a(ii)"].text
    for item in open_items:
        for word in (*Arm.values, *(str(label) for label in Arm.labels)):
            assert word not in item.text, (item.item, word)


def test_without_reads_nor_results_the_data_items_say_so(recruiting: Trial) -> None:
    scope = ExportScope(recruiting, Role.STATISTICIAN_BLINDED, "none", {})
    analysis = endpoints.analyse(build_datasets(scope), closed=False, consort=FLOW)
    found = by_item(consort_ai_checklist(recruiting, analysis))
    assert found["2a(i)"].text == "no model is active for this trial"
    assert not found["5(i)"].filled and found["5(i)"].text == "no finished AI result yet"
    assert not found["5(ii)"].filled
    assert not found["5(vi)"].filled
    assert "viewed before 0 of 0 signed final clinical reads" in found["5(iv)"].text
