from django.urls import path

from readings import apis

urlpatterns = [
    path("readings/tasks/", apis.WorklistApi.as_view(), name="api-reading-tasks"),
    path("readings/tasks/<int:pk>/", apis.TaskApi.as_view(), name="api-reading-task"),
    path("readings/tasks/<int:pk>/start/", apis.TaskStartApi.as_view(), name="api-reading-task-start"),
    path("readings/tasks/<int:pk>/draft/", apis.ReadDraftApi.as_view(), name="api-reading-draft"),
    path("readings/tasks/<int:pk>/sign/", apis.ReadSignApi.as_view(), name="api-reading-sign"),
    path(
        "readings/tasks/<int:pk>/reads/<int:read_pk>/correct/",
        apis.ReadCorrectApi.as_view(),
        name="api-reading-correct",
    ),
    path(
        "readings/tasks/<int:pk>/images/<int:image_pk>/frames/<int:n>.png",
        apis.FrameApi.as_view(),
        name="api-reading-frame",
    ),
    path("readings/tasks/<int:pk>/ai/", apis.AiSecondOpinionApi.as_view(), name="api-reading-ai"),
    path(
        "readings/tasks/<int:pk>/ai/<int:result_pk>/<str:layer>.png",
        apis.AiLayerApi.as_view(),
        name="api-reading-ai-layer",
    ),
    path("readings/oversight/tasks/", apis.OversightTasksApi.as_view(), name="api-reading-oversight"),
    path("readings/oversight/tasks/<int:pk>/", apis.OversightTaskApi.as_view(), name="api-reading-oversight-task"),
    path("trials/<int:pk>/reading-policy/", apis.ReadingPolicyApi.as_view(), name="api-reading-policy"),
]
