from django.apps import AppConfig


class RandomizationConfig(AppConfig):
    name = "randomization"
    verbose_name = "Randomization, allocation and unblinding"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from randomization import signals  # noqa: F401 — connects the receivers
