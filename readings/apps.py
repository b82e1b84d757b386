from django.apps import AppConfig


class ReadingsConfig(AppConfig):
    name = "readings"
    verbose_name = "Readings: reading tasks, case report forms, blinding, human–AI interaction"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from readings import signals  # noqa: F401 — connects the receivers
