from django.urls import path

from ai_engine import views

app_name = "ai_engine"

urlpatterns = [
    path("operations/", views.operations_index, name="operations_index"),
    path("operations/<slug:code>/", views.operations_page, name="operations"),
    path("results/<int:pk>/<str:kind>/", views.ai_result_file, name="ai_result_file"),
]
