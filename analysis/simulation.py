"""A simulated trial for demos, tests and the analysis benchmark: sites, both
indications, screening with exclusions and refusals, consent, randomization,
a synthetic image per participant, AI results, clinical reads (unaided then
final in the AI-assisted arm), blinded panel reads, reference-standard
results and withdrawals of every scope, spread over 17 months.

Every write goes through the services, acted by simulated users, so the
audit trail, the reading tasks (made by the rules when an accepted image
arrives) and the blinding are those of a real trial. All data are invented.

What the services date themselves stays "now": the rows' created_at, the
reading tasks and their reads (opened, signed), the AI results and the
audit events. The dates the services take are spread over the trial:
screened_on, consented_at, withdrawn_on, and the reference standard's
sample_date and result_date.

Simulated accounts only: their password hashes use PBKDF2 with 1,000
iterations (Django's default is 1,000,000, about 230 ms a check), and the
signing runs with a hasher list that prefers that count, so a signature
does not upgrade the hash; thousands of signatures stay affordable. Never
use these accounts or this password for anything real.
"""

from __future__ import annotations

import datetime as dt
import io
import random
import re
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.db import transaction
from django.test.utils import override_settings
from django.utils import timezone
from PIL import Image as PILImage
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from ai_engine import jobs
from ai_engine import services as ai_services
from ai_engine.checkpoint import file_sha256
from ai_engine.inference.records import STATUS_DONE, InferenceResult, QualityVerdict
from ai_engine.models import AiResult, AiResultStatus, ModelVersion
from ai_engine.synthetic import colposcopy_frame, thyroid_frame
from ai_engine.synthetic.shapes import Frame
from imaging import services as imaging_services
from imaging.models import Image
from randomization import services as randomization_services
from randomization.models import Allocation, Arm
from readings import interaction
from readings import services as reading_services
from readings.models import Phase, Read, ReadingTask, ReadStatus, TaskKind, TaskStatus
from trial import services
from trial.actors import Actor
from trial.demo_protocol import ELIGIBILITY_CRITERIA, create_trial
from trial.models import (
    Bethesda,
    CervicalHistology,
    Indication,
    Participant,
    ReferenceKind,
    ReferenceStandardResult,
    Role,
    ScreeningEntry,
    Site,
    ThyroidHistology,
    Trial,
    TrialStatus,
    Withdrawal,
    WithdrawalScope,
)

TRIAL_MONTHS = 17
TRIAL_DAYS = 517  # 17 months
SIMULATED_PASSWORD = "simulated-trial-passphrase"
SIMULATED_ITERATIONS = 1000
IMAGE_SIZE = 128
ULTRASOUND_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"

SITES = [
    ("S01", "Northbridge University Hospital", "United Kingdom", 0.40),
    ("S02", "St Agnes Women's and Endocrine Centre", "Ireland", 0.35),
    ("S03", "Riverside Regional Hospital", "United Kingdom", 0.25),
]
CLINICIANS_PER_SITE = 2

# Screening outcomes (share of people screened) before consent.
P_INELIGIBLE = 0.10
P_DECLINED = 0.06
P_NOT_ENROLLED = 0.03
# Prevalence of high-grade disease (CIN2+; malignancy) among those enrolled.
PREVALENCE = {Indication.CERVICAL: 0.32, Indication.THYROID: 0.18}
# Readers: probability of calling high-grade given the truth.
READER_SENSITIVITY = 0.72
READER_FALSE_POSITIVE = 0.14
PANEL_SENSITIVITY = 0.78
PANEL_FALSE_POSITIVE = 0.10
# After seeing the AI second opinion: how often the reader follows it
# when it disagrees with the unaided read.
FOLLOW_AI_UP = 0.65  # the AI calls high-grade, the reader had not
FOLLOW_AI_DOWN = 0.30  # the AI calls it not high-grade, the reader had
# Simulated AI outputs (--no-ai-model): its operating point.
AI_SENSITIVITY = 0.88
AI_FALSE_POSITIVE = 0.15
# Withdrawals (share of those randomized), by scope.
WITHDRAWALS = {
    WithdrawalScope.STOP_FOLLOW_UP: 0.03,
    WithdrawalScope.STOP_AI_PROCESSING: 0.02,
    WithdrawalScope.WITHDRAW_DATA: 0.01,
}

# Read templates per category (validated by readings.services.validate_read).
THYROID_READS: dict[str, dict[str, Any]] = {
    # mixed (1) + iso (1) = 2 points: TR2
    interaction.NORMAL: {
        "composition": "mixed_cystic_solid",
        "echogenicity": "hyperechoic_isoechoic",
        "shape": "wider_than_tall",
        "margin": "smooth",
        "echogenic_foci": ["none"],
    },
    # solid (2) + iso (1) = 3 points: TR3
    interaction.LOW_GRADE: {
        "composition": "solid",
        "echogenicity": "hyperechoic_isoechoic",
        "shape": "wider_than_tall",
        "margin": "smooth",
        "echogenic_foci": ["none"],
    },
    # solid (2) + hypoechoic (2) = 4 points: TR4
    interaction.HIGH_GRADE: {
        "composition": "solid",
        "echogenicity": "hypoechoic",
        "shape": "wider_than_tall",
        "margin": "smooth",
        "echogenic_foci": ["none"],
    },
}
COLPOSCOPY_SWEDE = {interaction.NORMAL: 0, interaction.LOW_GRADE: 1, interaction.HIGH_GRADE: 2}
COLPOSCOPY_IMPRESSION = {
    interaction.NORMAL: "normal",
    interaction.LOW_GRADE: "low_grade",
    interaction.HIGH_GRADE: "high_grade",
}


class SimulationError(Exception):
    """The simulation cannot start (the trial code is taken, bad options)."""


@dataclass(frozen=True)
class SimulationConfig:
    participants: int
    seed: int = 2026
    trial_code: str = "CONSILIUM-SIM"
    panel_readers: int = 3
    ai_model: bool = True  # run the shipped model in-process; False: store simulated outputs

    def check(self) -> None:
        if self.participants < 1:
            raise SimulationError("--participants must be at least 1.")
        if not 1 <= self.panel_readers <= 10:
            raise SimulationError("--panel-readers must be between 1 and 10.")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}", self.trial_code):
            raise SimulationError("--trial-code: letters, digits, '-' and '_' only, at most 40 characters.")


@dataclass
class SimulationSummary:
    trial: Trial
    logins: list[tuple[str, str, str]]  # username, role label, where
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class _People:
    admin: Any
    coordinators: dict[str, Any]
    clinicians: dict[str, list[Any]]
    panel: list[Any]
    pathologist: Any


def ultrasound_dicom(pixels: np.ndarray, acquired_on: dt.date) -> bytes:
    """A grey 8-bit ultrasound image (uncompressed) holding the pixels; no
    identifying attributes (nor burned-in text: it is synthetic), fresh UIDs."""
    instance = generate_uid()
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = UID(ULTRASOUND_IMAGE_STORAGE)
    dataset.file_meta.MediaStorageSOPInstanceUID = UID(instance)
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.SOPClassUID = ULTRASOUND_IMAGE_STORAGE
    dataset.SOPInstanceUID = instance
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.Modality = "US"
    dataset.Manufacturer = "Simulated"
    dataset.ManufacturerModelName = "Synthetic ultrasound"
    dataset.PixelSpacing = [0.1, 0.1]
    dataset.BurnedInAnnotation = "NO"
    dataset.StudyDate = dataset.AcquisitionDate = acquired_on.strftime("%Y%m%d")
    dataset.set_pixel_data(np.ascontiguousarray(pixels, dtype=np.uint8), "MONOCHROME2", 8)
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def frame_with_truth(
    indication: str, high_grade: bool, stream: list[int], counter: int, size: int = IMAGE_SIZE
) -> tuple[Frame, int]:
    """A synthetic frame whose lesions agree with the truth (a large lesion
    for high-grade disease, none or small ones otherwise): the first of the
    seeds [*stream, counter + 1], [*stream, counter + 2], … that does. Returns
    the frame and the counter it took."""
    make = colposcopy_frame if indication == Indication.CERVICAL else thyroid_frame
    while True:
        counter += 1
        frame = make(np.random.default_rng([*stream, counter]), size)
        if (frame.category == interaction.HIGH_GRADE) == high_grade:
            return frame, counter


def image_file(indication: str, frame: Frame, stem: str, acquired_on: dt.date) -> tuple[str, bytes]:
    """The file a site would upload for the frame: a colposcopy photograph
    (PNG) or a grey ultrasound image (DICOM)."""
    if indication == Indication.CERVICAL:
        buffer = io.BytesIO()
        PILImage.fromarray(frame.image).save(buffer, format="PNG")
        return f"{stem}.png", buffer.getvalue()
    return f"{stem}.dcm", ultrasound_dicom(frame.image, acquired_on)


def fast_password_hash(password: str) -> str:
    """A PBKDF2 hash with 1,000 iterations: for simulated accounts only."""
    hasher = PBKDF2PasswordHasher()
    return hasher.encode(password, hasher.salt(), iterations=SIMULATED_ITERATIONS)


class SimulatedAccountHasher(PBKDF2PasswordHasher):
    """Preferred while the simulation signs, so that a correct password
    hashed with 1,000 iterations is not upgraded (and slowed) on each check."""

    iterations = SIMULATED_ITERATIONS


@contextmanager
def _fast_signatures() -> Iterator[None]:
    hashers = [f"{__name__}.SimulatedAccountHasher", *settings.PASSWORD_HASHERS]
    with override_settings(PASSWORD_HASHERS=hashers):
        yield


def simulate_trial(config: SimulationConfig, *, progress: Callable[[str], None] | None = None) -> SimulationSummary:
    """Fill the database with a simulated trial; refused when the trial code exists."""
    config.check()
    started = time.perf_counter()
    if Trial.objects.filter(code=config.trial_code).exists():
        raise SimulationError(
            f"A trial with the code {config.trial_code} already exists; nothing was changed. "
            "Choose another --trial-code."
        )
    prefix = config.trial_code.lower()
    taken = get_user_model().objects.filter(username__startswith=f"{prefix}-").exists()
    if taken:
        raise SimulationError(
            f"Users named {prefix}-… already exist (from an earlier simulation); nothing was changed. "
            "Choose another --trial-code."
        )
    rng = random.Random(config.seed)  # noqa: S311 - simulated data, reproducible from the seed
    today = timezone.localdate()
    # One transaction: a run that fails half-way leaves nothing behind.
    with _fast_signatures(), transaction.atomic():
        trial, people, logins = _set_up(config, prefix, today)
        simulator = _Simulator(config, rng, trial, people, today)
        enrolled = 0
        while enrolled < config.participants:
            enrolled += simulator.one_person()
            if progress is not None and enrolled % 100 == 0 and simulator.last_enrolled:
                progress(f"{enrolled} participants simulated ({time.perf_counter() - started:.0f} s)")
    summary = SimulationSummary(trial=trial, logins=logins, counts=counts_for(trial))
    summary.seconds = time.perf_counter() - started
    return summary


def counts_for(trial: Trial) -> dict[str, int]:
    allocations = Allocation.objects.filter(participant__trial=trial)
    reads = Read.objects.filter(task__trial=trial, status=ReadStatus.SIGNED)
    return {
        "screened": ScreeningEntry.objects.filter(trial=trial).count(),
        "participants": Participant.objects.filter(trial=trial).count(),
        "randomized_ai_assisted": allocations.filter(arm=Arm.AI_ASSISTED).count(),
        "randomized_specialist_only": allocations.filter(arm=Arm.SPECIALIST_ONLY).count(),
        "images": Image.objects.filter(trial=trial).count(),
        "ai_results": AiResult.objects.filter(image__trial=trial, status=AiResultStatus.DONE).count(),
        "tasks": ReadingTask.objects.filter(trial=trial).count(),
        "tasks_done": ReadingTask.objects.filter(trial=trial, status=TaskStatus.DONE).count(),
        "reads_signed": reads.count(),
        "reads_clinical": reads.filter(task__kind=TaskKind.CLINICAL).count(),
        "reads_panel": reads.filter(task__kind=TaskKind.PANEL).count(),
        "reads_adjudication": reads.filter(task__kind=TaskKind.ADJUDICATION).count(),
        "reference_results": ReferenceStandardResult.objects.filter(participant__trial=trial).count(),
        "withdrawals": Withdrawal.objects.filter(participant__trial=trial).count(),
    }


def _user(username: str) -> Any:
    model = get_user_model()
    user = model(username=username)
    user.password = fast_password_hash(SIMULATED_PASSWORD)
    user.save()
    return user


def _set_up(config: SimulationConfig, prefix: str, today: dt.date) -> tuple[Trial, _People, list[Any]]:
    system = Actor.system("simulate_trial")
    start = today - dt.timedelta(days=TRIAL_DAYS)
    trial = create_trial(
        actor=system,
        code=config.trial_code,
        title="AI second opinion for colposcopy and thyroid ultrasound: a simulated trial",
        planned_sample_size=config.participants,
        start_date=start,
    )
    sites: dict[str, Site] = {}
    for code, name, country, share in SITES:
        sites[code] = services.site_add(
            actor=system,
            trial=trial,
            code=code,
            name=name,
            country=country,
            target_participants=round(config.participants * share),
        )
    logins: list[tuple[str, str, str]] = []

    def grant(username: str, role: str, site: Site | None) -> Any:
        user = _user(username)
        services.membership_grant(actor=system, user=user, trial=trial, role=role, site=site)
        logins.append((username, Role(role).label, site.code if site else "all sites"))
        return user

    admin = grant(f"{prefix}-admin", Role.TRIAL_ADMIN, None)
    coordinators = {
        code: grant(f"{prefix}-coordinator-{code.lower()}", Role.COORDINATOR, site) for code, site in sites.items()
    }
    clinicians = {
        code: [
            grant(f"{prefix}-clinician-{code.lower()}-{n}", Role.CLINICIAN_READER, site)
            for n in range(1, CLINICIANS_PER_SITE + 1)
        ]
        for code, site in sites.items()
    }
    # One reader more than each case needs: a case's adjudicator must not
    # have read it for the panel.
    panel = [grant(f"{prefix}-reader-{n}", Role.BLINDED_READER, None) for n in range(1, config.panel_readers + 2)]
    pathologist = grant(f"{prefix}-pathologist", Role.PATHOLOGIST, None)
    for role, name in (
        (Role.STATISTICIAN_BLINDED, "statistician"),
        (Role.STATISTICIAN_UNBLINDED, "unblinded-statistician"),
        (Role.DSMB, "dsmb"),
        (Role.MONITOR, "monitor"),
    ):
        grant(f"{prefix}-{name}", role, None)
    admin_actor = Actor.for_user(admin, label="simulate_trial")
    randomization_services.scheme_configure(
        actor=admin_actor,
        trial=trial,
        method="permuted_blocks",
        ratio=(1, 1),
        block_sizes=[2, 4, 6],
        factors=["site", "indication"],
    )
    policy = reading_services.reading_policy_for(trial)
    wanted = {"panel_fraction": 1.0, "panel_readers_per_case": config.panel_readers}
    changes = {name: value for name, value in wanted.items() if getattr(policy, name) != value}
    if changes:
        reading_services.reading_policy_set(actor=admin_actor, trial=trial, **changes)
    for indication, path in ai_services.SHIPPED_CHECKPOINTS.items():
        model_version = ModelVersion.objects.filter(sha256=file_sha256(path)).first()
        if model_version is None:
            model_version = ai_services.model_register(
                actor=system,
                path=path,
                name=path.stem,
                version="1.0",
                indication=indication,
                intended_use="Lesion segmentation for exercising the platform; synthetic training data, not clinical.",
            )
        ai_services.model_activate(actor=admin_actor, trial=trial, model_version=model_version)
    trial = services.trial_set_status(
        actor=admin_actor, trial=trial, status=TrialStatus.RECRUITING, reason="Simulated approval received"
    )
    people = _People(admin, coordinators, clinicians, panel, pathologist)
    return trial, people, logins


class _Simulator:
    def __init__(
        self, config: SimulationConfig, rng: random.Random, trial: Trial, people: _People, today: dt.date
    ) -> None:
        self.config = config
        self.rng = rng
        self.trial = trial
        self.people = people
        self.today = today
        self.start = today - dt.timedelta(days=TRIAL_DAYS)
        self.sites = list(Site.objects.filter(trial=trial).order_by("code"))
        self.weights = [share for *_, share in SITES]
        self.image_counter = 0
        self.last_enrolled = False
        self.acts = TrialActs(
            rng=rng,
            today=today,
            clinicians=people.clinicians,
            panel=people.panel,
            pathologist=people.pathologist,
            password=lambda user: SIMULATED_PASSWORD,
            label="simulate_trial",
        )

    # --- screening and enrollment -------------------------------------------------

    def one_person(self) -> int:
        """Screen one person and follow them through the trial; 1 when enrolled."""
        rng = self.rng
        self.last_enrolled = False
        site = rng.choices(self.sites, weights=self.weights)[0]
        coordinator = self.people.coordinators[site.code]
        actor = Actor.for_user(coordinator, label="simulate_trial")
        indication = Indication.CERVICAL if rng.random() < 0.55 else Indication.THYROID
        # Recruitment ramps up over the first months (more people later).
        day = int(TRIAL_DAYS * (rng.random() ** 0.8))
        screened_on = min(self.start + dt.timedelta(days=day), self.today)
        entry = services.screening_create(
            actor=actor,
            site=site,
            screened_on=screened_on,
            indication=indication,
            year_of_birth=screened_on.year - rng.randint(25, 70),
            sex="female" if indication == Indication.CERVICAL or rng.random() < 0.75 else "male",
        )
        answers = {
            c["code"]: c["kind"] == "inclusion" for c in ELIGIBILITY_CRITERIA if c["indication"] in (None, indication)
        }
        draw = rng.random()
        if draw < P_INELIGIBLE:
            exclusions = [c for c in answers if c.startswith("EXC-")]
            answers[rng.choice(exclusions)] = True
            services.eligibility_assess(actor=actor, entry=entry, answers=answers)
            return 0
        services.eligibility_assess(actor=actor, entry=entry, answers=answers)
        if draw < P_INELIGIBLE + P_DECLINED:
            services.screening_close(
                actor=actor,
                entry=entry,
                outcome="declined",
                reason=rng.choice(
                    ["Prefers standard care without study procedures", "Did not want the images used for research"]
                ),
            )
            return 0
        if draw < P_INELIGIBLE + P_DECLINED + P_NOT_ENROLLED:
            services.screening_close(
                actor=actor, entry=entry, outcome="not_enrolled", reason="Did not attend the consent visit"
            )
            return 0
        consent_day = min(screened_on + dt.timedelta(days=rng.randint(0, 7)), self.today)
        consented_at = timezone.make_aware(dt.datetime.combine(consent_day, dt.time(9 + rng.randint(0, 7), 30)))
        consented_at = min(consented_at, timezone.now() - dt.timedelta(hours=1))
        covariates = (
            {"hpv_status": rng.choice(["positive", "positive", "negative", "unknown"])}
            if indication == Indication.CERVICAL
            else {"nodule_size_band": rng.choice(["10-19 mm", "20-39 mm", "40+ mm"])}
        )
        entry.refresh_from_db()
        participant = services.participant_enroll(
            actor=actor,
            entry=entry,
            form_version="1.0",
            consented_at=consented_at,
            taken_by=coordinator,
            covariates=covariates,
        )
        randomization_services.participant_randomize(actor=actor, participant=participant)
        self.last_enrolled = True
        self._follow(participant, actor, consented_at.date())
        return 1

    # --- after randomization ----------------------------------------------------------

    def _follow(self, participant: Participant, actor: Actor, enrolled_on: dt.date) -> None:
        rng = self.rng
        high_grade = rng.random() < PREVALENCE[Indication(participant.indication)]
        withdrawal = self._withdrawal_scope()
        withdrawn_on = min(enrolled_on + dt.timedelta(days=rng.randint(1, 30)), self.today)
        image, frame = self._upload(participant, actor, high_grade, enrolled_on)
        if withdrawal == WithdrawalScope.STOP_AI_PROCESSING:
            # Withdrawn from AI processing once the image is taken, before the AI read it.
            self._withdraw(participant, actor, withdrawal, withdrawn_on)
        participant.refresh_from_db()
        ai_result = self._ai(image, frame, high_grade) if participant.accepts_ai_processing else None
        # The rules make the tasks once the upload commits (readings.signals);
        # this is the same idempotent service, called now so the reads can follow.
        reading_services.reading_tasks_ensure(participant_id=participant.pk)
        if withdrawal == WithdrawalScope.WITHDRAW_DATA:
            self._withdraw(participant, actor, withdrawal, withdrawn_on)
            return
        self.acts.clinical_read(participant, high_grade, ai_result)
        self.acts.panel_reads(participant, high_grade)
        if withdrawal == WithdrawalScope.STOP_FOLLOW_UP:
            self._withdraw(participant, actor, withdrawal, withdrawn_on)
            return
        self.acts.reference(participant, high_grade, enrolled_on)

    def _withdrawal_scope(self) -> str | None:
        draw = self.rng.random()
        for scope, share in WITHDRAWALS.items():
            if draw < share:
                return str(scope)
            draw -= share
        return None

    def _withdraw(self, participant: Participant, actor: Actor, scope: str, on: dt.date) -> None:
        services.participant_withdraw(
            actor=actor, participant=participant, withdrawn_on=on, scope=scope, reason="Participant's decision"
        )

    def _upload(
        self, participant: Participant, actor: Actor, high_grade: bool, acquired_on: dt.date
    ) -> tuple[Any, Frame]:
        """A synthetic colposcopy photograph (PNG) or grey ultrasound frame (DICOM)."""
        # The trial code takes part in the seed: another simulated trial's
        # images differ (the upload refuses a file another participant has).
        stream = [self.config.seed, zlib.crc32(self.config.trial_code.encode())]
        frame, self.image_counter = frame_with_truth(participant.indication, high_grade, stream, self.image_counter)
        name, data = image_file(participant.indication, frame, f"simulated-{self.image_counter}", acquired_on)
        outcome = imaging_services.image_upload(actor=actor, participant=participant, name=name, data=data)
        if outcome.status != imaging_services.ACCEPTED:
            raise SimulationError(f"A simulated image for {participant.study_id} was refused: {outcome.reason}")
        return outcome.image, frame

    # --- AI ---------------------------------------------------------------------------

    def _ai(self, image: Any, frame: Frame, high_grade: bool) -> AiResult | None:
        queued = jobs.queue_image(image.pk, send=False)
        if queued is None:
            return None
        if self.config.ai_model:
            finished = jobs.process(queued.pk, batch_limit=1)
            return finished[0] if finished else AiResult.objects.get(pk=queued.pk)
        return self._simulated_output(queued, frame, high_grade)

    def _simulated_output(self, result: AiResult, frame: Frame, high_grade: bool) -> AiResult:
        """Store an invented outcome through the result services: the frame's
        own lesion mask, and a category drawn at the AI's operating point."""
        rng = self.rng
        normal, low, high = interaction.NORMAL, interaction.LOW_GRADE, interaction.HIGH_GRADE
        if rng.random() < (AI_SENSITIVITY if high_grade else AI_FALSE_POSITIVE):
            score = rng.uniform(0.55, 0.98)  # the probability of high-grade disease
            category, probabilities = high, {normal: (1 - score) / 2, low: (1 - score) / 2, high: score}
        else:
            score = rng.uniform(0.02, 0.45)
            category = rng.choice([normal, low])
            other = low if category == normal else normal
            probabilities = {category: 1 - score, other: score / 2, high: score / 2}
        mask = frame.mask.astype(np.uint8)
        started = ai_services.ai_result_start(result=result, claimed_by="simulate_trial")
        outcome = InferenceResult(
            status=STATUS_DONE,
            reason="",
            quality=QualityVerdict(ok=True, reason=""),
            mask=mask,
            probability=(mask * 0.9).astype(np.float16),
            frame_index=None,
            measurements={"simulated": True},
            category=category,
            category_probability=probabilities[category],
            category_probabilities=probabilities,
            model_sha256=result.model_version.sha256,
            device="simulated",
            runtime_ms=0.0,
        )
        return ai_services.ai_result_store(result=started, outcome=outcome)


@dataclass
class TrialActs:
    """The reads and reference-standard results of a simulated (or demo)
    participant, drawn from the truth (high-grade disease or not) at the
    readers' operating points and made through the services, each by a
    named user who signs with their password."""

    rng: random.Random
    today: dt.date
    clinicians: dict[str, list[Any]]  # site code -> clinicians of that site
    panel: list[Any]  # every blinded reader (adjudicators among them)
    pathologist: Any
    password: Callable[[Any], str]  # a user's password, for their signatures
    label: str  # the actor label of the audit events

    # --- reads ------------------------------------------------------------------------

    def category(self, high_grade: bool, sensitivity: float, false_positive: float) -> str:
        calls_high = self.rng.random() < (sensitivity if high_grade else false_positive)
        if calls_high:
            return interaction.HIGH_GRADE
        return self.rng.choice([interaction.NORMAL, interaction.LOW_GRADE])

    def values(self, indication: str, category: str) -> dict[str, Any]:
        rng = self.rng
        if indication == Indication.THYROID:
            return {
                **THYROID_READS[category],
                "largest_diameter_mm": rng.randint(10, 45),
                "cancer_suspected": False,
                "confidence": rng.randint(2, 5),
                "time_spent_s": rng.randint(40, 240),
                "note": "",
            }
        swede = COLPOSCOPY_SWEDE[category]
        return {
            "adequacy": "adequate",
            "scj_visibility": "completely_visible",
            "transformation_zone": rng.choice([1, 1, 2]),
            "swede_acetowhite": swede,
            "swede_margins_surface": swede,
            "swede_vessels": min(swede, 1),
            "swede_lesion_size": swede,
            "swede_iodine": swede,
            "impression": COLPOSCOPY_IMPRESSION[category],
            "biopsy_recommended": category != interaction.NORMAL,
            "confidence": rng.randint(2, 5),
            "time_spent_s": rng.randint(40, 240),
            "note": "",
        }

    def sign(self, actor: Actor, task: ReadingTask, phase: str, values: dict[str, Any]) -> None:
        read = Read.objects.get(task=task, phase=phase, current=True)
        reading_services.read_sign(
            actor=actor, task=task, phase=phase, data=values, revision=read.revision, password=self.password(actor.user)
        )

    def clinical_read(self, participant: Participant, high_grade: bool, ai_result: AiResult | None) -> None:
        task = ReadingTask.objects.filter(participant=participant, kind=TaskKind.CLINICAL).first()
        if task is None:
            return
        clinician = self.rng.choice(self.clinicians[participant.site.code])
        actor = Actor.for_user(clinician, label=self.label)
        task = reading_services.reading_task_start(actor=actor, task=task)
        unaided = self.category(high_grade, READER_SENSITIVITY, READER_FALSE_POSITIVE)
        if not task.sequential:
            self.sign(actor, task, Phase.FINAL, self.values(participant.indication, unaided))
            return
        values = self.values(participant.indication, unaided)
        self.sign(actor, task, Phase.UNAIDED, values)
        final = unaided
        if ai_result is not None and ai_result.status == AiResultStatus.DONE:
            reading_services.ai_display_record(actor=actor, task=task, ai_result=ai_result, what="suggestion")
            ai_high = ai_result.category == interaction.HIGH_GRADE
            if ai_high and unaided != interaction.HIGH_GRADE and self.rng.random() < FOLLOW_AI_UP:
                final = interaction.HIGH_GRADE
            elif not ai_high and unaided == interaction.HIGH_GRADE and self.rng.random() < FOLLOW_AI_DOWN:
                final = interaction.LOW_GRADE
        final_values = values if final == unaided else self.values(participant.indication, final)
        self.sign(actor, task, Phase.FINAL, final_values)

    def panel_reads(self, participant: Participant, high_grade: bool) -> None:
        tasks = ReadingTask.objects.filter(
            participant=participant, kind=TaskKind.PANEL, status=TaskStatus.PENDING
        ).select_related("assignee")
        for task in tasks:
            if task.assignee is None:  # the rules assign every panel task; never the case
                raise SimulationError(f"Panel task {task.pk} has no reader assigned.")
            actor = Actor.for_user(task.assignee, label=self.label)
            task = reading_services.reading_task_start(actor=actor, task=task)
            category = self.category(high_grade, PANEL_SENSITIVITY, PANEL_FALSE_POSITIVE)
            self.sign(actor, task, Phase.FINAL, self.values(participant.indication, category))
        # A disagreement on high-grade disease opened an adjudication: a
        # panel reader who has not read the case settles it.
        adjudication = ReadingTask.objects.filter(
            participant=participant, kind=TaskKind.ADJUDICATION, status=TaskStatus.PENDING
        ).first()
        if adjudication is None:
            return
        readers = set(
            ReadingTask.objects.filter(participant=participant, kind=TaskKind.PANEL).values_list(
                "assignee_id", flat=True
            )
        )
        adjudicator = self.rng.choice([user for user in self.panel if user.pk not in readers])
        actor = Actor.for_user(adjudicator, label=self.label)
        adjudication = reading_services.reading_task_start(actor=actor, task=adjudication)
        category = self.category(high_grade, PANEL_SENSITIVITY, PANEL_FALSE_POSITIVE)
        self.sign(actor, adjudication, Phase.FINAL, self.values(participant.indication, category))

    # --- reference standard -----------------------------------------------------------

    def reference(self, participant: Participant, high_grade: bool, enrolled_on: dt.date) -> None:
        rng = self.rng
        sample_date = enrolled_on + dt.timedelta(days=rng.randint(3, 21))
        result_date = sample_date + dt.timedelta(days=rng.randint(3, 14))
        if result_date > self.today:
            return  # still awaited
        actor = Actor.for_user(self.pathologist, label=self.label)
        if participant.indication == Indication.CERVICAL:
            histology = (
                rng.choice([CervicalHistology.CIN2, CervicalHistology.CIN3, CervicalHistology.CIN3])
                if high_grade
                else rng.choice([CervicalHistology.NEGATIVE, CervicalHistology.NEGATIVE, CervicalHistology.CIN1])
            )
            if high_grade and rng.random() < 0.05:
                histology = CervicalHistology.INVASIVE_SQUAMOUS
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
        category = Bethesda.VI if high_grade else rng.choice([Bethesda.II, Bethesda.II, Bethesda.II, Bethesda.III])
        services.reference_result_record(
            actor=actor,
            participant=participant,
            kind=ReferenceKind.THYROID_CYTOLOGY,
            sample_date=sample_date,
            result_date=result_date,
            bethesda_category=category,
        )
        if high_grade:
            surgery = result_date + dt.timedelta(days=rng.randint(10, 40))
            histology_date = surgery + dt.timedelta(days=rng.randint(3, 10))
            if histology_date > self.today:
                return
            services.reference_result_record(
                actor=actor,
                participant=participant,
                kind=ReferenceKind.THYROID_HISTOLOGY,
                sample_date=surgery,
                result_date=histology_date,
                thyroid_histology=ThyroidHistology.PAPILLARY,
                tnm_t=rng.choice(["T1a", "T1b", "T2"]),
                tnm_n="N0a",
                tnm_m="M0",
            )
