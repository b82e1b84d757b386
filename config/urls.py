from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path
from django.views import defaults
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from trial.admin import trial_admin_site

urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", trial_admin_site.urls),
    path("api/v1/", include("trial.api_urls")),
    path("api/v1/", include("randomization.api_urls")),
    path("api/v1/", include("imaging.api_urls")),
    path("api/v1/", include("ai_engine.api_urls")),
    path("api/v1/", include("readings.api_urls")),
    path("api/v1/", include("analysis.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("randomization/", include("randomization.urls")),
    path("imaging/", include("imaging.urls")),
    path("ai/", include("ai_engine.urls")),
    path("readings/", include("readings.urls")),
    path("analysis/", include("analysis.urls")),
    path("", include("trial.urls")),
]

admin.site.site_header = "Consilium administration"


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """A URL that names no endpoint: JSON under /api/ (as the API's own
    404s, which its schema documents), the site's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found.", "code": "NotFound"}, status=404)
    return defaults.page_not_found(request, exception)


handler404 = not_found
