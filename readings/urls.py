from django.urls import path

from readings import views

app_name = "readings"

urlpatterns = [
    path("", views.worklist, name="worklist"),
    path("tasks/<int:pk>/", views.task_page, name="task"),
    path("tasks/<int:pk>/reads/<int:read_pk>/correct/", views.correct, name="correct"),
    path("oversight/", views.oversight, name="oversight"),
    path("oversight/tasks/<int:pk>/", views.oversight_task, name="oversight_task"),
    path("policy/<int:trial_pk>/", views.policy, name="policy"),
]
