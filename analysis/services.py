"""Writes of the analysis app: an export of the analysis data sets, recorded
in the audit trail with the SHA-256 of exactly the data handed out."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from django.db import transaction

from analysis.datasets import AnalysisDatasets, analysis_datasets
from trial import audit
from trial.actors import Actor
from trial.errors import NotAllowed
from trial.models import AuditEvent, Trial
from trial.permissions import Capability
from trial.services.checks import authorize

DATA_FILES = ("participants.csv", "reads.csv")
DICTIONARY_FILE = "data_dictionary.csv"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def checksums_text(files: dict[str, bytes]) -> str:
    """`sha256sum` lines of the data files (check them with `sha256sum -c`)."""
    return "".join(f"{sha256(files[name])}  {name}\n" for name in DATA_FILES)


def data_hash(files: dict[str, bytes]) -> str:
    """The export's data hash: SHA-256 of the `sha256sum` lines of
    participants.csv and reads.csv (their canonical CSV bytes)."""
    return sha256(checksums_text(files).encode("ascii"))


@dataclass(frozen=True)
class AnalysisExport:
    datasets: AnalysisDatasets
    files: dict[str, bytes]  # participants.csv, reads.csv, data_dictionary.csv
    data_sha256: str
    event: AuditEvent

    @property
    def file_sha256(self) -> dict[str, str]:
        return {name: sha256(data) for name, data in self.files.items()}

    def manifest(self) -> dict[str, object]:
        scope = self.datasets.scope
        return {
            "trial": scope.trial.code,
            "arm": scope.arm_mode,
            "role": scope.role,
            "made_by": self.event.actor_username,
            "made_at": self.event.occurred_at.isoformat(),
            "audit_event": self.event.sequence,
            "data_sha256": self.data_sha256,
            "data_sha256_of": "the sha256sum lines of " + " and ".join(DATA_FILES),
            "files": {
                name: {"sha256": digest, "bytes": len(self.files[name])} for name, digest in self.file_sha256.items()
            },
            "rows": {"participants": len(self.datasets.participants.rows), "reads": len(self.datasets.reads.rows)},
        }


@transaction.atomic
def analysis_export_create(*, actor: Actor, trial: Trial) -> AnalysisExport:
    """Build the analysis data sets the actor may have, and record the export.
    NotAllowed without EXPORT_ANALYSIS_DATA trial-wide in this trial."""
    if actor.is_system:
        raise NotAllowed("An analysis export is made by a named user, whose role decides what of the arm it shows.")
    role = authorize(actor, Capability.EXPORT_ANALYSIS_DATA, trial=trial, site=None)
    datasets = analysis_datasets(actor.user, trial.pk)
    files = {
        "participants.csv": datasets.participants.to_csv(),
        "reads.csv": datasets.reads.to_csv(),
        DICTIONARY_FILE: datasets.dictionary_csv(),
    }
    digest = data_hash(files)
    event = audit.record(
        actor=actor,
        role=role,
        action="analysis.export",
        obj=trial,
        trial=trial,
        after={
            "data_sha256": digest,
            "files": {name: sha256(data) for name, data in files.items()},
            "arm": datasets.scope.arm_mode,
            "participants": len(datasets.participants.rows),
            "reads": len(datasets.reads.rows),
        },
    )
    return AnalysisExport(datasets=datasets, files=files, data_sha256=digest, event=event)
