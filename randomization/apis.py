"""REST API of randomization, under /api/v1/.

One view per endpoint, as in trial.apis: read through a selector
(trial.selectors scopes the participant, randomization.selectors decides what
of an arm, a scheme or the balance the caller may see) → check the write is
permitted (trial.apis.authorize_first) → validate → one service → serialize.
Domain errors become 400/403/409 with their message
(trial.apis.exception_handler).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from randomization import selectors, services
from randomization.models import RandomizationScheme, SchemeStatus
from randomization.serializers import (
    AllocationStatusSerializer,
    BalanceSerializer,
    RandomizationSerializer,
    SchemeConfigureInput,
    SchemeSerializer,
    TableImportSerializer,
    TableUploadInput,
    UnblindingSerializer,
    UnblindInput,
    allocation_status,
)
from trial import selectors as trial_selectors
from trial.actors import Actor
from trial.apis import ERRORS, _paginated, _validated, authorize_first
from trial.errors import RuleViolation
from trial.models import Participant, ProtocolVersion, Trial
from trial.permissions import Capability

# --- Participants ------------------------------------------------------------------------


class RandomizeApi(APIView):
    @extend_schema(
        request=None,
        responses={
            201: OpenApiResponse(RandomizationSerializer, description="Randomized now"),
            200: OpenApiResponse(RandomizationSerializer, description="Already randomized: the same allocation"),
            **ERRORS,
        },
        description="Allocate an enrolled participant, exactly once. A repeated request returns the first "
        "allocation with status 200.",
    )
    def post(self, request: Request, pk: int) -> Response:
        participant = trial_selectors.participant_get(request.user, pk)
        result = services.participant_randomize(actor=Actor.from_request(request), participant=participant)
        body = {
            "allocation": result.allocation,
            "view": selectors.arm_view(request.user, result.allocation),
            "created": result.created,
            "warnings": result.warnings,
        }
        return Response(
            RandomizationSerializer(body).data, status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
        )


class AllocationApi(APIView):
    @extend_schema(responses={200: AllocationStatusSerializer, 403: ERRORS[403], 404: ERRORS[404]})
    def get(self, request: Request, pk: int) -> Response:
        participant = trial_selectors.participant_get(request.user, pk)
        allocation, view = selectors.allocation_of(request.user, participant)
        return Response(AllocationStatusSerializer(allocation_status(allocation, view)).data)


def _allocation_to_unblind(request: Request, participant: Participant) -> Any:
    allocation, _ = selectors.allocation_of(request.user, participant)
    if allocation is None:
        raise RuleViolation(f"{participant.study_id} has not been randomized; there is no arm to reveal.")
    return allocation


class UnblindApi(APIView):
    @extend_schema(request=UnblindInput, responses={201: UnblindingSerializer, **ERRORS})
    def post(self, request: Request, pk: int) -> Response:
        participant = trial_selectors.participant_get(request.user, pk)
        # "Not permitted" before anything else: the answer then tells nothing
        # of the input's rules or of the participant's state to someone who
        # may not unblind.
        authorize_first(request, Capability.UNBLIND, trial=participant.trial, site=participant.site)
        allocation = _allocation_to_unblind(request, participant)
        data = _validated(UnblindInput, request.data)
        revealed_to = get_user_model().objects.filter(pk=data["revealed_to"], is_active=True).first()
        if revealed_to is None:
            raise RuleViolation(f"No active user with id {data['revealed_to']}.", field="revealed_to")
        unblinding = services.allocation_unblind(
            actor=Actor.from_request(request),
            allocation=allocation,
            revealed_to=revealed_to,
            reason=data["reason"],
            confirmation=data["confirmation"],
        )
        return Response(UnblindingSerializer(unblinding).data, status=status.HTTP_201_CREATED)


class UnblindingListApi(APIView):
    pagination_class = LimitOffsetPagination  # for the schema: the list is paginated (_paginated)

    @extend_schema(responses={200: UnblindingSerializer(many=True), 403: ERRORS[403]})
    def get(self, request: Request) -> Response:
        unblindings = selectors.unblindings(request.user).select_related("allocation__site")
        return _paginated(request, self, unblindings, UnblindingSerializer)


# --- Scheme set-up -----------------------------------------------------------------------


def _protocol_version(trial: Trial, pk: int | None) -> ProtocolVersion | None:
    if pk is None:
        return None
    protocol = trial.protocol_versions.filter(pk=pk).first()
    if protocol is None:
        raise RuleViolation(f"Trial {trial.code} has no protocol version with id {pk}.", field="protocol_version")
    return protocol


def _draft(schemes: Any) -> RandomizationScheme:
    draft = schemes.filter(status=SchemeStatus.DRAFT).first()
    if draft is None:
        raise RuleViolation("There is no draft randomization scheme; configure one first.")
    return draft


class SchemeListCreateApi(APIView):
    @extend_schema(
        responses={200: SchemeSerializer(many=True), 403: ERRORS[403], 404: ERRORS[404]},
        description="Every scheme version of the trial, newest first (configure and oversight roles).",
    )
    def get(self, request: Request, pk: int) -> Response:
        _, schemes = selectors.schemes(request.user, pk)
        return Response(SchemeSerializer(schemes, many=True).data)

    @extend_schema(
        request=SchemeConfigureInput,
        responses={201: SchemeSerializer, **ERRORS},
        description="Configure the next scheme version as a draft (replacing an earlier draft).",
    )
    def post(self, request: Request, pk: int) -> Response:
        trial, _ = selectors.schemes(request.user, pk)
        authorize_first(request, Capability.CONFIGURE_RANDOMIZATION, trial=trial, site=None)
        data = _validated(SchemeConfigureInput, request.data)
        scheme = services.scheme_configure(
            actor=Actor.from_request(request),
            trial=trial,
            method=data["method"],
            factors=data["factors"],
            protocol_version=_protocol_version(trial, data.get("protocol_version")),
            ratio=data["ratio"],
            block_sizes=data["block_sizes"],
            factor_weights=data["factor_weights"],
            imbalance_measure=data["imbalance_measure"],
            minimization_probability=data["minimization_probability"],
            low_table_warning=data["low_table_warning"],
            reason=data["reason"],
        )
        return Response(SchemeSerializer(scheme).data, status=status.HTTP_201_CREATED)


class SchemeActivateApi(APIView):
    @extend_schema(
        request=None,
        responses={200: SchemeSerializer, **ERRORS},
        description="Lock the draft scheme and commit to its seed (and table); the scheme it replaces is superseded.",
    )
    def post(self, request: Request, pk: int) -> Response:
        trial, _ = selectors.schemes(request.user, pk)
        scheme = services.scheme_activate(actor=Actor.from_request(request), trial=trial)
        return Response(SchemeSerializer(scheme).data)


class AllocationTableApi(APIView):
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        request={"multipart/form-data": TableUploadInput},
        responses={201: TableImportSerializer, **ERRORS},
        description="Load an externally generated allocation table (CSV) into the draft scheme.",
    )
    def post(self, request: Request, pk: int) -> Response:
        trial, schemes = selectors.schemes(request.user, pk)
        authorize_first(request, Capability.CONFIGURE_RANDOMIZATION, trial=trial, site=None)
        data = _validated(TableUploadInput, request.data)
        draft = _draft(schemes)
        imported = services.allocation_table_import(
            actor=Actor.from_request(request), scheme=draft, content=data["file"].read()
        )
        draft.refresh_from_db()
        body = {"scheme": draft, "rows": imported.rows, "strata": imported.strata, "sha256": imported.sha256}
        return Response(TableImportSerializer(body).data, status=status.HTTP_201_CREATED)


class BalanceApi(APIView):
    @extend_schema(responses={200: BalanceSerializer, 403: ERRORS[403], 404: ERRORS[404]})
    def get(self, request: Request, pk: int) -> Response:
        return Response(BalanceSerializer(selectors.balance(request.user, pk)).data)
