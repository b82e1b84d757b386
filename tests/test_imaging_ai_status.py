"""Where a participant's images stand with the AI, as their images page and
GET /api/v1/participants/<pk>/images/ai-status/ give it: one state per
image in upload order (queued, running, done, abstained, failed, cancelled,
not analysed) and whether polling may stop, never what the AI said. Who may
ask is in tests/test_imaging_permissions.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.urls import reverse
from django.utils import timezone

from ai_engine import services as ai_services
from ai_engine.models import AiResult, ModelVersion
from imaging import services as imaging_services
from imaging.models import Image
from tests.conftest import actor_for, api_client, login
from tests.imaging_files import randomized, ultrasound_dicom
from trial import services as trial_services
from trial.models import Participant, Role, Trial, WithdrawalScope


def _upload(participant: Participant, coordinator: Any, name: str, data: bytes) -> Image:
    outcome = imaging_services.image_upload(actor=actor_for(coordinator), participant=participant, name=name, data=data)
    assert outcome.image is not None, outcome.reason
    return outcome.image


def _deploy(trial: Trial, admin: Any) -> ModelVersion:
    model_version = ai_services.model_register(
        actor=ai_services.AI_ENGINE,
        path=ai_services.SHIPPED_CHECKPOINT,
        name="combined-thyroid-synthetic",
        version="1.0",
        indication="thyroid",
    )
    ai_services.model_activate(actor=actor_for(admin), trial=trial, model_version=model_version, reason="For the test")
    return model_version


def _states(participant: Participant, user: Any) -> tuple[bool, list[tuple[int, str, str, bool]]]:
    response = api_client(user).get(reverse("api-participant-images-ai-status", args=[participant.pk]))
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["participant"] == participant.pk
    return body["final"], [(i["image"], i["state"], i["state_label"], i["final"]) for i in body["images"]]


def test_each_image_has_the_state_of_its_ai_work_in_upload_order(
    users: dict[str, Any],
    recruiting: Trial,
    coordinator: Any,
    enroll: Callable[..., Participant],
    block_scheme: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    participant = randomized(enroll(indication="thyroid"), coordinator)
    assert _states(participant, coordinator) == (True, [])

    # Before any model is deployed, nothing will analyse an accepted image;
    # a rejected image is never analysed.
    first = _upload(participant, coordinator, "first.dcm", ultrasound_dicom(seed=1))
    rejected = _upload(participant, coordinator, "notes.dcm", b"not a DICOM file at all")
    assert rejected.status == "rejected"
    assert _states(participant, coordinator) == (
        True,
        [
            (first.pk, "not_analysed", "Not analysed yet (no AI model deployed)", True),
            (rejected.pk, "not_analysed", "Not analysed (image rejected)", True),
        ],
    )

    # Once a model is deployed, accepted images without their result yet
    # (the sweeper queues them) are waiting: polling goes on.
    model_version = _deploy(recruiting, users[Role.TRIAL_ADMIN])
    second = _upload(participant, coordinator, "second.dcm", ultrasound_dicom(seed=2))
    assert _states(participant, coordinator) == (
        False,
        [
            (first.pk, "queued", "Queued", False),
            (rejected.pk, "not_analysed", "Not analysed (image rejected)", True),
            (second.pk, "queued", "Queued", False),
        ],
    )

    running = ai_services.ai_result_start(result=ai_services.ai_result_queue(image=first, model_version=model_version))
    failed = ai_services.ai_result_fail(
        result=ai_services.ai_result_start(
            result=ai_services.ai_result_queue(image=second, model_version=model_version)
        ),
        reason="bad-input: the stored image does not decode",
    )
    final, states = _states(participant, coordinator)
    assert not final
    assert states == [
        (first.pk, "running", "Running", False),
        (rejected.pk, "not_analysed", "Not analysed (image rejected)", True),
        (second.pk, "failed", "Failed", True),
    ]

    # A withdrawal from AI processing cancels the work not finished (a failed result could be retried).
    with django_capture_on_commit_callbacks(execute=True):
        trial_services.participant_withdraw(
            actor=actor_for(coordinator),
            participant=participant,
            withdrawn_on=timezone.localdate(),
            scope=WithdrawalScope.STOP_AI_PROCESSING,
            reason="Asked to stop AI processing",
        )
    assert AiResult.objects.get(pk=running.pk).status == "cancelled"
    final, states = _states(participant, coordinator)
    assert final
    assert states[0] == (first.pk, "cancelled", "Cancelled (withdrawn from AI processing)", True)
    assert states[2] == (second.pk, "cancelled", "Cancelled (withdrawn from AI processing)", True)
    # Nothing of the AI's work beyond its state: the failure's reason stays with the AI operations.
    body = api_client(coordinator).get(reverse("api-participant-images-ai-status", args=[participant.pk])).content
    assert failed.reason.encode() not in body and model_version.sha256.encode() not in body


def test_the_images_page_draws_the_states_and_polls_only_while_one_is_not_final(
    users: dict[str, Any],
    recruiting: Trial,
    coordinator: Any,
    enroll: Callable[..., Participant],
    block_scheme: Any,
) -> None:
    participant = randomized(enroll(indication="thyroid"), coordinator)
    page_url = reverse("imaging:participant_images", args=[participant.pk])
    page = login(coordinator).get(page_url).content.decode()
    assert 'data-final="1"' in page and "No images yet." in page
    assert 'src="/static/js/ai_analysis.js"' in page

    _deploy(recruiting, users[Role.TRIAL_ADMIN])
    image = _upload(participant, coordinator, "scan.dcm", ultrasound_dicom(seed=3))
    page = login(coordinator).get(page_url).content.decode()
    status_url = reverse("api-participant-images-ai-status", args=[participant.pk])
    assert f'data-ai-status-url="{status_url}"' in page and 'data-final="0"' in page
    assert f'<tr data-ai-image="{image.pk}" data-ai-final="0">' in page
    assert 'data-ai-state="queued">Queued</span>' in page
