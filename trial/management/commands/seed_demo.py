"""Load the demo trial: three sites, a user for every role, a stratified
permuted-block randomization scheme, the shipped (synthetic) thyroid and
colposcopy models deployed before recruitment opens, and a few dozen people in every state of
the enrollment flow (enrolled participants randomized), and a few images for
the AI second opinion: the real ultrasound files pydicom ships for thyroid
participants and synthetic colposcopy photographs for cervical ones. Their AI
jobs wait on the broker until a worker runs (`manage.py demo_server` starts
one). Idempotent: a second run changes nothing and prints the logins again.

All data are invented. Every write goes through the services, acted by the
demo users themselves, so the audit trail reads as a real one would.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import random
from pathlib import Path
from typing import Any

import numpy as np
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone
from PIL import Image as PILImage
from pydicom.data import get_testdata_file

from ai_engine import services as ai_services
from ai_engine.checkpoint import file_sha256
from ai_engine.models import ModelVersion
from ai_engine.synthetic import colposcopy_frame
from imaging import services as imaging_services
from imaging.models import Image, ImageStatus
from randomization import services as randomization_services
from trial import services
from trial.actors import Actor
from trial.demo_protocol import COVARIATES, ELIGIBILITY_CRITERIA
from trial.models import (
    Bethesda,
    CervicalHistology,
    Indication,
    Participant,
    ReferenceKind,
    Role,
    ScreeningEntry,
    Site,
    ThyroidHistology,
    Trial,
    TrialStatus,
    WithdrawalScope,
)

TRIAL_CODE = "CONSILIUM-DEMO"

SITES = [
    ("C01", "Northbridge University Hospital", "United Kingdom", 120),
    ("C02", "St Agnes Women's and Endocrine Centre", "Ireland", 100),
    ("C03", "Riverside Regional Hospital", "United Kingdom", 80),
]
# username, role, site code (None = all sites), password
DEMO_USERS = [
    ("admin", Role.TRIAL_ADMIN, None, "demo-admin-passphrase"),
    ("coordinator", Role.COORDINATOR, "C01", "demo-coordinator-passphrase"),
    ("coordinator-c02", Role.COORDINATOR, "C02", "demo-coordinator-passphrase"),
    ("coordinator-c03", Role.COORDINATOR, "C03", "demo-coordinator-passphrase"),
    ("clinician", Role.CLINICIAN_READER, "C01", "demo-clinician-passphrase"),
    ("clinician-c02", Role.CLINICIAN_READER, "C02", "demo-clinician-passphrase"),
    ("clinician-c03", Role.CLINICIAN_READER, "C03", "demo-clinician-passphrase"),
    # The blinded panel: each case is read by two of them (the default policy).
    ("reader", Role.BLINDED_READER, None, "demo-reader-passphrase"),
    ("reader-2", Role.BLINDED_READER, None, "demo-reader-passphrase"),
    ("pathologist", Role.PATHOLOGIST, None, "demo-pathologist-passphrase"),
    ("statistician", Role.STATISTICIAN_BLINDED, None, "demo-statistician-passphrase"),
    ("unblinded-statistician", Role.STATISTICIAN_UNBLINDED, None, "demo-unblinded-passphrase"),
    ("dsmb", Role.DSMB, None, "demo-dsmb-passphrase"),
    ("monitor", Role.MONITOR, None, "demo-monitor-passphrase"),
]

PARTICIPANTS_PER_SITE = 20
# Real ultrasound recordings pydicom ships (single frame, palette colour,
# JPEG 2000, a 30-frame cine loop), one per thyroid participant.
DEMO_ULTRASOUND = ["examples_rgb_color.dcm", "examples_palette.dcm", "examples_ybr_color.dcm", "examples_jpeg2k.dcm"]
# Synthetic colposcopy photographs (seed, side in pixels), one per cervical participant.
DEMO_COLPOSCOPY = [(1, 256), (2, 256)]


class Command(BaseCommand):
    help = "Load the demo trial and its images (idempotent) and print one login per role."

    def handle(self, *args: Any, **options: Any) -> None:
        if Trial.objects.filter(code=TRIAL_CODE).exists():
            self.stdout.write(f"Demo trial {TRIAL_CODE} is already loaded.")
        else:
            with transaction.atomic():
                self._load()
            self.stdout.write(self.style.SUCCESS(f"Demo trial {TRIAL_CODE} loaded."))
        self._add_images(Trial.objects.get(code=TRIAL_CODE))
        self._print_logins()

    def _print_logins(self) -> None:
        self.stdout.write("\nLogins (demo only; every password is printed here on purpose):")
        for username, role, site, password in DEMO_USERS:
            where = site or "all sites"
            self.stdout.write(f"  {Role(role).label:<34} {username:<24} {password:<30} ({where})")

    def _load(self) -> None:
        system = Actor.system("seed_demo")
        today = timezone.localdate()
        trial = services.trial_create(
            actor=system,
            code=TRIAL_CODE,
            title="AI second opinion for colposcopy and thyroid ultrasound: a randomized controlled trial (demo)",
            registry_id="ISRCTN00000000",
            indications=[Indication.CERVICAL, Indication.THYROID],
            planned_sample_size=300,
            start_date=today - dt.timedelta(days=150),
            stratification_covariates=COVARIATES,
        )
        services.protocol_version_add(
            actor=system,
            trial=trial,
            version="1.0",
            effective_date=today - dt.timedelta(days=160),
            consent_form_version="1.0",
            eligibility_criteria=ELIGIBILITY_CRITERIA,
        )
        sites = {
            code: services.site_add(
                actor=system, trial=trial, code=code, name=name, country=country, target_participants=target
            )
            for code, name, country, target in SITES
        }
        users = {}
        model = get_user_model()
        for username, role, site_code, password in DEMO_USERS:
            user = model.objects.filter(username=username).first()
            if user is None:
                user = model.objects.create_user(
                    username=username,
                    password=password,
                    is_staff=(role == Role.TRIAL_ADMIN),
                    is_superuser=(role == Role.TRIAL_ADMIN),
                )
            services.membership_grant(
                actor=system, user=user, trial=trial, role=role, site=sites[site_code] if site_code else None
            )
            users[username] = user
        admin = Actor.for_user(users["admin"], label="seed_demo")
        randomization_services.scheme_configure(
            actor=admin,
            trial=trial,
            method="permuted_blocks",
            ratio=(1, 1),
            block_sizes=[2, 4, 6],
            factors=["site", "indication"],
        )
        self._deploy_shipped_model(system, admin, trial)
        # Opening recruitment locks the scheme and commits its seed, and locks the AI model.
        trial = services.trial_set_status(
            actor=admin,
            trial=trial,
            status=TrialStatus.RECRUITING,
            reason="Ethics and regulatory approval received",
        )
        rng = random.Random(2026)
        coordinators = {"C01": users["coordinator"], "C02": users["coordinator-c02"], "C03": users["coordinator-c03"]}
        for code, site in sites.items():
            for index in range(PARTICIPANTS_PER_SITE):
                self._one_person(rng, site, coordinators[code], users["pathologist"], index, today)

    def _add_images(self, trial: Trial) -> None:
        """Upload the demo images (unless they already are), each as its
        participant's site coordinator, through the same service as the web
        upload; accepting one queues its AI job once the upload commits."""
        files = {Indication.THYROID: _ultrasound_files(), Indication.CERVICAL: _colposcopy_photos()}
        coordinators = {
            site: get_user_model().objects.get(username=username)
            for username, role, site, _ in DEMO_USERS
            if role == Role.COORDINATOR
        }
        added = present = 0
        for indication, named in files.items():
            participants = _image_candidates(trial, indication)
            if len(participants) < len(named):
                raise CommandError(
                    f"The demo trial has {len(participants)} randomized {indication} participants still in follow-up; "
                    f"{len(named)} are needed for the demo images."
                )
            for participant, (name, data) in zip(participants, named, strict=False):
                if (
                    Image.objects.filter(source_sha256=hashlib.sha256(data).hexdigest())
                    .exclude(status=ImageStatus.REJECTED)
                    .exists()
                ):
                    present += 1
                    continue
                actor = Actor.for_user(coordinators[participant.site.code], label="seed_demo")
                with transaction.atomic():
                    outcome = imaging_services.image_upload(actor=actor, participant=participant, name=name, data=data)
                    if outcome.status != imaging_services.ACCEPTED:
                        raise CommandError(
                            f"The demo image {name} for {participant} was not accepted: {outcome.reason}"
                        )
                added += 1
        if added:
            self.stdout.write(f"Demo images: {added} uploaded; their AI results are processed once a worker runs.")
        else:
            self.stdout.write(f"Demo images: all {present} already uploaded.")

    def _deploy_shipped_model(self, system: Actor, admin: Actor, trial: Trial) -> None:
        """Register the shipped checkpoints (unless they already are) and deploy
        one per indication for the AI second opinion of the demo trial."""
        uses: dict[str, str] = {
            Indication.THYROID: "Thyroid nodule segmentation on grey ultrasound frames",
            Indication.CERVICAL: "Acetowhite lesion segmentation on colposcopy photographs",
        }
        for indication, path in ai_services.SHIPPED_CHECKPOINTS.items():
            model_version = ModelVersion.objects.filter(sha256=file_sha256(path)).first()
            if model_version is None:
                model_version = ai_services.model_register(
                    actor=system,
                    path=path,
                    name=path.stem,
                    version="1.0",
                    indication=indication,
                    intended_use=(
                        f"{uses[indication]}, for exercising the platform. "
                        "Trained on synthetic images only: not for clinical use."
                    ),
                )
            ai_services.model_activate(actor=admin, trial=trial, model_version=model_version)

    def _one_person(
        self, rng: random.Random, site: Site, coordinator: Any, pathologist: Any, index: int, today: dt.date
    ) -> None:
        actor = Actor.for_user(coordinator, label="seed_demo")
        indication = Indication.CERVICAL if rng.random() < 0.55 else Indication.THYROID
        screened_on = today - dt.timedelta(days=rng.randint(10, 140))
        entry = services.screening_create(
            actor=actor,
            site=site,
            screened_on=screened_on,
            indication=indication,
            year_of_birth=screened_on.year - rng.randint(21, 74),
            sex="female" if indication == Indication.CERVICAL or rng.random() < 0.75 else "male",
        )
        # Every state of the flow appears: pending, ineligible, declined,
        # not enrolled, eligible awaiting consent, enrolled, withdrawn.
        state = index % 14
        if state == 0:
            return  # awaiting the eligibility check
        answers = {
            c["code"]: c["kind"] == "inclusion" for c in ELIGIBILITY_CRITERIA if c["indication"] in (None, indication)
        }
        if state == 1:
            answers["EXC-OTHER-TRIAL"] = True
        elif state == 2:
            answers["EXC-TREATED" if indication == Indication.CERVICAL else "EXC-THYROIDECTOMY"] = True
        services.eligibility_assess(actor=actor, entry=entry, answers=answers)
        if state in (1, 2):
            return
        if state == 3:
            services.screening_close(
                actor=actor, entry=entry, outcome="declined", reason="Prefers standard care without study procedures"
            )
            return
        if state == 4:
            services.screening_close(
                actor=actor, entry=entry, outcome="not_enrolled", reason="Did not attend the consent visit"
            )
            return
        if state == 5:
            return  # eligible, awaiting consent
        entry = ScreeningEntry.objects.get(pk=entry.pk)
        consented_at = timezone.make_aware(
            dt.datetime.combine(screened_on + dt.timedelta(days=rng.randint(0, 7)), dt.time(9 + rng.randint(0, 7), 30))
        )
        consented_at = min(consented_at, timezone.now() - dt.timedelta(hours=1))
        covariates = (
            {"hpv_status": rng.choice(["positive", "positive", "negative", "unknown"])}
            if indication == Indication.CERVICAL
            else {"nodule_size_band": rng.choice(["10-19 mm", "20-39 mm", "40+ mm"])}
        )
        participant = services.participant_enroll(
            actor=actor,
            entry=entry,
            form_version="1.0",
            consented_at=consented_at,
            taken_by=coordinator,
            covariates=covariates,
        )
        randomization_services.participant_randomize(actor=actor, participant=participant)
        enrolled_on = consented_at.date()
        if state in (6, 7, 8, 9, 10) and enrolled_on + dt.timedelta(days=14) <= today:
            self._reference_result(
                rng, participant, pathologist, enrolled_on + dt.timedelta(days=rng.randint(3, 10)), today
            )
        withdrawal_scope = {
            11: WithdrawalScope.STOP_FOLLOW_UP,
            12: WithdrawalScope.STOP_AI_PROCESSING,
            13: WithdrawalScope.WITHDRAW_DATA,
        }.get(state)
        if withdrawal_scope is not None:
            services.participant_withdraw(
                actor=actor,
                participant=participant,
                withdrawn_on=min(enrolled_on + dt.timedelta(days=5), today),
                scope=withdrawal_scope,
                reason="Participant's decision, no reason given",
            )

    def _reference_result(
        self, rng: random.Random, participant: Any, pathologist: Any, sample_date: dt.date, today: dt.date
    ) -> None:
        actor = Actor.for_user(pathologist, label="seed_demo")
        result_date = min(sample_date + dt.timedelta(days=rng.randint(2, 9)), today)
        if participant.indication == Indication.CERVICAL:
            histology = rng.choice(
                [
                    CervicalHistology.NEGATIVE,
                    CervicalHistology.CIN1,
                    CervicalHistology.CIN2,
                    CervicalHistology.CIN3,
                    CervicalHistology.INVASIVE_SQUAMOUS,
                ]
            )
            services.reference_result_record(
                actor=actor,
                participant=participant,
                kind=ReferenceKind.CERVICAL_HISTOLOGY,
                sample_date=sample_date,
                result_date=result_date,
                cervical_histology=histology,
                figo_stage="IB1" if histology == CervicalHistology.INVASIVE_SQUAMOUS else "",
            )
            return
        category = rng.choice([Bethesda.II, Bethesda.II, Bethesda.III, Bethesda.V, Bethesda.VI])
        services.reference_result_record(
            actor=actor,
            participant=participant,
            kind=ReferenceKind.THYROID_CYTOLOGY,
            sample_date=sample_date,
            result_date=result_date,
            bethesda_category=category,
        )
        if category == Bethesda.VI and result_date + dt.timedelta(days=5) <= today:
            surgery = result_date + dt.timedelta(days=3)
            services.reference_result_record(
                actor=actor,
                participant=participant,
                kind=ReferenceKind.THYROID_HISTOLOGY,
                sample_date=surgery,
                result_date=min(surgery + dt.timedelta(days=2), today),
                thyroid_histology=ThyroidHistology.PAPILLARY,
                tnm_t="T1b",
                tnm_n="N0a",
                tnm_m="M0",
            )


def _image_candidates(trial: Trial, indication: str) -> list[Participant]:
    """Randomized participants of an indication who still accept images and
    AI processing, in study id order (the same ones on every run)."""
    return list(
        Participant.objects.filter(
            trial=trial,
            screening__indication=indication,
            allocation__isnull=False,
            follow_up_stopped=False,
            ai_processing_stopped=False,
            data_withdrawn=False,
        )
        .select_related("site")
        .order_by("study_id")
    )


def _ultrasound_files() -> list[tuple[str, bytes]]:
    files = []
    for name in DEMO_ULTRASOUND:
        path = get_testdata_file(name)
        if path is None:
            raise CommandError(f"pydicom's test file {name} is missing from this installation.")
        files.append((name, Path(path).read_bytes()))
    return files


def _colposcopy_photos() -> list[tuple[str, bytes]]:
    """Synthetic photographs, the same bytes on every run (seeded)."""
    photos = []
    for seed, size in DEMO_COLPOSCOPY:
        frame = colposcopy_frame(np.random.default_rng(seed), size)
        buffer = io.BytesIO()
        PILImage.fromarray(frame.image).save(buffer, format="PNG")
        photos.append((f"synthetic-colposcopy-{seed}.png", buffer.getvalue()))
    return photos
