from django.apps import AppConfig


class ImagingConfig(AppConfig):
    name = "imaging"
    verbose_name = "Imaging: upload, de-identification, storage, previews"
    default_auto_field = "django.db.models.BigAutoField"
