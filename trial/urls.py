from django.urls import path

from trial import views

app_name = "trial"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("screening/", views.screening_list, name="screening_list"),
    path("screening/new/", views.screening_create, name="screening_create"),
    path("screening/<int:pk>/", views.screening_detail, name="screening_detail"),
    path("screening/<int:pk>/eligibility/", views.eligibility_assess, name="eligibility_assess"),
    path("screening/<int:pk>/enroll/", views.enroll, name="enroll"),
    path("screening/<int:pk>/close/", views.screening_close, name="screening_close"),
    path("screening/<int:pk>/correct/", views.screening_correct, name="screening_correct"),
    path("participants/", views.participant_list, name="participant_list"),
    path("participants/<int:pk>/", views.participant_detail, name="participant_detail"),
    path("participants/<int:pk>/withdraw/", views.withdraw, name="withdraw"),
    path("participants/<int:pk>/reference/", views.reference_record, name="reference_record"),
    path(
        "participants/<int:pk>/reference/<int:result_pk>/correct/",
        views.reference_correct,
        name="reference_correct",
    ),
    path("participants/<int:pk>/consent/", views.consent_renew, name="consent_renew"),
    path("audit/", views.audit_list, name="audit_list"),
    path("audit/export.csv", views.audit_export, name="audit_export"),
]
