from django.urls import path

from randomization import views

app_name = "randomization"

urlpatterns = [
    path("", views.index, name="index"),
    path("trials/<int:pk>/", views.setup, name="setup"),
    path("trials/<int:pk>/configure/", views.scheme_configure, name="configure"),
    path("trials/<int:pk>/table/", views.table_upload, name="table_upload"),
    path("trials/<int:pk>/activate/", views.scheme_activate, name="activate"),
    path("participants/<int:pk>/randomize/", views.randomize, name="randomize"),
    path("participants/<int:pk>/unblind/", views.unblind, name="unblind"),
    path("unblindings/", views.unblinding_list, name="unblinding_list"),
]
