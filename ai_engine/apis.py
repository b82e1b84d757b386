"""REST API of the AI engine, under /api/v1/: the operations summary of the
trial admins' page (ai_engine.operations decides who sees which trial and
sites, and computes every figure; this view validates and serializes)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ai_engine import operations
from ai_engine.serializers import OperationsQueryInput, OperationsSerializer
from trial.apis import ERRORS
from trial.permissions import Capability
from trial.selectors import require_capability
from trial.serializers import ErrorSerializer


class OperationsApi(APIView):
    @extend_schema(
        parameters=[OperationsQueryInput],
        responses={
            200: OperationsSerializer,
            400: ERRORS[400],
            401: OpenApiResponse(ErrorSerializer, description="Not logged in"),
            403: ERRORS[403],
            404: ERRORS[404],
        },
        operation_id="ai_operations",
        description=(
            "The AI operations summary of one trial within your sites (trial admins): broker queue and "
            "outbox, results by status, latency, abstentions by reason, outputs per site × device × month "
            "with drift flags, workers and devices of the last hour, recent failures."
        ),
    )
    def get(self, request: Request) -> Response:
        require_capability(request.user, Capability.MANAGE_AI_MODELS)
        query = OperationsQueryInput(data=request.query_params)
        query.is_valid(raise_exception=True)
        summary = operations.operations_summary(
            request.user, trial_code=query.validated_data["trial"], window_days=query.validated_data.get("days")
        )
        return Response(OperationsSerializer(summary).data)
