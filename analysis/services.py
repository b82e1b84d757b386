"""Writes of the analysis app: an export of the analysis data sets, recorded
in the audit trail with the SHA-256 of exactly the data handed out; and the
PDF reports (requested, built by the Celery task analysis.build_report,
stored content-addressed with their SHA-256 and data hash, downloaded),
each step that matters recorded in the audit trail."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404
from django.utils import timezone

from analysis.datasets import AnalysisDatasets, analysis_datasets
from analysis.models import Report, ReportKind, ReportStatus
from analysis.selectors import ExportScope, export_scope
from imaging.storage import read_verified, store
from trial import audit
from trial.actors import Actor
from trial.errors import NotAllowed, RuleViolation
from trial.models import AuditEvent, Trial
from trial.permissions import Capability
from trial.services.checks import authorize

DATA_FILES = ("participants.csv", "reads.csv")
DICTIONARY_FILE = "data_dictionary.csv"
MANIFEST_FILE = "manifest.json"
# A fixed time stamp in the zip entries: the same export gives the same zip.
_ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)


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

    def bundle(self) -> dict[str, bytes]:
        """Every file of the export as handed out (the command's folder, the
        download's zip): the data sets, the data dictionary and manifest.json."""
        manifest = (json.dumps(self.manifest(), indent=2) + "\n").encode("utf-8")
        return {**self.files, MANIFEST_FILE: manifest}

    def zip_bytes(self) -> bytes:
        """The bundle as a zip archive, the files at its top level."""
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, data in self.bundle().items():
                info = zipfile.ZipInfo(name, date_time=_ZIP_DATE_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                archive.writestr(info, data)
        return buffer.getvalue()

    @property
    def zip_name(self) -> str:
        return f"consilium-{self.datasets.scope.trial.code}-analysis-data-{self.data_sha256[:12]}.zip"


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


# Reports ----------------------------------------------------------------------------------------

REPORT_STEPS = {
    "datasets": (10, "Building the analysis data sets"),
    "consort": (30, "Counting the CONSORT flow"),
    "analyse": (45, "Computing the endpoints"),
    "render": (75, "Drawing the PDF"),
}


def report_scope(user: Any, trial: Trial, kind: str) -> ExportScope:
    """The export scope a report of this kind is built from; NotAllowed
    when the user may not have it. Open: EXPORT_ANALYSIS_DATA trial-wide.
    Closed: besides, the real arms (DSMB, unblinded statistician, trial
    admin; anyone with the masked labels once the trial is unblinded)."""
    if kind not in ReportKind.values:
        raise RuleViolation(f"Unknown report kind {kind!r}: choose open or closed.", field="kind")
    try:
        scope = export_scope(user, trial.pk)
    except (PermissionDenied, Http404) as error:
        raise NotAllowed("Your role does not permit analysis reports of this trial.") from error
    if kind == ReportKind.CLOSED and scope.arm_mode != "real":
        raise NotAllowed("A closed report shows results by arm: only roles that see the real arms may request it.")
    return scope


@transaction.atomic
def report_request(*, actor: Actor, trial: Trial, kind: str) -> Report:
    """Queue a report of the trial; the Celery task analysis.build_report
    builds it once this transaction commits."""
    if actor.is_system:
        raise NotAllowed("A report is requested by a named user, whose role decides what of the arm it shows.")
    scope = report_scope(actor.user, trial, kind)
    report = Report.objects.create(
        trial=trial, kind=kind, requested_by=actor.user, message="Waiting for a report worker"
    )
    audit.record(
        actor=actor,
        role=scope.role,
        action="analysis.report_request",
        obj=report,
        trial=trial,
        after={"report": report.pk, "kind": kind, "arm": scope.arm_mode},
    )
    transaction.on_commit(lambda: _enqueue(report.pk))
    return report


def _enqueue(report_pk: int) -> None:
    from analysis.tasks import build_report

    try:
        build_report.delay(report_pk)
    except Exception as error:  # the broker is down: the request must say so
        report = Report.objects.get(pk=report_pk)
        report_fail(report, f"The report could not be queued: {error}")


def report_progress(report: Report, progress: int, message: str) -> None:
    """Move a queued or running report on (progress only grows); not an
    audited event: the request and the outcome are."""
    if not 0 <= progress <= 100:
        raise ValueError(f"Progress is a percentage (got {progress}).")
    updated = Report.objects.filter(
        pk=report.pk, status__in=(ReportStatus.QUEUED, ReportStatus.RUNNING), progress__lte=progress
    ).update(status=ReportStatus.RUNNING, progress=progress, message=message[:200])
    if updated:
        report.status, report.progress, report.message = ReportStatus.RUNNING, progress, message[:200]


@transaction.atomic
def report_finish(report: Report, *, pdf: bytes, data_sha256: str) -> Report:
    """Store the PDF content-addressed and mark the report done."""
    if not pdf.startswith(b"%PDF-"):
        raise ValueError("The report is not a PDF.")
    report = Report.objects.select_for_update().get(pk=report.pk)
    if report.finished:
        raise NotAllowed(f"Report #{report.pk} is already {report.status}.")
    name, _ = store(pdf, "pdf", folder="reports")
    digest = sha256(pdf)
    report.file.name = name
    report.sha256 = digest
    report.data_hash = data_sha256
    report.status = ReportStatus.DONE
    report.progress = 100
    report.message = "Done"
    report.error = ""
    report.finished_at = timezone.now()
    report.save()
    audit.record(
        actor=Actor.system("analysis.build_report"),
        role="system",
        action="analysis.report_done",
        obj=report,
        trial=report.trial,
        after={
            "report": report.pk,
            "kind": report.kind,
            "file": name,
            "sha256": digest,
            "bytes": len(pdf),
            "data_sha256": data_sha256,
            "requested_by": report.requested_by.get_username(),
        },
    )
    return report


@transaction.atomic
def report_fail(report: Report, error: str) -> Report:
    """Mark a report failed, with the reason shown to the requester."""
    report = Report.objects.select_for_update().get(pk=report.pk)
    if report.finished:
        return report
    report.status = ReportStatus.FAILED
    report.error = error[:4000]
    report.message = "Failed"
    report.finished_at = timezone.now()
    report.save()
    audit.record(
        actor=Actor.system("analysis.build_report"),
        role="system",
        action="analysis.report_failed",
        obj=report,
        trial=report.trial,
        after={"report": report.pk, "kind": report.kind, "error": report.error},
    )
    return report


@transaction.atomic
def report_download(*, actor: Actor, report: Report) -> bytes:
    """The PDF of a done report, verified against its SHA-256, and the
    download recorded. NotAllowed for one who may not see the report."""
    scope = report_scope(actor.user, report.trial, report.kind)
    if report.status != ReportStatus.DONE or not report.file.name:
        raise NotAllowed(f"Report #{report.pk} is not ready.")
    data = read_verified(report.file.name, report.sha256)
    audit.record(
        actor=actor,
        role=scope.role,
        action="analysis.report_download",
        obj=report,
        trial=report.trial,
        after={"report": report.pk, "kind": report.kind, "sha256": report.sha256, "data_sha256": report.data_hash},
    )
    return data
