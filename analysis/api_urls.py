from django.urls import path

from analysis import apis

urlpatterns = [
    path("trials/<int:pk>/analysis-data.zip", apis.AnalysisDataApi.as_view(), name="api-trial-analysis-data"),
]
