from django.urls import path

from ai_engine import apis

urlpatterns = [
    path("ai/operations/", apis.OperationsApi.as_view(), name="api-ai-operations"),
]
