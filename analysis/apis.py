"""API of the analysis app: the trial's analysis data sets as a zip, the
same files `manage.py export_analysis_data` writes. Thin: the export scope
(analysis.selectors) decides who may and what of the arm is shown; the
export is made and audited by analysis.services."""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.views import APIView

from analysis import selectors, services
from analysis.views import export_zip_response
from imaging.apis import _IgnoreAccept
from trial.actors import Actor
from trial.apis import ERRORS
from trial.serializers import ErrorSerializer


class AnalysisDataApi(APIView):
    content_negotiation_class = _IgnoreAccept

    @extend_schema(
        summary="Download the trial's analysis data sets",
        description=(
            "A zip of participants.csv, reads.csv, data_dictionary.csv and manifest.json (the data hash, each "
            "file's SHA-256, who made it and the audit event). Each download is an export recorded in the audit "
            "trail with its data hash. Your role decides how the arms are shown (real, masked labels or none)."
        ),
        responses={
            (200, "application/zip"): OpenApiResponse(OpenApiTypes.BINARY, description="The analysis data sets"),
            401: OpenApiResponse(ErrorSerializer, description="Not logged in"),
            403: ERRORS[403],
            404: ERRORS[404],
        },
        operation_id="trial_analysis_data_export",
    )
    def get(self, request: Request, pk: int) -> HttpResponse:
        scope = selectors.export_scope(request.user, pk)
        export = services.analysis_export_create(actor=Actor.from_request(request), trial=scope.trial)
        return export_zip_response(export)
