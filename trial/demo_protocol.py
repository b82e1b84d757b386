"""The protocol of the demonstration and simulated trials (seed_demo,
simulate_trial): eligibility criteria and stratification covariates. Made-up
wording for demonstrations; no real trial's protocol."""

from __future__ import annotations

from typing import Any

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
