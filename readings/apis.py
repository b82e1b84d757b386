"""REST API of the readings app, under /api/v1/: worklists, cases, drafts,
signatures, corrections, the frames of a case, the AI second opinion,
oversight and the reading policy.

One view per endpoint, as trial.apis: read the task through
readings.selectors (which decide blinding: 403 for another reader's task,
404 outside the reader's scope) → check the write is permitted, by the
service's own rule (services.reader_role, trial.apis.authorize_first),
before the body is validated → call one service → serialize. Errors of
a read answer {"detail", "field", "code", "errors": {field: message}}; a
save that clashes with a newer one answers 409 with the server's version
("current") so the page can merge.
"""

from __future__ import annotations

import logging
from typing import Any

from django.http import Http404, HttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param
from rest_framework.views import APIView

from ai_engine.selectors import AiResultFileMissing
from imaging.apis import FILE_ERRORS, INTEGRITY_MESSAGE, _IgnoreAccept
from imaging.storage import StoredFileCorrupt
from readings import rendering, selectors, services
from readings.models import FormKind, Phase, ReadingTask, TaskKind, TaskStatus
from readings.scoring import COLPOSCOPY_FIELDS, THYROID_FIELDS
from readings.serializers import (
    AiSecondOpinionSerializer,
    CaseSerializer,
    CorrectInput,
    DraftInput,
    OverseenTaskDetailSerializer,
    OverseenTaskSerializer,
    OversightQueryInput,
    ReadConflictSerializer,
    ReadErrorSerializer,
    ReadingPolicyInput,
    ReadingPolicySerializer,
    ReadSerializer,
    SignedReadSerializer,
    SignInput,
    WorklistSerializer,
)
from trial.actors import Actor
from trial.apis import ERRORS, _paginated, authorize_first
from trial.errors import Conflict, DomainError, RuleViolation
from trial.permissions import Capability
from trial.serializers import ErrorSerializer

logger = logging.getLogger("imaging.integrity")

FORM_FIELDS = {FormKind.COLPOSCOPY: COLPOSCOPY_FIELDS, FormKind.THYROID: THYROID_FIELDS}
AI_LAYERS = ("contour", "heatmap")

READ_ERRORS = {
    400: OpenApiResponse(ReadErrorSerializer, description="Invalid input or a broken rule, every field's message"),
    401: OpenApiResponse(ErrorSerializer, description="Not logged in"),
    403: ERRORS[403],
    404: ERRORS[404],
    409: OpenApiResponse(ReadConflictSerializer, description="Saved elsewhere since: the server's version"),
}
VIEW_ERRORS = {401: READ_ERRORS[401], 403: ERRORS[403], 404: ERRORS[404]}
_PNG: dict[Any, Any] = {(200, "image/png"): OpenApiResponse(OpenApiTypes.BINARY), **FILE_ERRORS}


class InvalidInput(RuleViolation):
    """A request whose fields have the wrong types, one message per field."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        summary = " ".join(f"{name}: {message}" for name, message in errors.items())
        super().__init__(summary, field=next(iter(errors)) if len(errors) == 1 else None)


def _first_message(messages: Any) -> str:
    if isinstance(messages, dict):
        return " ".join(f"{key}: {_first_message(value)}" for key, value in messages.items())
    if isinstance(messages, list):
        return _first_message(messages[0]) if messages else ""
    return str(messages)


def _validated(serializer_class: type, data: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    if not serializer.is_valid():
        errors = serializer.errors
        if not isinstance(errors, dict):
            errors = {"non_field_errors": errors}
        raise InvalidInput({name: _first_message(messages) for name, messages in errors.items()})
    return dict(serializer.validated_data)


class _ReadingsApi(APIView):
    """Domain errors answer as the project's handler does
    (trial.apis.exception_handler), plus every field's message under "errors"."""

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, DomainError):
            errors = getattr(exc, "errors", None) or ({exc.field: exc.message} if exc.field else {})
            return Response(
                {"detail": exc.message, "field": exc.field, "code": type(exc).__name__, "errors": errors},
                status=exc.status_code,
            )
        return super().handle_exception(exc)


def _png(data: bytes, *, filename: str, cache: str) -> HttpResponse:
    response = HttpResponse(data, content_type="image/png")
    response["Content-Disposition"] = f'inline; filename="{filename}"'
    response["Content-Length"] = str(len(data))
    response["Cache-Control"] = cache
    return response


def _integrity_failure(request: Request, what: str, error: StoredFileCorrupt) -> Response:
    logger.error(
        "Integrity check failed serving %s to reader %s, request %s: %s",
        what,
        request.user.get_username(),
        getattr(request, "request_id", ""),
        error,
    )
    return Response({"detail": INTEGRITY_MESSAGE, "code": "StoredFileCorrupt"}, status=status.HTTP_409_CONFLICT)


# --- Worklist and case ----------------------------------------------------------------


def _row(row: selectors.TaskRow, details: selectors.ClinicalDetails | None) -> dict[str, Any]:
    task = row.task
    data = {
        "id": task.pk,
        "label": row.label,
        "kind": task.kind,
        "status": task.status,
        "phase": row.phase,
        "due_at": task.due_at,
        "overdue": row.overdue,
        "available_from": task.available_from,
        "url": reverse("api-reading-task", kwargs={"pk": task.pk}),
    }
    if details is not None:
        data["study_id"] = details.study_id
        data["arm"] = details.arm
    return data


def _case(user: Any, task: ReadingTask) -> dict[str, Any]:
    """The case JSON of a task read through selectors.task_get."""
    phase = services.current_phase(task)
    images = []
    for image in selectors.case_images(user, task):
        first_frame = reverse("api-reading-frame", kwargs={"pk": task.pk, "image_pk": image.pk, "n": 0})
        images.append({**image.to_dict(), "frame_url": first_frame.removesuffix("0.png") + "{frame}.png"})
    case = {
        "id": task.pk,
        "label": selectors.case_label(task),
        "kind": task.kind,
        "status": task.status,
        "form": task.form,
        "phase": phase,
        "due_at": task.due_at,
        "fields": [spec.to_dict() for spec in FORM_FIELDS[FormKind(task.form)]],
        "signature_meaning": services.SIGNATURE_MEANINGS[(TaskKind(task.kind), Phase(phase))],
        "images": images,
        "reads": selectors.own_reads(user, task),
    }
    details = selectors.clinical_details(user, [task]).get(task.pk)
    if details is not None:
        case["sequential"] = details.sequential
        case["arm"] = details.arm
        case["ai_available"] = selectors.ai_visible(user, task)
    return CaseSerializer(case, context={"task": task}).data


class WorklistPagination(LimitOffsetPagination):
    max_limit = 200


class WorklistApi(_ReadingsApi):
    @extend_schema(
        responses={200: WorklistSerializer, **VIEW_ERRORS},
        operation_id="reading_worklist",
        description=(
            "Your reading tasks by status: panel cases in your own random order under a neutral label, "
            "the others by due date. Clinical rows add the study id and arm; panel rows show nothing of the "
            "participant. Paginated: each section holds at most `limit` rows (default 50, at most 200) from "
            "`offset`; `counts` gives every section's total, `next` and `previous` the neighbouring pages."
        ),
        parameters=[
            OpenApiParameter("limit", int, description="Rows per section (default 50, at most 200)"),
            OpenApiParameter("offset", int, description="Rows of each section to skip"),
        ],
    )
    def get(self, request: Request) -> Response:
        paginator = WorklistPagination()
        limit = paginator.get_limit(request) or WorklistPagination.max_limit
        offset = paginator.get_offset(request)
        work = selectors.worklist_page(request.user, limit=limit, offsets={name: offset for name in selectors.SECTIONS})
        details = selectors.clinical_details(
            request.user, [row.task for rows in work.sections.values() for row in rows]
        )
        data: dict[str, Any] = {
            name: [_row(row, details.get(row.pk)) for row in rows] for name, rows in work.sections.items()
        }
        url = request.build_absolute_uri()
        more = any(offset + limit < count for count in work.counts.values())
        data["next"] = replace_query_param(url, "offset", offset + limit) if more else None
        data["previous"] = (
            None
            if offset <= 0
            else remove_query_param(url, "offset")
            if offset <= limit
            else replace_query_param(url, "offset", offset - limit)
        )
        data["counts"] = work.counts
        return Response(WorklistSerializer({**data, "overdue": work.overdue}).data)


class TaskApi(_ReadingsApi):
    @extend_schema(responses={200: CaseSerializer, **VIEW_ERRORS}, operation_id="reading_task")
    def get(self, request: Request, pk: int) -> Response:
        return Response(_case(request.user, selectors.task_get(request.user, pk)))


class TaskStartApi(_ReadingsApi):
    @extend_schema(
        request=None,
        responses={200: CaseSerializer, **READ_ERRORS},
        operation_id="reading_task_start",
        description="Take the task and open its first read (again: no change).",
    )
    def post(self, request: Request, pk: int) -> Response:
        task = selectors.task_get(request.user, pk)
        services.reading_task_start(actor=Actor.from_request(request), task=task)
        return Response(_case(request.user, selectors.task_get(request.user, pk)))


# --- Drafts, signatures, corrections -----------------------------------------------------


def _conflict(request: Request, pk: int, conflict: Conflict) -> Response:
    """409 with the server's version of the read open now."""
    task = selectors.task_get(request.user, pk)
    current = selectors.own_current_read(request.user, task, services.current_phase(task))
    body: dict[str, Any] = {
        "detail": conflict.message,
        "field": conflict.field,
        "code": type(conflict).__name__,
        "errors": {},
        "current": current,
    }
    return Response(ReadConflictSerializer(body, context={"task": task}).data, status=status.HTTP_409_CONFLICT)


class ReadDraftApi(_ReadingsApi):
    @extend_schema(
        request=DraftInput,
        responses={200: ReadSerializer, **READ_ERRORS},
        operation_id="reading_draft_save",
        description="Autosave the open read. A page holding an older revision gets 409 and the server's version.",
    )
    def put(self, request: Request, pk: int) -> Response:
        task = selectors.task_get(request.user, pk)
        services.reader_role(Actor.from_request(request), task)
        data = _validated(DraftInput, request.data)
        try:
            read = services.read_save_draft(
                actor=Actor.from_request(request),
                task=task,
                phase=data["phase"],
                data=data["data"],
                revision=data["revision"],
                outline=data.get("outline"),
            )
        except Conflict as conflict:
            return _conflict(request, pk, conflict)
        return Response(ReadSerializer(read, context={"task": task}).data)


class ReadSignApi(_ReadingsApi):
    @extend_schema(
        request=SignInput,
        responses={200: SignedReadSerializer, **READ_ERRORS},
        operation_id="reading_sign",
        description=(
            "Validate, save and sign the open read with your password; the case's signature_meaning is "
            "stored with it. Signing an unaided read opens the final read."
        ),
    )
    def post(self, request: Request, pk: int) -> Response:
        task = selectors.task_get(request.user, pk)
        services.reader_role(Actor.from_request(request), task)
        data = _validated(SignInput, request.data)
        try:
            read = services.read_sign(
                actor=Actor.from_request(request),
                task=task,
                phase=data["phase"],
                data=data["data"],
                revision=data["revision"],
                password=data["password"],
                outline=data.get("outline"),
            )
        except Conflict as conflict:
            return _conflict(request, pk, conflict)
        task = selectors.task_get(request.user, pk)
        next_phase = None if task.status == TaskStatus.DONE else services.current_phase(task)
        return Response(SignedReadSerializer(read, context={"task": task, "next_phase": next_phase}).data)


class ReadCorrectApi(_ReadingsApi):
    @extend_schema(
        request=CorrectInput,
        responses={201: ReadSerializer, **READ_ERRORS},
        operation_id="reading_correct",
        description="Correct a signed read: a new signed version with the reason; the old one is kept.",
    )
    def post(self, request: Request, pk: int, read_pk: int) -> Response:
        task = selectors.task_get(request.user, pk)
        read = selectors.read_get(request.user, task, read_pk)
        services.reader_role(Actor.from_request(request), task)
        data = _validated(CorrectInput, request.data)
        new = services.read_correct(
            actor=Actor.from_request(request),
            read=read,
            data=data["data"],
            reason=data["reason"],
            password=data["password"],
            outline=data.get("outline"),
        )
        return Response(ReadSerializer(new, context={"task": task}).data, status=status.HTTP_201_CREATED)


# --- Pixels ----------------------------------------------------------------------------


class FrameApi(_ReadingsApi):
    content_negotiation_class = _IgnoreAccept

    @extend_schema(
        responses=_PNG,
        operation_id="reading_frame",
        description="One frame of an image of the case as a PNG: pixels only, no metadata.",
    )
    def get(self, request: Request, pk: int, image_pk: int, n: int) -> Response | HttpResponse:
        task = selectors.task_get(request.user, pk)
        image = selectors.case_image_get(request.user, task, image_pk)
        try:
            data = rendering.frame_png(image, n)
        except rendering.FrameOutOfRange as error:
            raise Http404(str(error)) from error
        except StoredFileCorrupt as error:
            return _integrity_failure(request, f"frame {n} of image {image.pk}", error)
        return _png(data, filename=f"case-frame-{n}.png", cache="private, max-age=3600")


def _opinion(task: ReadingTask, opinion: selectors.AiOpinion) -> dict[str, Any]:
    data = opinion.to_dict()
    for layer, available in (("contour", data["has_mask"]), ("heatmap", data["has_heatmap"])):
        if available:
            kwargs = {"pk": task.pk, "result_pk": opinion.result.pk, "layer": layer}
            data[f"{layer}_url"] = reverse("api-reading-ai-layer", kwargs=kwargs)
    return data


class AiSecondOpinionApi(_ReadingsApi):
    @extend_schema(
        responses={200: AiSecondOpinionSerializer, **VIEW_ERRORS},
        operation_id="reading_ai_second_opinion",
        description=(
            "The AI second opinion of the case's images: only for the clinical reader of an AI-assisted case, "
            "once the unaided read is signed (403 before; 404 wherever it is never shown). Each answer is "
            "recorded as a display."
        ),
    )
    def get(self, request: Request, pk: int) -> Response:
        task = selectors.task_get(request.user, pk)
        opinions = selectors.ai_second_opinion(request.user, task)
        actor = Actor.from_request(request)
        for opinion in opinions:
            services.ai_display_record(actor=actor, task=task, ai_result=opinion.result, what="suggestion")
        response = Response(AiSecondOpinionSerializer({"results": [_opinion(task, o) for o in opinions]}).data)
        response["Cache-Control"] = "no-store"
        return response


class AiLayerApi(_ReadingsApi):
    content_negotiation_class = _IgnoreAccept

    @extend_schema(
        parameters=[OpenApiParameter("layer", str, OpenApiParameter.PATH, enum=list(AI_LAYERS))],
        responses=_PNG,
        operation_id="reading_ai_layer",
        description="The AI contour or heat map as a transparent PNG at the image's size; each one served is "
        "recorded as a display.",
    )
    def get(self, request: Request, pk: int, result_pk: int, layer: str) -> Response | HttpResponse:
        if layer not in AI_LAYERS:
            raise Http404("No such layer.")
        task = selectors.task_get(request.user, pk)
        result = selectors.ai_result_for_display(request.user, task, result_pk)
        image = result.image
        draw = rendering.contour_png if layer == "contour" else rendering.heatmap_png
        try:
            data = draw(result, rows=image.rows or 0, columns=image.columns or 0)
        except AiResultFileMissing as error:
            raise Http404(f"This AI result has no {layer}.") from error
        except StoredFileCorrupt as error:
            return _integrity_failure(request, f"the AI {layer} of result {result.pk}", error)
        services.ai_display_record(actor=Actor.from_request(request), task=task, ai_result=result, what=layer)
        return _png(data, filename=f"case-{layer}.png", cache="no-store")


# --- Oversight ------------------------------------------------------------------------------


class OversightTasksApi(_ReadingsApi):
    pagination_class = LimitOffsetPagination  # for the schema: the list is paginated (_paginated)

    @extend_schema(
        parameters=[OversightQueryInput],
        responses={200: OverseenTaskSerializer(many=True), 400: READ_ERRORS[400], **VIEW_ERRORS},
        operation_id="reading_oversight_tasks",
        description="Reading tasks at the sites you oversee (monitors, trial admins), by due date.",
    )
    def get(self, request: Request) -> Response:
        query = _validated(OversightQueryInput, request.query_params)
        tasks = selectors.tasks_overseen(request.user, status=query.get("status", ""), kind=query.get("kind", ""))
        return _paginated(request, self, tasks, OverseenTaskSerializer)


class OversightTaskApi(_ReadingsApi):
    @extend_schema(
        responses={200: OverseenTaskDetailSerializer, **VIEW_ERRORS},
        operation_id="reading_oversight_task",
        description="A task with every signed version of its reads and the log of AI displays.",
    )
    def get(self, request: Request, pk: int) -> Response:
        task = selectors.task_overseen_get(request.user, pk)
        context = {
            "reads": selectors.signed_reads(request.user, task),
            "ai_displays": selectors.ai_displays_overseen(request.user, task),
        }
        return Response(OverseenTaskDetailSerializer(task, context=context).data)


# --- Reading policy -----------------------------------------------------------------------


class ReadingPolicyApi(_ReadingsApi):
    @extend_schema(responses={200: ReadingPolicySerializer, **VIEW_ERRORS}, operation_id="reading_policy")
    def get(self, request: Request, pk: int) -> Response:
        trial = selectors.policy_trial_get(request.user, pk)
        return Response(ReadingPolicySerializer(services.reading_policy_for(trial)).data)

    @extend_schema(
        request=ReadingPolicyInput,
        responses={200: ReadingPolicySerializer, **READ_ERRORS},
        operation_id="reading_policy_change",
        description="Change any of the settings. Tasks already made keep their rules; new cases follow the new ones.",
    )
    def patch(self, request: Request, pk: int) -> Response:
        trial = selectors.policy_trial_get(request.user, pk)
        authorize_first(request, Capability.CONFIGURE_READINGS, trial=trial, site=None)
        values = _validated(ReadingPolicyInput, request.data)
        policy = services.reading_policy_set(actor=Actor.from_request(request), trial=trial, **values)
        return Response(ReadingPolicySerializer(policy).data)
