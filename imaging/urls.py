from django.urls import path

from imaging import views

app_name = "imaging"

urlpatterns = [
    path("participants/<int:pk>/", views.participant_images, name="participant_images"),
    path("images/<int:pk>/", views.image_detail, name="image_detail"),
]
