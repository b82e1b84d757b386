"""REST API for enrollment and the audit trail, under /api/v1/.

One view per endpoint: read through a selector (scoping: 403/404) → check
that the caller may make this write there (`authorize_first`, the service's
own rule) → validate the input → call one service → serialize. A caller who
may not write gets 403/404 whatever the body, and learns nothing of the
input's rules. Domain errors become 400/403/409 with a message (see
`exception_handler`).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.contrib.auth import get_user_model
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from trial import selectors, services
from trial.actors import Actor
from trial.errors import DomainError, RuleViolation
from trial.middleware import DATABASE_ERRORS, RETRY_AFTER_SECONDS, database_unavailable_message
from trial.models import Site, Trial
from trial.permissions import Capability
from trial.serializers import (
    AuditEventSerializer,
    AuditFilterInput,
    ConsentRenewInput,
    ConsentSerializer,
    EligibilityInput,
    EnrollInput,
    ErrorSerializer,
    ParticipantSerializer,
    RecruitmentRowSerializer,
    ReferenceResultCorrectInput,
    ReferenceResultInput,
    ReferenceResultSerializer,
    ScreeningCloseInput,
    ScreeningCorrectInput,
    ScreeningCreateInput,
    ScreeningEntrySerializer,
    SiteSerializer,
    TrialSerializer,
    WithdrawalSerializer,
    WithdrawInput,
)
from trial.services.checks import authorize

logger = logging.getLogger(__name__)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DATABASE_ERRORS):
        request = context.get("request")
        logger.error(
            "Database unavailable during %s %s (request %s): %s",
            getattr(request, "method", ""),
            getattr(request, "path", ""),
            getattr(request, "request_id", ""),
            exc,
        )
        return Response(
            {"detail": database_unavailable_message(request), "code": "DatabaseUnavailable"},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    if isinstance(exc, DomainError):
        return Response(
            {"detail": exc.message, "field": exc.field, "code": type(exc).__name__},
            status=exc.status_code,
        )
    return drf_exception_handler(exc, context)


# A 400 is either a broken rule ({"detail", "field", "code"}, ErrorSerializer)
# or input that failed validation (DRF's form: each field name with its
# messages), so its schema names the first form's keys without requiring them.
INVALID_INPUT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "detail": {"type": "string"},
        "field": {"type": "string", "nullable": True},
        "code": {"type": "string"},
    },
    "additionalProperties": True,
}

ERRORS = {
    400: OpenApiResponse(INVALID_INPUT, description="Invalid input (field → messages) or a broken rule (detail)"),
    403: OpenApiResponse(ErrorSerializer, description="Your role does not permit this"),
    404: OpenApiResponse(ErrorSerializer, description="Not found within your trials and sites"),
    409: OpenApiResponse(ErrorSerializer, description="Clashes with the current state"),
}


def _validated(serializer_class: type, data: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def authorize_first(request: Request, capability: Capability, *, trial: Trial, site: Site | None) -> None:
    """Before a write's body is validated: whether the caller may make this
    write here, by the service's own rule (trial.services.checks.authorize:
    a role with the capability at this trial, and at this site or trial-wide),
    so that a caller who may not gets 403 whatever the body. The service
    checks again when it writes."""
    authorize(Actor.from_request(request), capability, trial=trial, site=site)


class _SiteInput(serializers.Serializer):
    site = serializers.IntegerField(help_text="Site id")


def _user_by_id(user_id: int, field: str) -> Any:
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    if user is None:
        raise RuleViolation(f"No active user with id {user_id}.", field=field)
    return user


def _paginated(request: Request, view: APIView, queryset: Any, serializer_class: type) -> Response:
    paginator = LimitOffsetPagination()
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(serializer_class(page, many=True).data)


# --- Tokens ----------------------------------------------------------------------------


class TokenApi(ObtainAuthToken):
    """DRF's token view, throttled: it turns throttling off, and a password
    guesser meets the anonymous rate here besides django-axes' lockout of
    the username."""

    throttle_classes = [AnonRateThrottle]

    @extend_schema(
        request=AuthTokenSerializer,
        responses={
            200: inline_serializer("TokenResponse", {"token": serializers.CharField()}),
            400: OpenApiResponse(
                inline_serializer(
                    "TokenRefusal",
                    {
                        "username": serializers.ListField(child=serializers.CharField(), required=False),
                        "password": serializers.ListField(child=serializers.CharField(), required=False),
                        "non_field_errors": serializers.ListField(child=serializers.CharField(), required=False),
                    },
                ),
                description="Missing fields, wrong credentials, or a locked-out username",
            ),
            429: OpenApiResponse(ErrorSerializer, description="Too many requests from this address"),
        },
        operation_id="auth_token",
        description="A token for a username and password (sent as `Authorization: Token <key>`).",
    )
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().post(request, *args, **kwargs)


# --- Trials, sites, recruitment --------------------------------------------------------


class TrialListApi(APIView):
    @extend_schema(responses={200: TrialSerializer(many=True)}, operation_id="trials_list")
    def get(self, request: Request) -> Response:
        trials = selectors.trials_visible(request.user).prefetch_related("protocol_versions")
        return Response(TrialSerializer(trials, many=True).data)


class TrialDetailApi(APIView):
    @extend_schema(responses={200: TrialSerializer, 404: ERRORS[404]})
    def get(self, request: Request, pk: int) -> Response:
        return Response(TrialSerializer(selectors.trial_get(request.user, pk)).data)


class SiteListApi(APIView):
    @extend_schema(responses={200: SiteSerializer(many=True), 403: ERRORS[403]})
    def get(self, request: Request) -> Response:
        selectors.require_capability(request.user, Capability.VIEW_RECRUITMENT)
        return Response(SiteSerializer(selectors.sites_for(request.user, Capability.VIEW_RECRUITMENT), many=True).data)


class RecruitmentApi(APIView):
    @extend_schema(responses={200: RecruitmentRowSerializer(many=True), 403: ERRORS[403]})
    def get(self, request: Request) -> Response:
        rows = selectors.recruitment_summary(request.user)
        return Response(RecruitmentRowSerializer(rows, many=True).data)


# --- Screening -------------------------------------------------------------------------------


class ScreeningListCreateApi(APIView):
    pagination_class = LimitOffsetPagination  # for the schema: the list is paginated (_paginated)

    @extend_schema(
        parameters=[
            OpenApiParameter("site", int, description="Only this site"),
            OpenApiParameter("status", str, description="Only this screening status"),
        ],
        responses={200: ScreeningEntrySerializer(many=True), 400: ERRORS[400], 403: ERRORS[403]},
    )
    def get(self, request: Request) -> Response:
        site = request.query_params.get("site")
        if site is not None and not site.isdigit():
            raise ValidationError({"site": "Must be a site id."})
        entries = selectors.screening_entries(
            request.user, site_id=int(site) if site else None, status=request.query_params.get("status")
        )
        return _paginated(request, self, entries, ScreeningEntrySerializer)

    @extend_schema(
        request=ScreeningCreateInput,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                location=OpenApiParameter.HEADER,
                description="A UUID; repeating a request with the same key returns the first entry",
            )
        ],
        responses={201: ScreeningEntrySerializer, **ERRORS},
    )
    def post(self, request: Request) -> Response:
        # The site is named in the body: no SCREEN anywhere → 403; then the
        # site alone, outside the caller's sites → 404; only then the rest.
        selectors.require_capability(request.user, Capability.SCREEN)
        site = selectors.site_get(request.user, _validated(_SiteInput, request.data)["site"], Capability.SCREEN)
        authorize_first(request, Capability.SCREEN, trial=site.trial, site=site)
        data = _validated(ScreeningCreateInput, request.data)
        key_header = request.headers.get("Idempotency-Key", "")
        try:
            submission_key = uuid.UUID(key_header) if key_header else None
        except ValueError as error:
            raise ValidationError({"Idempotency-Key": "Must be a UUID."}) from error
        data.pop("site")
        entry = services.screening_create(
            actor=Actor.from_request(request), site=site, submission_key=submission_key, **data
        )
        return Response(ScreeningEntrySerializer(entry).data, status=status.HTTP_201_CREATED)


class ScreeningDetailApi(APIView):
    @extend_schema(responses={200: ScreeningEntrySerializer, 403: ERRORS[403], 404: ERRORS[404]})
    def get(self, request: Request, pk: int) -> Response:
        return Response(ScreeningEntrySerializer(selectors.screening_get(request.user, pk)).data)


class ScreeningCorrectApi(APIView):
    @extend_schema(request=ScreeningCorrectInput, responses={200: ScreeningEntrySerializer, **ERRORS})
    def post(self, request: Request, pk: int) -> Response:
        entry = selectors.screening_get(request.user, pk)
        authorize_first(request, Capability.SCREEN, trial=entry.trial, site=entry.site)
        data = _validated(ScreeningCorrectInput, request.data)
        reason = data.pop("reason")
        entry = services.screening_correct(actor=Actor.from_request(request), entry=entry, changes=data, reason=reason)
        return Response(ScreeningEntrySerializer(entry).data)


class EligibilityApi(APIView):
    @extend_schema(request=EligibilityInput, responses={200: ScreeningEntrySerializer, **ERRORS})
    def post(self, request: Request, pk: int) -> Response:
        entry = selectors.screening_get(request.user, pk)
        authorize_first(request, Capability.ENROLL, trial=entry.trial, site=entry.site)
        data = _validated(EligibilityInput, request.data)
        services.eligibility_assess(
            actor=Actor.from_request(request), entry=entry, answers=data["answers"], reason=data.get("reason", "")
        )
        return Response(ScreeningEntrySerializer(selectors.screening_get(request.user, pk)).data)


class ScreeningCloseApi(APIView):
    @extend_schema(request=ScreeningCloseInput, responses={200: ScreeningEntrySerializer, **ERRORS})
    def post(self, request: Request, pk: int) -> Response:
        entry = selectors.screening_get(request.user, pk)
        authorize_first(request, Capability.ENROLL, trial=entry.trial, site=entry.site)
        data = _validated(ScreeningCloseInput, request.data)
        entry = services.screening_close(actor=Actor.from_request(request), entry=entry, **data)
        return Response(ScreeningEntrySerializer(entry).data)


class EnrollApi(APIView):
    @extend_schema(request=EnrollInput, responses={201: ParticipantSerializer, **ERRORS})
    def post(self, request: Request, pk: int) -> Response:
        entry = selectors.screening_get(request.user, pk)
        authorize_first(request, Capability.ENROLL, trial=entry.trial, site=entry.site)
        data = _validated(EnrollInput, request.data)
        participant = services.participant_enroll(
            actor=Actor.from_request(request),
            entry=entry,
            form_version=data["form_version"],
            consented_at=data["consented_at"],
            taken_by=_user_by_id(data["taken_by"], "taken_by"),
            covariates=data.get("covariates", {}),
        )
        return Response(ParticipantSerializer(participant).data, status=status.HTTP_201_CREATED)


# --- Participants -------------------------------------------------------------------------


class ParticipantListApi(APIView):
    pagination_class = LimitOffsetPagination

    @extend_schema(
        parameters=[
            OpenApiParameter("site", int, description="Only this site"),
            OpenApiParameter("search", str, description="Part of a study id"),
        ],
        responses={200: ParticipantSerializer(many=True), 400: ERRORS[400], 403: ERRORS[403]},
    )
    def get(self, request: Request) -> Response:
        site = request.query_params.get("site")
        if site is not None and not site.isdigit():
            raise ValidationError({"site": "Must be a site id."})
        queryset = selectors.participants(
            request.user, site_id=int(site) if site else None, search=request.query_params.get("search", "")
        ).prefetch_related(
            "consents__protocol_version", "consents__taken_by", "consents__recorded_by", "withdrawals__recorded_by"
        )
        return _paginated(request, self, queryset, ParticipantSerializer)


class ParticipantDetailApi(APIView):
    @extend_schema(responses={200: ParticipantSerializer, 403: ERRORS[403], 404: ERRORS[404]})
    def get(self, request: Request, pk: int) -> Response:
        return Response(ParticipantSerializer(selectors.participant_get(request.user, pk)).data)


class WithdrawApi(APIView):
    @extend_schema(request=WithdrawInput, responses={201: WithdrawalSerializer, **ERRORS})
    def post(self, request: Request, pk: int) -> Response:
        participant = selectors.participant_get(request.user, pk)
        authorize_first(request, Capability.WITHDRAW, trial=participant.trial, site=participant.site)
        data = _validated(WithdrawInput, request.data)
        withdrawal = services.participant_withdraw(actor=Actor.from_request(request), participant=participant, **data)
        return Response(WithdrawalSerializer(withdrawal).data, status=status.HTTP_201_CREATED)


class ConsentRenewApi(APIView):
    @extend_schema(request=ConsentRenewInput, responses={201: ConsentSerializer, **ERRORS})
    def post(self, request: Request, pk: int) -> Response:
        participant = selectors.participant_get(request.user, pk)
        authorize_first(request, Capability.ENROLL, trial=participant.trial, site=participant.site)
        data = _validated(ConsentRenewInput, request.data)
        consent = services.consent_renew(
            actor=Actor.from_request(request),
            participant=participant,
            form_version=data["form_version"],
            consented_at=data["consented_at"],
            taken_by=_user_by_id(data["taken_by"], "taken_by"),
        )
        return Response(ConsentSerializer(consent).data, status=status.HTTP_201_CREATED)


class ReferenceResultListCreateApi(APIView):
    @extend_schema(responses={200: ReferenceResultSerializer(many=True), 403: ERRORS[403], 404: ERRORS[404]})
    def get(self, request: Request, pk: int) -> Response:
        participant = selectors.participant_get(request.user, pk)
        results = selectors.reference_results(request.user, participant)
        return Response(ReferenceResultSerializer(results, many=True).data)

    @extend_schema(request=ReferenceResultInput, responses={201: ReferenceResultSerializer, **ERRORS})
    def post(self, request: Request, pk: int) -> Response:
        participant = selectors.participant_get(request.user, pk)
        authorize_first(request, Capability.RECORD_REFERENCE_STANDARD, trial=participant.trial, site=participant.site)
        data = _validated(ReferenceResultInput, request.data)
        result = services.reference_result_record(actor=Actor.from_request(request), participant=participant, **data)
        return Response(ReferenceResultSerializer(result).data, status=status.HTTP_201_CREATED)


class ReferenceResultCorrectApi(APIView):
    @extend_schema(request=ReferenceResultCorrectInput, responses={200: ReferenceResultSerializer, **ERRORS})
    def post(self, request: Request, pk: int, result_pk: int) -> Response:
        participant = selectors.participant_get(request.user, pk)
        result = selectors.reference_result_get(request.user, participant, result_pk)
        authorize_first(request, Capability.RECORD_REFERENCE_STANDARD, trial=participant.trial, site=participant.site)
        data = _validated(ReferenceResultCorrectInput, request.data)
        reason = data.pop("reason")
        result = services.reference_result_correct(
            actor=Actor.from_request(request), result=result, changes=data, reason=reason
        )
        return Response(ReferenceResultSerializer(result).data)


class ParticipantTimelineApi(APIView):
    @extend_schema(responses={200: AuditEventSerializer(many=True), 403: ERRORS[403], 404: ERRORS[404]})
    def get(self, request: Request, pk: int) -> Response:
        participant = selectors.participant_get(request.user, pk)
        events = selectors.participant_timeline(request.user, participant).select_related("trial", "site")
        return Response(AuditEventSerializer(events, many=True).data)


# --- Audit trail ---------------------------------------------------------------------------


class AuditEventListApi(APIView):
    pagination_class = LimitOffsetPagination

    @extend_schema(parameters=[AuditFilterInput], responses={200: AuditEventSerializer(many=True), **ERRORS})
    def get(self, request: Request) -> Response:
        data = _validated(AuditFilterInput, request.query_params)
        filters = selectors.AuditFilters(
            trial_id=data.get("trial"),
            site_id=data.get("site"),
            actor=data.get("actor", ""),
            action=data.get("action", ""),
            object_type=data.get("object_type", ""),
            object_id=data.get("object_id", ""),
            date_from=data.get("date_from"),
            date_to=data.get("date_to"),
        )
        return _paginated(request, self, selectors.audit_events(request.user, filters), AuditEventSerializer)
