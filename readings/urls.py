from django.urls import path

app_name = "readings"

urlpatterns: list = []
