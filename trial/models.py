"""Trial data: trials, sites, memberships, screening, enrollment, consent,
withdrawal, reference standard, and the audit trail.

Models hold data and row-local derived state only. Every write goes through
trial.services, which checks the rules and records an audit event.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import models

# --- Vocabularies -----------------------------------------------------------


class Role(models.TextChoices):
    COORDINATOR = "coordinator", "Coordinator"
    CLINICIAN_READER = "clinician_reader", "Clinician reader"
    BLINDED_READER = "blinded_reader", "Blinded reader"
    PATHOLOGIST = "pathologist", "Pathologist / reference assessor"
    STATISTICIAN_BLINDED = "statistician_blinded", "Statistician (blinded)"
    STATISTICIAN_UNBLINDED = "statistician_unblinded", "Statistician (unblinded)"
    DSMB = "dsmb", "DSMB member"
    MONITOR = "monitor", "Monitor"
    TRIAL_ADMIN = "trial_admin", "Trial admin"


class Indication(models.TextChoices):
    CERVICAL = "cervical", "Cervical precancer/cancer (colposcopy)"
    THYROID = "thyroid", "Thyroid nodule/cancer (ultrasound)"


class Sex(models.TextChoices):
    FEMALE = "female", "Female"
    MALE = "male", "Male"
    INTERSEX = "intersex", "Intersex"
    NOT_STATED = "not_stated", "Not stated"


class TrialStatus(models.TextChoices):
    SETUP = "setup", "In set-up"
    RECRUITING = "recruiting", "Recruiting"
    RECRUITMENT_CLOSED = "recruitment_closed", "Recruitment closed"
    COMPLETED = "completed", "Completed"


class ScreeningStatus(models.TextChoices):
    PENDING = "pending", "Awaiting eligibility check"
    INELIGIBLE = "ineligible", "Not eligible"
    ELIGIBLE = "eligible", "Eligible, awaiting consent"
    DECLINED = "declined", "Eligible, declined to participate"
    NOT_ENROLLED = "not_enrolled", "Not enrolled (other reason)"
    ENROLLED = "enrolled", "Enrolled"


class WithdrawalScope(models.TextChoices):
    STOP_FOLLOW_UP = "stop_follow_up", "Stop follow-up (no new clinical data; data so far kept)"
    STOP_AI_PROCESSING = "stop_ai_processing", "Stop AI processing (follow-up continues)"
    WITHDRAW_DATA = "withdraw_data", "Withdraw data (no new data, no AI, excluded from exports)"


class ReferenceKind(models.TextChoices):
    CERVICAL_HISTOLOGY = "cervical_histology", "Cervical histopathology"
    THYROID_CYTOLOGY = "thyroid_cytology", "Thyroid cytology (FNA)"
    THYROID_HISTOLOGY = "thyroid_histology", "Thyroid surgical histology"


class CervicalHistology(models.TextChoices):
    NEGATIVE = "negative", "Negative for intraepithelial lesion"
    CIN1 = "cin1", "CIN 1 (LSIL)"
    CIN2 = "cin2", "CIN 2 (HSIL)"
    CIN3 = "cin3", "CIN 3 (HSIL)"
    AIS = "ais", "Adenocarcinoma in situ"
    INVASIVE_SQUAMOUS = "invasive_squamous", "Invasive squamous cell carcinoma"
    INVASIVE_ADENOCARCINOMA = "invasive_adenocarcinoma", "Invasive adenocarcinoma"


class Bethesda(models.IntegerChoices):
    I = 1, "I — Non-diagnostic"  # noqa: E741 — the Bethesda category's own name
    II = 2, "II — Benign"
    III = 3, "III — Atypia of undetermined significance"
    IV = 4, "IV — Follicular neoplasm"
    V = 5, "V — Suspicious for malignancy"
    VI = 6, "VI — Malignant"


class ThyroidHistology(models.TextChoices):
    BENIGN = "benign", "Benign (e.g. follicular nodular disease, adenoma)"
    NIFTP = "niftp", "NIFTP (low-risk neoplasm)"
    PAPILLARY = "papillary", "Papillary thyroid carcinoma"
    FOLLICULAR = "follicular", "Follicular thyroid carcinoma"
    ONCOCYTIC = "oncocytic", "Oncocytic carcinoma"
    MEDULLARY = "medullary", "Medullary thyroid carcinoma"
    ANAPLASTIC = "anaplastic", "Anaplastic thyroid carcinoma"
    OTHER_MALIGNANT = "other_malignant", "Other malignancy"


class FigoStage(models.TextChoices):
    """FIGO 2018 staging of carcinoma of the cervix uteri."""

    IA1 = "IA1", "IA1"
    IA2 = "IA2", "IA2"
    IB1 = "IB1", "IB1"
    IB2 = "IB2", "IB2"
    IB3 = "IB3", "IB3"
    IIA1 = "IIA1", "IIA1"
    IIA2 = "IIA2", "IIA2"
    IIB = "IIB", "IIB"
    IIIA = "IIIA", "IIIA"
    IIIB = "IIIB", "IIIB"
    IIIC1 = "IIIC1", "IIIC1"
    IIIC2 = "IIIC2", "IIIC2"
    IVA = "IVA", "IVA"
    IVB = "IVB", "IVB"


class ThyroidT(models.TextChoices):
    """AJCC 8th edition, differentiated thyroid carcinoma, primary tumour."""

    TX = "TX", "TX"
    T1A = "T1a", "T1a (≤ 1 cm)"
    T1B = "T1b", "T1b (> 1–2 cm)"
    T2 = "T2", "T2 (> 2–4 cm)"
    T3A = "T3a", "T3a (> 4 cm, limited to thyroid)"
    T3B = "T3b", "T3b (gross extrathyroidal extension, strap muscles)"
    T4A = "T4a", "T4a"
    T4B = "T4b", "T4b"


class ThyroidN(models.TextChoices):
    NX = "NX", "NX"
    N0A = "N0a", "N0a"
    N0B = "N0b", "N0b"
    N1A = "N1a", "N1a"
    N1B = "N1b", "N1b"


class ThyroidM(models.TextChoices):
    M0 = "M0", "M0"
    M1 = "M1", "M1"


HIGH_GRADE_CERVICAL = {
    CervicalHistology.CIN2,
    CervicalHistology.CIN3,
    CervicalHistology.AIS,
    CervicalHistology.INVASIVE_SQUAMOUS,
    CervicalHistology.INVASIVE_ADENOCARCINOMA,
}
INVASIVE_CERVICAL = {CervicalHistology.INVASIVE_SQUAMOUS, CervicalHistology.INVASIVE_ADENOCARCINOMA}
MALIGNANT_THYROID = {
    ThyroidHistology.PAPILLARY,
    ThyroidHistology.FOLLICULAR,
    ThyroidHistology.ONCOCYTIC,
    ThyroidHistology.MEDULLARY,
    ThyroidHistology.ANAPLASTIC,
    ThyroidHistology.OTHER_MALIGNANT,
}
KIND_FOR_INDICATION = {
    Indication.CERVICAL: {ReferenceKind.CERVICAL_HISTOLOGY},
    Indication.THYROID: {ReferenceKind.THYROID_CYTOLOGY, ReferenceKind.THYROID_HISTOLOGY},
}


# --- Trial set-up -------------------------------------------------------------


class Trial(models.Model):
    code = models.SlugField(max_length=32, unique=True)
    title = models.CharField(max_length=300)
    registry_id = models.CharField(max_length=64, blank=True, help_text="e.g. ISRCTN or NCT number")
    indications = models.JSONField(default=list, help_text="Indications studied: cervical, thyroid")
    planned_sample_size = models.PositiveIntegerField()
    start_date = models.DateField()
    duration_months = models.PositiveSmallIntegerField(default=17)
    status = models.CharField(max_length=24, choices=TrialStatus.choices, default=TrialStatus.SETUP)
    stratification_covariates = models.JSONField(
        default=list,
        blank=True,
        help_text='Protocol covariates: [{"name", "label", "choices": [...], "indication": null|"cervical"|"thyroid"}]',
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return f"{self.code} — {self.title}"

    @property
    def end_date(self) -> dt.date:
        month_index = self.start_date.month - 1 + self.duration_months
        year = self.start_date.year + month_index // 12
        month = month_index % 12 + 1
        day = min(self.start_date.day, 28)
        return dt.date(year, month, day)

    @property
    def is_recruiting(self) -> bool:
        return self.status == TrialStatus.RECRUITING

    def covariates_for(self, indication: str) -> list[dict]:
        return [c for c in self.stratification_covariates if c.get("indication") in (None, indication)]


class ProtocolVersion(models.Model):
    """One approved protocol version. Its eligibility criteria and consent form
    version are frozen: an amendment is a new version, never an edit."""

    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="protocol_versions")
    version = models.CharField(max_length=16)
    effective_date = models.DateField()
    consent_form_version = models.CharField(max_length=32)
    eligibility_criteria = models.JSONField(
        help_text='[{"code", "text", "kind": "inclusion"|"exclusion", "indication": null|"cervical"|"thyroid"}]'
    )
    amendment_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["trial", "effective_date", "id"]
        constraints = [models.UniqueConstraint(fields=["trial", "version"], name="protocol_version_unique")]

    def __str__(self) -> str:
        return f"{self.trial.code} protocol v{self.version}"

    def criteria_for(self, indication: str) -> list[dict]:
        return [c for c in self.eligibility_criteria if c.get("indication") in (None, indication)]


class Site(models.Model):
    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="sites")
    code = models.CharField(max_length=8, help_text="Prefix of study ids, e.g. C01")
    name = models.CharField(max_length=200)
    country = models.CharField(max_length=64, blank=True)
    target_participants = models.PositiveIntegerField(default=0)
    active = models.BooleanField(default=True)
    # Counters handed out under a row lock (services), so ids never repeat.
    next_participant_number = models.PositiveIntegerField(default=1)
    next_screening_number = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["trial", "code"]
        constraints = [models.UniqueConstraint(fields=["trial", "code"], name="site_code_unique")]

    def __str__(self) -> str:
        return f"{self.code} {self.name}"


class Membership(models.Model):
    """A user's role in one trial, at one site or (site empty) at all sites."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="memberships")
    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="memberships")
    role = models.CharField(max_length=32, choices=Role.choices)
    site = models.ForeignKey(Site, on_delete=models.PROTECT, null=True, blank=True, related_name="memberships")
    active = models.BooleanField(default=True)
    granted_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["trial", "user__username", "role"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "trial", "role", "site"],
                condition=models.Q(site__isnull=False),
                name="membership_unique_site",
            ),
            models.UniqueConstraint(
                fields=["user", "trial", "role"],
                condition=models.Q(site__isnull=True),
                name="membership_unique_all_sites",
            ),
        ]

    def __str__(self) -> str:
        where = self.site.code if self.site is not None else "all sites"
        return f"{self.user} — {self.get_role_display()} ({self.trial.code}, {where})"


# --- Screening and enrollment -------------------------------------------------


class ScreeningEntry(models.Model):
    """A person assessed for eligibility: the screening log behind the CONSORT
    "assessed for eligibility" box. No names, addresses or hospital numbers."""

    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="screening_entries")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="screening_entries")
    screening_number = models.CharField(max_length=24)
    screened_on = models.DateField()
    indication = models.CharField(max_length=16, choices=Indication.choices)
    year_of_birth = models.PositiveSmallIntegerField()
    sex = models.CharField(max_length=16, choices=Sex.choices)
    status = models.CharField(max_length=16, choices=ScreeningStatus.choices, default=ScreeningStatus.PENDING)
    exclusion_reasons = models.JSONField(default=list, blank=True, help_text="[{code, text}] of why not enrolled")
    submission_key = models.UUIDField(null=True, blank=True, unique=True, editable=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-screened_on", "-id"]
        verbose_name_plural = "screening entries"
        constraints = [
            models.UniqueConstraint(fields=["trial", "screening_number"], name="screening_number_unique"),
        ]
        indexes = [models.Index(fields=["site", "status"])]

    def __str__(self) -> str:
        return self.screening_number

    def age_at_screening(self) -> int:
        return self.screened_on.year - self.year_of_birth


class EligibilityAssessment(models.Model):
    """The checklist answered against one protocol version. `is_eligible` and
    `failed_criteria` are derived by the service from the answers, never typed."""

    screening = models.OneToOneField(ScreeningEntry, on_delete=models.PROTECT, related_name="eligibility")
    protocol_version = models.ForeignKey(ProtocolVersion, on_delete=models.PROTECT, related_name="+")
    answers = models.JSONField(help_text="{criterion code: true/false}")
    is_eligible = models.BooleanField()
    failed_criteria = models.JSONField(default=list)
    assessed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    assessed_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"Eligibility of {self.screening}: {'eligible' if self.is_eligible else 'not eligible'}"


class Participant(models.Model):
    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="participants")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="participants")
    screening = models.OneToOneField(ScreeningEntry, on_delete=models.PROTECT, related_name="participant")
    study_id = models.CharField(max_length=24)
    covariates = models.JSONField(default=dict, blank=True)
    enrolled_at = models.DateTimeField()
    # Set only by the withdrawal service; the Withdrawal rows keep the history.
    follow_up_stopped = models.BooleanField(default=False)
    ai_processing_stopped = models.BooleanField(default=False)
    data_withdrawn = models.BooleanField(default=False)
    withdrawn_on = models.DateField(null=True, blank=True)

    class Meta:
        ordering = ["study_id"]
        constraints = [models.UniqueConstraint(fields=["trial", "study_id"], name="study_id_unique")]
        indexes = [models.Index(fields=["site", "study_id"])]

    def __str__(self) -> str:
        return self.study_id

    @property
    def indication(self) -> str:
        return self.screening.indication

    @property
    def year_of_birth(self) -> int:
        return self.screening.year_of_birth

    @property
    def sex(self) -> str:
        return self.screening.sex

    @property
    def is_withdrawn(self) -> bool:
        return self.follow_up_stopped or self.ai_processing_stopped or self.data_withdrawn

    @property
    def accepts_clinical_data(self) -> bool:
        return not (self.follow_up_stopped or self.data_withdrawn)

    @property
    def accepts_ai_processing(self) -> bool:
        return not (self.ai_processing_stopped or self.data_withdrawn)

    @property
    def status_label(self) -> str:
        if self.data_withdrawn:
            return "Withdrawn (data withdrawn)"
        if self.follow_up_stopped:
            return "Withdrawn (follow-up stopped)"
        if self.ai_processing_stopped:
            return "Enrolled (AI processing stopped)"
        return "Enrolled"


class Consent(models.Model):
    participant = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="consents")
    protocol_version = models.ForeignKey(ProtocolVersion, on_delete=models.PROTECT, related_name="+")
    form_version = models.CharField(max_length=32)
    consented_at = models.DateTimeField()
    taken_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["participant", "consented_at"]
        constraints = [
            models.UniqueConstraint(fields=["participant", "form_version"], name="consent_form_once"),
        ]

    def __str__(self) -> str:
        return f"Consent of {self.participant} (form v{self.form_version})"


class Withdrawal(models.Model):
    participant = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="withdrawals")
    withdrawn_on = models.DateField()
    scope = models.CharField(max_length=24, choices=WithdrawalScope.choices)
    reason = models.TextField(max_length=2000)
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["participant", "withdrawn_on", "id"]
        constraints = [models.UniqueConstraint(fields=["participant", "scope"], name="withdrawal_scope_once")]

    def __str__(self) -> str:
        return f"Withdrawal of {self.participant}: {self.get_scope_display()}"


class ReferenceStandardResult(models.Model):
    """Histopathology, cytology or surgical histology: the truth the reads are
    judged against."""

    participant = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="reference_results")
    kind = models.CharField(max_length=24, choices=ReferenceKind.choices)
    sample_date = models.DateField(help_text="Biopsy, FNA or surgery date")
    result_date = models.DateField(help_text="Date the result was reported")
    cervical_histology = models.CharField(max_length=32, choices=CervicalHistology.choices, blank=True)
    bethesda_category = models.PositiveSmallIntegerField(choices=Bethesda.choices, null=True, blank=True)
    thyroid_histology = models.CharField(max_length=24, choices=ThyroidHistology.choices, blank=True)
    figo_stage = models.CharField(max_length=8, choices=FigoStage.choices, blank=True)
    tnm_t = models.CharField(max_length=4, choices=ThyroidT.choices, blank=True)
    tnm_n = models.CharField(max_length=4, choices=ThyroidN.choices, blank=True)
    tnm_m = models.CharField(max_length=4, choices=ThyroidM.choices, blank=True)
    notes = models.TextField(max_length=4000, blank=True)
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["participant", "sample_date", "id"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} of {self.participant}: {self.summary}"

    @property
    def summary(self) -> str:
        if self.kind == ReferenceKind.CERVICAL_HISTOLOGY:
            text = self.get_cervical_histology_display()
            return f"{text}, FIGO {self.figo_stage}" if self.figo_stage else text
        if self.kind == ReferenceKind.THYROID_CYTOLOGY:
            return f"Bethesda {self.get_bethesda_category_display()}"
        text = self.get_thyroid_histology_display()
        if self.tnm_t:
            text += f", {self.tnm_t} {self.tnm_n} {self.tnm_m}".rstrip()
        return text

    @property
    def is_high_grade(self) -> bool | None:
        """CIN2+ for the cervix, malignancy for the thyroid; None when the
        result cannot say (non-diagnostic or indeterminate cytology)."""
        if self.kind == ReferenceKind.CERVICAL_HISTOLOGY:
            return self.cervical_histology in HIGH_GRADE_CERVICAL
        if self.kind == ReferenceKind.THYROID_HISTOLOGY:
            return self.thyroid_histology in MALIGNANT_THYROID
        if self.bethesda_category == Bethesda.VI:
            return True
        if self.bethesda_category == Bethesda.II:
            return False
        return None


# --- Audit trail -------------------------------------------------------------


class AuditEvent(models.Model):
    """One append-only event of the hash-chained audit trail (21 CFR 11.10(e)).

    The database refuses UPDATE and DELETE on this table (triggers installed by
    migration 0002); `manage.py verify_audit` walks the chain.
    """

    sequence = models.BigIntegerField(unique=True)
    occurred_at = models.DateTimeField()
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="audit_events"
    )
    actor_username = models.CharField(max_length=150)
    role = models.CharField(max_length=32, blank=True)
    action = models.CharField(max_length=64)
    object_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=64)
    object_label = models.CharField(max_length=200, blank=True)
    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    screening = models.ForeignKey(
        ScreeningEntry, on_delete=models.PROTECT, null=True, blank=True, related_name="audit_events"
    )
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    reason = models.TextField(blank=True)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    previous_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["-sequence"]
        indexes = [
            models.Index(fields=["trial", "site", "-sequence"]),
            models.Index(fields=["object_type", "object_id"]),
            models.Index(fields=["action"]),
        ]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.action} {self.object_type}:{self.object_id} by {self.actor_username}"


class AuditChainHead(models.Model):
    """A single row holding the chain's tip. Writers lock it, so events are
    numbered and chained one at a time even under concurrent transactions."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    last_sequence = models.BigIntegerField(default=0)
    last_hash = models.CharField(max_length=64, default="0" * 64)

    def __str__(self) -> str:
        return f"audit chain head at #{self.last_sequence}"
