from django.apps import AppConfig


class AiEngineConfig(AppConfig):
    name = "ai_engine"
    verbose_name = "AI engine: segmentation network, training, evaluation"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from ai_engine import signals  # noqa: F401 — connects the receivers
