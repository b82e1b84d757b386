from django.urls import path

from imaging import apis

urlpatterns = [
    path("participants/<int:pk>/images/", apis.ParticipantImagesApi.as_view(), name="api-participant-images"),
    path(
        "participants/<int:pk>/images/export.zip",
        apis.ParticipantImagesExportApi.as_view(),
        name="api-participant-images-export",
    ),
    path(
        "participants/<int:pk>/images/ai-status/",
        apis.ParticipantImagesAiStatusApi.as_view(),
        name="api-participant-images-ai-status",
    ),
    path("images/<int:pk>/", apis.ImageDetailApi.as_view(), name="api-image-detail"),
    path("images/<int:pk>/preview.png", apis.ImagePreviewApi.as_view(), name="api-image-preview"),
    path("images/<int:pk>/thumbnail.png", apis.ImageThumbnailApi.as_view(), name="api-image-thumbnail"),
    path("images/<int:pk>/frames.png", apis.ImageFramesApi.as_view(), name="api-image-frames"),
    path("images/<int:pk>/file", apis.ImageFileApi.as_view(), name="api-image-file"),
]
