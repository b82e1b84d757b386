"""Every write to the trial: each service checks its rules, writes, and
records its audit event in the same transaction. Keyword-only arguments;
domain errors (trial.errors) raised, never returned.
"""

from trial.services.enrollment import consent_renew, participant_enroll, participant_withdraw
from trial.services.reference import REFERENCE_FIELDS, reference_result_correct, reference_result_record
from trial.services.screening import (
    current_protocol,
    eligibility_assess,
    screening_close,
    screening_correct,
    screening_create,
)
from trial.services.setup import (
    membership_grant,
    membership_revoke,
    protocol_version_add,
    site_add,
    trial_create,
    trial_set_status,
)

__all__ = [
    "REFERENCE_FIELDS",
    "consent_renew",
    "current_protocol",
    "eligibility_assess",
    "membership_grant",
    "membership_revoke",
    "participant_enroll",
    "participant_withdraw",
    "protocol_version_add",
    "reference_result_correct",
    "reference_result_record",
    "screening_close",
    "screening_correct",
    "screening_create",
    "site_add",
    "trial_create",
    "trial_set_status",
]
