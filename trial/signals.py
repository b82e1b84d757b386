"""Signals other apps listen to. Sent inside the service's transaction, so a
receiver's writes commit or roll back with the change itself."""

from django.dispatch import Signal

# Sent by services.trial_set_status when a trial starts recruiting.
# Arguments: trial, actor.
recruitment_opened = Signal()

# Sent by services.participant_withdraw when a withdrawal stops AI processing
# (its own scope, or a withdrawal of data). Arguments: participant, actor,
# role, reason.
ai_processing_withdrawn = Signal()

# Sent by services.participant_withdraw when a withdrawal ends new clinical
# data (stop follow-up, or a withdrawal of data). Arguments: participant,
# actor, role, reason.
clinical_data_withdrawn = Signal()
