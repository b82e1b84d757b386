from django.urls import path

from analysis import views

app_name = "analysis"

urlpatterns = [
    path("reports/", views.reports, name="reports"),
    path("reports/<int:pk>/status/", views.report_status, name="report_status"),
    path("trials/<int:pk>/analysis-data.zip", views.data_download, name="data_download"),
    path("reports/<int:pk>/download/", views.report_download, name="report_download"),
]
