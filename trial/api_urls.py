from django.urls import path

from trial import apis

urlpatterns = [
    path("auth/token/", apis.TokenApi.as_view(), name="api-token"),
    path("trials/", apis.TrialListApi.as_view(), name="api-trial-list"),
    path("trials/<int:pk>/", apis.TrialDetailApi.as_view(), name="api-trial-detail"),
    path("sites/", apis.SiteListApi.as_view(), name="api-site-list"),
    path("recruitment/", apis.RecruitmentApi.as_view(), name="api-recruitment"),
    path("screening/", apis.ScreeningListCreateApi.as_view(), name="api-screening-list"),
    path("screening/<int:pk>/", apis.ScreeningDetailApi.as_view(), name="api-screening-detail"),
    path("screening/<int:pk>/correct/", apis.ScreeningCorrectApi.as_view(), name="api-screening-correct"),
    path("screening/<int:pk>/eligibility/", apis.EligibilityApi.as_view(), name="api-eligibility"),
    path("screening/<int:pk>/close/", apis.ScreeningCloseApi.as_view(), name="api-screening-close"),
    path("screening/<int:pk>/enroll/", apis.EnrollApi.as_view(), name="api-enroll"),
    path("participants/", apis.ParticipantListApi.as_view(), name="api-participant-list"),
    path("participants/<int:pk>/", apis.ParticipantDetailApi.as_view(), name="api-participant-detail"),
    path("participants/<int:pk>/withdraw/", apis.WithdrawApi.as_view(), name="api-withdraw"),
    path("participants/<int:pk>/consents/", apis.ConsentRenewApi.as_view(), name="api-consent-renew"),
    path(
        "participants/<int:pk>/reference-results/",
        apis.ReferenceResultListCreateApi.as_view(),
        name="api-reference-results",
    ),
    path(
        "participants/<int:pk>/reference-results/<int:result_pk>/correct/",
        apis.ReferenceResultCorrectApi.as_view(),
        name="api-reference-correct",
    ),
    path("participants/<int:pk>/timeline/", apis.ParticipantTimelineApi.as_view(), name="api-participant-timeline"),
    path("audit-events/", apis.AuditEventListApi.as_view(), name="api-audit-events"),
]
