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


_READ_ENROLLMENT = {Capability.VIEW_RECRUITMENT, Capability.VIEW_PARTICIPANTS}

ROLE_CAPABILITIES: dict[str, frozenset[Capability]] = {
    Role.COORDINATOR: frozenset(
        _READ_ENROLLMENT
        | {
            Capability.VIEW_REFERENCE_STANDARD,
            Capability.SCREEN,
            Capability.ENROLL,
            Capability.WITHDRAW,
            Capability.RECORD_REFERENCE_STANDARD,
        }
    ),
    # Clinical readers see their site's participants but not the reference
    # standard: knowing the histology would bias the clinical read.
    Role.CLINICIAN_READER: frozenset(_READ_ENROLLMENT),
    # The independent panel sees nothing of enrollment: only its worklist.
    Role.BLINDED_READER: frozenset(),
    Role.PATHOLOGIST: frozenset(
        _READ_ENROLLMENT | {Capability.VIEW_REFERENCE_STANDARD, Capability.RECORD_REFERENCE_STANDARD}
    ),
    Role.STATISTICIAN_BLINDED: frozenset(_READ_ENROLLMENT | {Capability.VIEW_REFERENCE_STANDARD}),
    Role.STATISTICIAN_UNBLINDED: frozenset(_READ_ENROLLMENT | {Capability.VIEW_REFERENCE_STANDARD}),
    Role.DSMB: frozenset(_READ_ENROLLMENT | {Capability.VIEW_REFERENCE_STANDARD}),
    Role.MONITOR: frozenset(_READ_ENROLLMENT | {Capability.VIEW_REFERENCE_STANDARD, Capability.VIEW_AUDIT}),
    Role.TRIAL_ADMIN: frozenset(
        _READ_ENROLLMENT | {Capability.VIEW_REFERENCE_STANDARD, Capability.VIEW_AUDIT, Capability.MANAGE_TRIAL}
    ),
}


def role_can(role: str, capability: Capability) -> bool:
    return capability in ROLE_CAPABILITIES.get(role, frozenset())
