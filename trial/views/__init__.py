"""HTML pages of screening, enrollment and the audit trail.

Thin views: a form checks what was typed, one selector reads (and decides who
may see what), one service writes (and decides who may do what). A domain
error re-renders the page with its message and its HTTP status; a success
redirects (post/redirect/get).

Split by subject: `common` (what the pages share), `dashboard`, `screening`,
`participants` and `audit`. This module re-exports the views `trial.urls`
routes to, and the names other code imports from `trial.views`.
"""

from trial.views.audit import AUDIT_CSV_COLUMNS, audit_export, audit_list, csv_safe
from trial.views.common import ChangedValue, EventRow, changed_values
from trial.views.dashboard import dashboard
from trial.views.participants import (
    consent_renew,
    participant_detail,
    participant_list,
    reference_correct,
    reference_record,
    withdraw,
)
from trial.views.screening import (
    eligibility_assess,
    enroll,
    screening_close,
    screening_correct,
    screening_create,
    screening_detail,
    screening_list,
)

__all__ = [
    "AUDIT_CSV_COLUMNS",
    "ChangedValue",
    "EventRow",
    "audit_export",
    "audit_list",
    "changed_values",
    "consent_renew",
    "csv_safe",
    "dashboard",
    "eligibility_assess",
    "enroll",
    "participant_detail",
    "participant_list",
    "reference_correct",
    "reference_record",
    "screening_close",
    "screening_correct",
    "screening_create",
    "screening_detail",
    "screening_list",
    "withdraw",
]
