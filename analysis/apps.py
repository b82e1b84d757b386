from django.apps import AppConfig


class AnalysisConfig(AppConfig):
    name = "analysis"
    verbose_name = "Analysis: statistics, analysis data sets, reports"
    default_auto_field = "django.db.models.BigAutoField"
