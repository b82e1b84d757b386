"""Load the demo trial in two phases.

`seed_demo` (phase one): three sites, a user for every role, a stratified
permuted-block randomization scheme, the shipped (synthetic) thyroid and
colposcopy models deployed before recruitment opens, and about sixty people
over every state of the enrollment flow at every site and for both
indications: awaiting the eligibility check, screened out (ineligible),
declined, not enrolled, eligible awaiting consent, consented awaiting
randomization, randomized to either arm and followed up, and withdrawn (each
scope). Each followed participant has an image: the real ultrasound files
pydicom ships and synthetic ultrasound frames for thyroid participants,
synthetic colposcopy photographs for cervical ones. Their AI jobs wait on
the broker until a worker runs (`manage.py demo_server` starts one).

`seed_demo --readings` (phase two, once the worker has judged the images;
`demo_server` runs it): the clinical reads (unaided then final, after the AI
second opinion, in the AI-assisted arm; a single read in the
specialist-only arm), the blinded panel's reads and adjudications, the
reference-standard results recorded by the pathologist, and two interim
reports queued for the worker (open, by the blinded statistician; closed,
by the DSMB). At each site, the most recent participant of the AI-assisted
arm is left in the middle of being read, so the worklists have work in them:
the clinician has signed the unaided read (the AI second opinion is now
shown with the final read) and the panel's readers have opened the case.

Both phases are idempotent: a second run changes nothing. All data are
invented. Every write goes through the services, acted by the demo users
themselves (each signature checks the reader's password, hashed as for any
user), so the audit trail reads as a real one would.
"""

from __future__ import annotations

import datetime as dt
import random
import zlib
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone
from pydicom.data import get_testdata_file

from ai_engine import services as ai_services
from ai_engine.checkpoint import file_sha256
from ai_engine.models import AiResult, AiResultStatus, ModelVersion
from analysis import services as analysis_services
from analysis.models import Report, ReportKind, ReportStatus
from analysis.simulation import (
    PREVALENCE,
    READER_FALSE_POSITIVE,
    READER_SENSITIVITY,
    TrialActs,
    frame_with_truth,
    image_file,
)
from imaging import services as imaging_services
from imaging.models import Image, ImageStatus
from randomization import services as randomization_services
from randomization.models import Arm
from readings import services as reading_services
from readings.models import Phase, ReadingTask, TaskKind, TaskStatus
from trial import services
from trial.actors import Actor
from trial.demo_protocol import ELIGIBILITY_CRITERIA, create_trial
from trial.models import (
    Indication,
    Participant,
    ReferenceStandardResult,
    Role,
    ScreeningEntry,
    Site,
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
    # The blinded panel: each case is read by two of them (the default
    # policy), and a disagreement is settled by the third.
    ("reader", Role.BLINDED_READER, None, "demo-reader-passphrase"),
    ("reader-2", Role.BLINDED_READER, None, "demo-reader-passphrase"),
    ("reader-3", Role.BLINDED_READER, None, "demo-reader-passphrase"),
    ("pathologist", Role.PATHOLOGIST, None, "demo-pathologist-passphrase"),
    ("statistician", Role.STATISTICIAN_BLINDED, None, "demo-statistician-passphrase"),
    ("unblinded-statistician", Role.STATISTICIAN_UNBLINDED, None, "demo-unblinded-passphrase"),
    ("dsmb", Role.DSMB, None, "demo-dsmb-passphrase"),
    ("monitor", Role.MONITOR, None, "demo-monitor-passphrase"),
]
PASSWORDS = {username: password for username, _, _, password in DEMO_USERS}

# The states every site has one person in (the indication alternates from
# site to site, so each state appears for both indications), besides the
# participants randomized and followed up (--randomized-per-site).
PENDING = "awaiting eligibility check"
INELIGIBLE_OTHER_TRIAL = "ineligible (in another trial)"
INELIGIBLE_HISTORY = "ineligible (treated before)"
DECLINED = "declined"
NOT_ENROLLED = "not enrolled"
ELIGIBLE = "eligible, awaiting consent"
CONSENTED = "Consented, awaiting randomization"
FOLLOWED = "randomized, followed up"
WITHDRAWN = {
    WithdrawalScope.STOP_FOLLOW_UP: "Withdrawn (no further follow-up)",
    WithdrawalScope.STOP_AI_PROCESSING: "Withdrawn (no AI processing)",
    WithdrawalScope.WITHDRAW_DATA: "Withdrawn (data withdrawn)",
}
STATES_AT_EVERY_SITE = [
    PENDING,
    INELIGIBLE_OTHER_TRIAL,
    INELIGIBLE_HISTORY,
    DECLINED,
    NOT_ENROLLED,
    ELIGIBLE,
    CONSENTED,
    *WITHDRAWN.values(),
]
RANDOMIZED_PER_SITE = 10  # followed up; with the states above, 20 people a site
# Real ultrasound recordings pydicom ships (single frame, palette colour,
# JPEG 2000, a 30-frame cine loop), for the first thyroid participants; the
# others get synthetic frames.
DEMO_ULTRASOUND = ["examples_rgb_color.dcm", "examples_palette.dcm", "examples_ybr_color.dcm", "examples_jpeg2k.dcm"]
DEMO_IMAGE_SIZE = 256  # pixels a side of the synthetic images
REPORTS = [(ReportKind.OPEN, "statistician"), (ReportKind.CLOSED, "dsmb")]
AI_PENDING = (AiResultStatus.QUEUED, AiResultStatus.RUNNING)


class Command(BaseCommand):
    help = (
        "Load the demo trial and its images (idempotent) and print the logins; with --readings, "
        "once the worker has judged the images, add the reads, reference results and interim reports."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--randomized-per-site",
            type=int,
            default=RANDOMIZED_PER_SITE,
            help=f"participants randomized and followed up at each site (default {RANDOMIZED_PER_SITE}; "
            f"each site also has {len(STATES_AT_EVERY_SITE)} people in the other states)",
        )
        parser.add_argument(
            "--readings",
            action="store_true",
            help="phase two: the reads, reference results and interim reports (after the AI results)",
        )

    def handle(self, *args: Any, randomized_per_site: int, readings: bool, **options: Any) -> None:
        if readings:
            self._readings()
            return
        if randomized_per_site < 1:
            raise CommandError("--randomized-per-site must be at least 1.")
        if Trial.objects.filter(code=TRIAL_CODE).exists():
            self.stdout.write(f"Demo trial {TRIAL_CODE} is already loaded.")
        else:
            with transaction.atomic():
                self._load(randomized_per_site)
            self.stdout.write(self.style.SUCCESS(f"Demo trial {TRIAL_CODE} loaded."))
        trial = Trial.objects.get(code=TRIAL_CODE)
        self._add_images(trial)
        self._print_states(trial)
        self._print_logins()

    def _print_states(self, trial: Trial) -> None:
        counts = demo_state_counts(trial)
        self.stdout.write(f"\n{'State':<42} {'cervical':>8} {'thyroid':>8}")
        for state, by_indication in counts.items():
            cervical, thyroid = by_indication.get(Indication.CERVICAL, 0), by_indication.get(Indication.THYROID, 0)
            self.stdout.write(f"  {state:<40} {cervical:>8} {thyroid:>8}")
        total = sum(sum(by_indication.values()) for by_indication in counts.values())
        self.stdout.write(f"  {'people screened':<40} {total:>17}")

    def _print_logins(self) -> None:
        self.stdout.write("\nLogins (demo only; every password is printed here on purpose):")
        for username, role, site, password in DEMO_USERS:
            where = site or "all sites"
            self.stdout.write(f"  {Role(role).label:<34} {username:<24} {password:<30} ({where})")

    # --- phase one: the trial, its people and their images -----------------------------

    def _load(self, randomized_per_site: int) -> None:
        system = Actor.system("seed_demo")
        today = timezone.localdate()
        # Recruitment started 150 days ago; the protocol was in effect 10 days before.
        trial = create_trial(
            actor=system,
            code=TRIAL_CODE,
            title="AI second opinion for colposcopy and thyroid ultrasound: a randomized controlled trial (demo)",
            planned_sample_size=300,
            start_date=today - dt.timedelta(days=150),
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
        coordinators = {"C01": users["coordinator"], "C02": users["coordinator-c02"], "C03": users["coordinator-c03"]}
        for number, (code, site) in enumerate(sites.items()):
            rng = random.Random(f"{TRIAL_CODE}:{code}")
            # The indication alternates from state to state and from site to
            # site: every state appears for both indications.
            people = [
                (state, Indication.CERVICAL if (index + number) % 2 == 0 else Indication.THYROID)
                for index, state in enumerate([*STATES_AT_EVERY_SITE, *[FOLLOWED] * randomized_per_site])
            ]
            rng.shuffle(people)  # screened in no particular order
            for state, indication in people:
                self._one_person(rng, site, coordinators[code], state, indication, today)

    def _one_person(
        self, rng: random.Random, site: Site, coordinator: Any, state: str, indication: str, today: dt.date
    ) -> None:
        actor = Actor.for_user(coordinator, label="seed_demo")
        # Those followed up were screened early enough for their reference results.
        screened_on = today - dt.timedelta(days=rng.randint(45 if state == FOLLOWED else 3, 140))
        entry = services.screening_create(
            actor=actor,
            site=site,
            screened_on=screened_on,
            indication=indication,
            year_of_birth=screened_on.year - rng.randint(21, 74),
            sex="female" if indication == Indication.CERVICAL or rng.random() < 0.75 else "male",
        )
        if state == PENDING:
            return
        answers = {
            c["code"]: c["kind"] == "inclusion" for c in ELIGIBILITY_CRITERIA if c["indication"] in (None, indication)
        }
        if state == INELIGIBLE_OTHER_TRIAL:
            answers["EXC-OTHER-TRIAL"] = True
        elif state == INELIGIBLE_HISTORY:
            answers["EXC-TREATED" if indication == Indication.CERVICAL else "EXC-THYROIDECTOMY"] = True
        services.eligibility_assess(actor=actor, entry=entry, answers=answers)
        if state in (INELIGIBLE_OTHER_TRIAL, INELIGIBLE_HISTORY, ELIGIBLE):
            return
        if state == DECLINED:
            services.screening_close(
                actor=actor, entry=entry, outcome="declined", reason="Prefers standard care without study procedures"
            )
            return
        if state == NOT_ENROLLED:
            services.screening_close(
                actor=actor, entry=entry, outcome="not_enrolled", reason="Did not attend the consent visit"
            )
            return
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
        if state == CONSENTED:
            return
        randomization_services.participant_randomize(actor=actor, participant=participant)
        scope = next((scope for scope, label in WITHDRAWN.items() if label == state), None)
        if scope is not None:
            services.participant_withdraw(
                actor=actor,
                participant=participant,
                withdrawn_on=min(consented_at.date() + dt.timedelta(days=5), today),
                scope=scope,
                reason="Participant's decision, no reason given",
            )

    def _add_images(self, trial: Trial) -> None:
        """Upload an image for each participant followed up who has none
        yet, as their site's coordinator, through the same service as the
        web upload; accepting one queues its AI job once the upload commits."""
        coordinators = {
            site: get_user_model().objects.get(username=username)
            for username, role, site, _ in DEMO_USERS
            if role == Role.COORDINATOR
        }
        real_ultrasound = _ultrasound_files()
        added = present = 0
        for indication in (Indication.THYROID, Indication.CERVICAL):
            for index, participant in enumerate(_followed(trial, indication)):
                if Image.objects.filter(participant=participant).exclude(status=ImageStatus.REJECTED).exists():
                    present += 1
                    continue
                if indication == Indication.THYROID and index < len(real_ultrasound):
                    name, data = real_ultrasound[index]
                else:
                    frame, _ = frame_with_truth(
                        indication,
                        high_grade(participant),
                        [2026, zlib.crc32(participant.study_id.encode())],
                        0,
                        size=DEMO_IMAGE_SIZE,
                    )
                    acquired_on = _consented_on(participant)
                    stem = f"demo-{'colposcopy' if indication == Indication.CERVICAL else 'ultrasound'}"
                    name, data = image_file(indication, frame, f"{stem}-{participant.study_id}", acquired_on)
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

    # --- phase two: reads, reference results, interim reports ---------------------------

    def _readings(self) -> None:
        trial = Trial.objects.filter(code=TRIAL_CODE).first()
        if trial is None:
            raise CommandError(f"The demo trial {TRIAL_CODE} is not loaded: run `manage.py seed_demo` first.")
        pending = AiResult.objects.filter(image__trial=trial, status__in=AI_PENDING).count()
        if pending:
            raise CommandError(
                f"{pending} AI results of the demo images are still waiting for the worker; the reads follow "
                "the AI second opinion. Run the worker (`manage.py demo_server` does) and try again."
            )
        users = {user.username: user for user in get_user_model().objects.filter(username__in=PASSWORDS)}
        missing = sorted(set(PASSWORDS) - set(users))
        if missing:
            raise CommandError(
                f"The demo users {', '.join(missing)} are missing: the demo trial was loaded by an older version. "
                "Remove the demo database (var/, or CONSILIUM_VAR_DIR) and run make demo again."
            )
        clinicians: dict[str, list[Any]] = {}
        for username, role, site, _ in DEMO_USERS:
            if role == Role.CLINICIAN_READER and site is not None:
                clinicians.setdefault(site, []).append(users[username])
        panel = [users[username] for username, role, _, _ in DEMO_USERS if role == Role.BLINDED_READER]
        in_progress = awaiting_reads(trial)
        read = started = 0
        for participant in _followed(trial):
            clinical = ReadingTask.objects.filter(participant=participant, kind=TaskKind.CLINICAL).first()
            if clinical is None or clinical.status != TaskStatus.PENDING:
                continue  # read on an earlier run (each participant's reads commit together)
            # One stream of draws per participant: the same reads whatever ran before.
            acts = TrialActs(
                rng=random.Random(f"{TRIAL_CODE}:reads:{participant.study_id}"),
                today=timezone.localdate(),
                clinicians=clinicians,
                panel=panel,
                pathologist=users["pathologist"],
                password=lambda user: PASSWORDS[user.username],
                label="seed_demo",
            )
            truth = high_grade(participant)
            if participant in in_progress:
                with transaction.atomic():
                    self._start_reading(acts, participant, clinical, truth)
                started += 1
                continue
            ai_result = (
                AiResult.objects.filter(image__participant=participant, status=AiResultStatus.DONE)
                .order_by("-finished_at", "-pk")
                .first()
            )
            with transaction.atomic():
                acts.clinical_read(participant, truth, ai_result)
                acts.panel_reads(participant, truth)
                if not ReferenceStandardResult.objects.filter(participant=participant).exists():
                    acts.reference(participant, truth, _consented_on(participant))
            read += 1
        self.stdout.write(
            f"Demo reads: {read} participants read now (clinical and panel reads signed, reference results), "
            f"{started} left in the middle of being read, "
            f"{len(_followed(trial)) - read - started} handled on an earlier run."
        )
        for kind, username in REPORTS:
            if Report.objects.filter(trial=trial, kind=kind).exclude(status=ReportStatus.FAILED).exists():
                continue
            report = analysis_services.report_request(
                actor=Actor.for_user(users[username], label="seed_demo"), trial=trial, kind=kind
            )
            self.stdout.write(f"Interim report queued: {report.get_kind_display()}, requested by {username}.")

    def _start_reading(self, acts: TrialActs, participant: Participant, clinical: ReadingTask, truth: bool) -> None:
        """The clinician signs the unaided read (in the AI-assisted arm; the
        final read, with the AI second opinion, is then open) and the panel's
        readers open the case, none of them signing yet."""
        clinician = acts.clinicians[participant.site.code][0]
        actor = Actor.for_user(clinician, label="seed_demo")
        clinical = reading_services.reading_task_start(actor=actor, task=clinical)
        if clinical.sequential:
            category = acts.category(truth, READER_SENSITIVITY, READER_FALSE_POSITIVE)
            acts.sign(actor, clinical, Phase.UNAIDED, acts.values(participant.indication, category))
        for task in ReadingTask.objects.filter(
            participant=participant, kind=TaskKind.PANEL, status=TaskStatus.PENDING
        ).select_related("assignee"):
            if task.assignee is None:  # the rules assign every panel task
                raise CommandError(f"Panel task {task.pk} of {participant} has no reader assigned.")
            reader = Actor.for_user(task.assignee, label="seed_demo")
            reading_services.reading_task_start(actor=reader, task=task)


def high_grade(participant: Participant) -> bool:
    """The invented truth of a demo participant (high-grade disease or
    not), the same on every run: the synthetic image, the reads and the
    reference result all follow it."""
    draw = random.Random(f"{TRIAL_CODE}:truth:{participant.study_id}").random()
    return draw < PREVALENCE[Indication(participant.indication)]


def _consented_on(participant: Participant) -> dt.date:
    consent = participant.consents.order_by("consented_at").first()
    return timezone.localdate(consent.consented_at) if consent else timezone.localdate(participant.enrolled_at)


def _followed(trial: Trial, indication: str | None = None) -> list[Participant]:
    """Randomized participants who have not withdrawn in any way, in study
    id order (the same ones on every run)."""
    participants = Participant.objects.filter(
        trial=trial,
        allocation__isnull=False,
        follow_up_stopped=False,
        ai_processing_stopped=False,
        data_withdrawn=False,
    )
    if indication is not None:
        participants = participants.filter(screening__indication=indication)
    return list(participants.select_related("site", "screening", "allocation").order_by("study_id"))


def awaiting_reads(trial: Trial) -> list[Participant]:
    """The participants left in the middle of being read: at each site, the
    last one followed up (by study id) in the AI-assisted arm, else the last
    one followed up."""
    chosen: dict[int, Participant] = {}
    for participant in _followed(trial):
        current = chosen.get(participant.site_id)
        if (
            current is None
            or participant.allocation.arm == Arm.AI_ASSISTED
            or current.allocation.arm != Arm.AI_ASSISTED
        ):
            chosen[participant.site_id] = participant
    return list(chosen.values())


def demo_state_counts(trial: Trial) -> dict[str, dict[str, int]]:
    """People screened for the trial by state of the enrollment flow and
    indication."""
    counts: dict[str, dict[str, int]] = {}
    entries = ScreeningEntry.objects.filter(trial=trial).select_related("participant__allocation")
    for entry in entries:
        participant = getattr(entry, "participant", None)
        if participant is None:
            state = entry.get_status_display()
        elif participant.data_withdrawn:
            state = WITHDRAWN[WithdrawalScope.WITHDRAW_DATA]
        elif participant.follow_up_stopped:
            state = WITHDRAWN[WithdrawalScope.STOP_FOLLOW_UP]
        elif participant.ai_processing_stopped:
            state = WITHDRAWN[WithdrawalScope.STOP_AI_PROCESSING]
        elif not hasattr(participant, "allocation"):
            state = CONSENTED
        else:
            state = f"Randomized, {participant.allocation.get_arm_display()}"
        by_indication = counts.setdefault(state, {})
        by_indication[entry.indication] = by_indication.get(entry.indication, 0) + 1
    return dict(sorted(counts.items()))


def _ultrasound_files() -> list[tuple[str, bytes]]:
    files = []
    for name in DEMO_ULTRASOUND:
        path = get_testdata_file(name)
        if path is None:
            raise CommandError(f"pydicom's test file {name} is missing from this installation.")
        files.append((name, Path(path).read_bytes()))
    return files
