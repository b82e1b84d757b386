from typing import Any

from django.http import HttpRequest

from trial.permissions import Capability
from trial.selectors import has_capability, memberships_of


def navigation(request: HttpRequest) -> dict[str, Any]:
    """What the menu offers: decided from capabilities, so a link is shown
    only where the page would answer."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {
        "nav": {
            "recruitment": has_capability(user, Capability.VIEW_RECRUITMENT),
            "participants": has_capability(user, Capability.VIEW_PARTICIPANTS),
            "screen": has_capability(user, Capability.SCREEN),
            "audit": has_capability(user, Capability.VIEW_AUDIT),
            "admin": has_capability(user, Capability.MANAGE_TRIAL),
            "randomization": has_capability(user, Capability.CONFIGURE_RANDOMIZATION)
            or has_capability(user, Capability.VIEW_BALANCE),
            "unblindings": has_capability(user, Capability.VIEW_UNBLINDINGS),
            "ai_operations": has_capability(user, Capability.MANAGE_AI_MODELS),
            "reading": has_capability(user, Capability.READ_CLINICAL) or has_capability(user, Capability.READ_PANEL),
            "reading_oversight": has_capability(user, Capability.VIEW_READS),
            "reports": has_capability(user, Capability.EXPORT_ANALYSIS_DATA),
        },
        "my_memberships": memberships_of(user),
    }
