"""Readings: reading tasks and worklists, the clinical case report forms
(colposcopy: IFCPC 2011 terminology and the Swede score; thyroid: ACR
TI-RADS), blinding, human–AI interaction telemetry and adjudication.

`readings.scoring` is the pure part: the forms' field descriptions, their
scores and their validation, usable and tested without a database."""
