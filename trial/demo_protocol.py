"""The protocol of the demonstration and simulated trials (seed_demo,
simulate_trial): eligibility criteria and stratification covariates, and the
trial made with them. Made-up wording for demonstrations; no real trial's
protocol."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from trial.models import Indication

if TYPE_CHECKING:
    from trial.actors import Actor
    from trial.models import Trial

ELIGIBILITY_CRITERIA: list[dict[str, Any]] = [
    {"code": "INC-AGE", "text": "Aged 18 years or older", "kind": "inclusion", "indication": None},
    {"code": "INC-CONSENT", "text": "Able to give informed consent", "kind": "inclusion", "indication": None},
    {
        "code": "INC-COLPO",
        "text": "Referred for colposcopy after an abnormal screening test",
        "kind": "inclusion",
        "indication": "cervical",
    },
    {
        "code": "INC-NODULE",
        "text": "Thyroid nodule ≥ 1 cm referred for ultrasound assessment",
        "kind": "inclusion",
        "indication": "thyroid",
    },
    {"code": "EXC-PREGNANT", "text": "Pregnancy beyond 20 weeks", "kind": "exclusion", "indication": "cervical"},
    {
        "code": "EXC-TREATED",
        "text": "Previous excisional treatment of the cervix",
        "kind": "exclusion",
        "indication": "cervical",
    },
    {"code": "EXC-THYROIDECTOMY", "text": "Previous thyroid surgery", "kind": "exclusion", "indication": "thyroid"},
    {
        "code": "EXC-OTHER-TRIAL",
        "text": "Taking part in another interventional trial",
        "kind": "exclusion",
        "indication": None,
    },
]
COVARIATES: list[dict[str, Any]] = [
    {
        "name": "hpv_status",
        "label": "HPV status",
        "choices": ["positive", "negative", "unknown"],
        "indication": "cervical",
    },
    {
        "name": "nodule_size_band",
        "label": "Nodule size band",
        "choices": ["10-19 mm", "20-39 mm", "40+ mm"],
        "indication": "thyroid",
    },
]


def create_trial(*, actor: Actor, code: str, title: str, planned_sample_size: int, start_date: dt.date) -> Trial:
    """A trial of both indications under this protocol, through the services:
    the trial, stratified by COVARIATES, and its protocol version 1.0 in
    effect ten days before recruitment starts."""
    from trial import services

    trial = services.trial_create(
        actor=actor,
        code=code,
        title=title,
        registry_id="ISRCTN00000000",
        indications=[Indication.CERVICAL, Indication.THYROID],
        planned_sample_size=planned_sample_size,
        start_date=start_date,
        stratification_covariates=COVARIATES,
    )
    services.protocol_version_add(
        actor=actor,
        trial=trial,
        version="1.0",
        effective_date=start_date - dt.timedelta(days=10),
        consent_form_version="1.0",
        eligibility_criteria=ELIGIBILITY_CRITERIA,
    )
    return trial
