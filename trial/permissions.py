"""What each role may do: the one table of capabilities.

Selectors combine it with memberships (trial and site scope); services check it
again before every write. The rule of answers: no capability in any membership
→ 403; the capability, but the object outside the member's sites → 404 (its
existence is not revealed); the object visible but the action not permitted at
its site → 403.
"""

from __future__ import annotations

from enum import StrEnum

from trial.models import Role


class Capability(StrEnum):
    VIEW_RECRUITMENT = "view_recruitment"
    VIEW_PARTICIPANTS = "view_participants"
    VIEW_REFERENCE_STANDARD = "view_reference_standard"
    SCREEN = "screen"
    ENROLL = "enroll"
    WITHDRAW = "withdraw"
    RECORD_REFERENCE_STANDARD = "record_reference_standard"
    VIEW_AUDIT = "view_audit"
    MANAGE_TRIAL = "manage_trial"
    RANDOMIZE = "randomize"
    VIEW_ARM = "view_arm"
    VIEW_ARM_MASKED = "view_arm_masked"
    VIEW_BALANCE = "view_balance"
    VIEW_UNBLINDINGS = "view_unblindings"
    CONFIGURE_RANDOMIZATION = "configure_randomization"
    UNBLIND = "unblind"
    UPLOAD_IMAGES = "upload_images"
    VIEW_IMAGES = "view_images"
    EXPORT_IMAGES = "export_images"
    VIEW_AI_MODELS = "view_ai_models"
    MANAGE_AI_MODELS = "manage_ai_models"
    READ_CLINICAL = "read_clinical"
    READ_PANEL = "read_panel"
    VIEW_READS = "view_reads"
    CONFIGURE_READINGS = "configure_readings"
    EXPORT_ANALYSIS_DATA = "export_analysis_data"


_READ_ENROLLMENT = {Capability.VIEW_RECRUITMENT, Capability.VIEW_PARTICIPANTS}
# Arms are open to those who act on them (the clinical read differs by arm)
# and to those who oversee the trial; never before an allocation is made.
_SEE_ARMS = {Capability.VIEW_ARM}
_OVERSIGHT = {Capability.VIEW_ARM, Capability.VIEW_BALANCE, Capability.VIEW_UNBLINDINGS}

ROLE_CAPABILITIES: dict[str, frozenset[Capability]] = {
    Role.COORDINATOR: frozenset(
        _READ_ENROLLMENT
        | _SEE_ARMS
        | {
            Capability.VIEW_REFERENCE_STANDARD,
            Capability.SCREEN,
            Capability.ENROLL,
            Capability.WITHDRAW,
            Capability.RECORD_REFERENCE_STANDARD,
            Capability.RANDOMIZE,
            Capability.UPLOAD_IMAGES,
            Capability.VIEW_IMAGES,
            Capability.VIEW_AI_MODELS,
        }
    ),
    # Clinical readers see their site's participants and arms (the AI second
    # opinion is shown in one arm only) but not the reference standard:
    # knowing the histology would bias the clinical read.
    Role.CLINICIAN_READER: frozenset(_READ_ENROLLMENT | _SEE_ARMS | {Capability.VIEW_IMAGES, Capability.READ_CLINICAL}),
    # The independent panel sees nothing of enrollment: only its worklist
    # (readings.selectors decide what a panel case shows: images, nothing else).
    Role.BLINDED_READER: frozenset({Capability.READ_PANEL}),
    # Reference assessors stay blind to the arm.
    Role.PATHOLOGIST: frozenset(
        _READ_ENROLLMENT | {Capability.VIEW_REFERENCE_STANDARD, Capability.RECORD_REFERENCE_STANDARD}
    ),
    # The blinded statistician sees arms only as "A"/"B" until unblinding.
    Role.STATISTICIAN_BLINDED: frozenset(
        _READ_ENROLLMENT
        | {
            Capability.VIEW_REFERENCE_STANDARD,
            Capability.VIEW_ARM_MASKED,
            Capability.VIEW_IMAGES,
            Capability.EXPORT_IMAGES,
            Capability.VIEW_AI_MODELS,
            # Analysis data sets, the arm masked as "A"/"B" (analysis.selectors).
            Capability.EXPORT_ANALYSIS_DATA,
        }
    ),
    Role.STATISTICIAN_UNBLINDED: frozenset(
        _READ_ENROLLMENT
        | {
            Capability.VIEW_REFERENCE_STANDARD,
            Capability.VIEW_IMAGES,
            Capability.EXPORT_IMAGES,
            Capability.VIEW_AI_MODELS,
            Capability.EXPORT_ANALYSIS_DATA,
        }
        | _OVERSIGHT
    ),
    Role.DSMB: frozenset(
        _READ_ENROLLMENT
        | {Capability.VIEW_REFERENCE_STANDARD, Capability.VIEW_AI_MODELS, Capability.EXPORT_ANALYSIS_DATA}
        | _OVERSIGHT
    ),
    Role.MONITOR: frozenset(
        _READ_ENROLLMENT
        | _SEE_ARMS
        | {
            Capability.VIEW_REFERENCE_STANDARD,
            Capability.VIEW_AUDIT,
            Capability.VIEW_UNBLINDINGS,
            Capability.VIEW_IMAGES,
            Capability.EXPORT_IMAGES,
            Capability.VIEW_AI_MODELS,
            Capability.VIEW_READS,
        }
    ),
    Role.TRIAL_ADMIN: frozenset(
        _READ_ENROLLMENT
        | _OVERSIGHT
        | {
            Capability.VIEW_REFERENCE_STANDARD,
            Capability.VIEW_AUDIT,
            Capability.MANAGE_TRIAL,
            Capability.CONFIGURE_RANDOMIZATION,
            Capability.UNBLIND,
            Capability.VIEW_IMAGES,
            # Which model produces the AI second opinion (CONSORT-AI 5(i)).
            Capability.VIEW_AI_MODELS,
            Capability.MANAGE_AI_MODELS,
            Capability.VIEW_READS,
            Capability.CONFIGURE_READINGS,
            Capability.EXPORT_ANALYSIS_DATA,
        }
    ),
}


def role_can(role: str, capability: Capability) -> bool:
    return capability in ROLE_CAPABILITIES.get(role, frozenset())
