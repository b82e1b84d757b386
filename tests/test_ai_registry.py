"""The model registry (CONSORT-AI 5(i)): registering verified checkpoints,
deploying one per trial and indication, the lock once recruitment opens,
retirement, the register_model command."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, transaction

from ai_engine import selectors, services
from ai_engine.checkpoint import file_sha256, load_checkpoint
from ai_engine.models import ModelStatus, ModelVersion, TrialModel
from tests.conftest import SYSTEM, actor_for, login
from trial.errors import Conflict, NotAllowed, RuleViolation
from trial.models import AuditEvent, Indication, Role, Trial

SHIPPED = services.SHIPPED_CHECKPOINT
SHIPPED_SHA256 = SHIPPED.with_name(SHIPPED.name + ".sha256").read_text().split()[0]


def stored_files() -> list[Path]:
    folder = Path(settings.MEDIA_ROOT) / "models"
    return sorted(folder.iterdir()) if folder.exists() else []


def register(path: Path = SHIPPED, *, version: str = "1.0", **options: Any) -> ModelVersion:
    options.setdefault("name", "combined-thyroid-synthetic")
    options.setdefault("indication", Indication.THYROID)
    return services.model_register(actor=SYSTEM, path=path, version=version, **options)


@pytest.fixture
def trial_admin(trial: Trial, make_user: Callable[..., Any]) -> Any:
    return make_user("model-admin", Role.TRIAL_ADMIN, trial=trial)


@pytest.fixture
def deployed(trial: Trial, trial_admin: Any) -> TrialModel:
    """The shipped model deployed for the trial's thyroid participants while it is in set-up."""
    return services.model_activate(actor=actor_for(trial_admin), trial=trial, model_version=register())


# --- Registration ---------------------------------------------------------------------


def test_it_registers_the_shipped_checkpoint_with_its_facts_and_a_verified_copy(db: Any) -> None:
    model_version = register(intended_use="Thyroid nodule outlines on ultrasound")

    row = ModelVersion.objects.get(pk=model_version.pk)
    assert row.sha256 == SHIPPED_SHA256
    assert row.arch == "combined" and row.architecture["in_channels"] == 1
    assert row.metrics["dice"] == pytest.approx(load_checkpoint(SHIPPED).metrics["dice"])
    assert "data" in row.training and row.categories == ["normal", "low-grade", "high-grade"]
    assert row.preprocessing["image_size"] == 128
    assert "Not for clinical use" in row.model_card  # read from the card of the same name beside the file
    assert row.status == ModelStatus.DRAFT and row.indication == Indication.THYROID
    assert row.registered_by_username == "system:tests"
    stored = services.stored_path(row)
    assert stored == Path(settings.MEDIA_ROOT) / "models" / f"{SHIPPED_SHA256}.pt"
    assert load_checkpoint(stored).sha256 == SHIPPED_SHA256  # the copy carries its side file
    event = AuditEvent.objects.get(action="ai_model.register")
    assert event.after["sha256"] == SHIPPED_SHA256


def test_it_refuses_a_corrupted_checkpoint_and_stores_nothing(db: Any, tmp_path: Path) -> None:
    copy = tmp_path / "damaged.pt"
    shutil.copyfile(SHIPPED, copy)
    shutil.copyfile(SHIPPED.with_name(SHIPPED.name + ".sha256"), tmp_path / "damaged.pt.sha256")
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))

    with pytest.raises(RuleViolation, match="sha256"):
        register(copy)

    assert not ModelVersion.objects.exists()
    assert stored_files() == []
    assert not AuditEvent.objects.filter(action="ai_model.register").exists()


def test_it_refuses_the_same_checkpoint_or_name_and_version_twice(db: Any, retrained: Path) -> None:
    register()
    files_before = stored_files()

    with pytest.raises(Conflict, match="already registered"):
        register(version="1.1")
    with pytest.raises(Conflict, match=r"version 1\.0"):
        register(retrained, version="1.0")

    assert ModelVersion.objects.count() == 1
    assert stored_files() == files_before  # the refused file was not left behind


def test_it_takes_the_card_given_and_refuses_an_unknown_indication(db: Any) -> None:
    with pytest.raises(RuleViolation, match="indication"):
        register(indication="lung")
    assert register(card_text="# Card given").model_card == "# Card given"


# --- Deployment and the lock once recruitment opens --------------------------------------


def test_it_deploys_before_recruitment_without_a_reason(trial: Trial, deployed: TrialModel) -> None:
    assert deployed.active and deployed.reason == ""
    assert selectors.active_model_for(trial=trial, indication=Indication.THYROID) == deployed.model_version
    assert selectors.active_model_for(trial=trial, indication=Indication.CERVICAL) is None
    deployed.model_version.refresh_from_db()
    assert deployed.model_version.status == ModelStatus.ACTIVE


def test_once_recruiting_a_change_needs_a_trial_admin_and_a_reason(
    deployed: TrialModel, recruiting: Trial, trial_admin: Any, coordinator: Any, retrained: Path
) -> None:
    new_version = register(retrained, version="1.1")

    with pytest.raises(RuleViolation, match="reason"):
        services.model_activate(actor=actor_for(trial_admin), trial=recruiting, model_version=new_version)
    with pytest.raises(NotAllowed):
        services.model_activate(
            actor=actor_for(coordinator), trial=recruiting, model_version=new_version, reason="Better model"
        )
    assert selectors.active_model_for(trial=recruiting, indication=Indication.THYROID) == deployed.model_version

    replacement = services.model_activate(
        actor=actor_for(trial_admin), trial=recruiting, model_version=new_version, reason="DSMB-approved amendment 2"
    )

    assert selectors.active_model_for(trial=recruiting, indication=Indication.THYROID) == new_version
    history = list(TrialModel.objects.filter(trial=recruiting, indication=Indication.THYROID).order_by("id"))
    assert [d.pk for d in history] == [deployed.pk, replacement.pk]
    assert not history[0].active and history[0].deactivated_at is not None
    event = AuditEvent.objects.filter(action="ai_model.activate").order_by("-sequence").first()
    assert event is not None and event.reason == "DSMB-approved amendment 2"
    assert event.before["sha256"] == SHIPPED_SHA256
    assert event.after["sha256"] == new_version.sha256 == file_sha256(retrained)
    statuses = dict(ModelVersion.objects.values_list("version", "status"))
    assert statuses == {"1.0": ModelStatus.DRAFT, "1.1": ModelStatus.ACTIVE}


def test_a_trial_has_at_most_one_active_model_per_indication(
    trial: Trial, deployed: TrialModel, trial_admin: Any, retrained: Path
) -> None:
    services.model_activate(actor=actor_for(trial_admin), trial=trial, model_version=register(retrained, version="2"))
    with pytest.raises(Conflict, match="already the active"):
        services.model_activate(
            actor=actor_for(trial_admin), trial=trial, model_version=ModelVersion.objects.get(version="2")
        )
    assert TrialModel.objects.filter(trial=trial, indication=Indication.THYROID, active=True).count() == 1

    # The database itself refuses a second active row, whatever writes it.
    with pytest.raises(IntegrityError), transaction.atomic():
        TrialModel.objects.create(
            trial=trial, indication=Indication.THYROID, model_version=deployed.model_version, activated_by_username="x"
        )


def test_it_refuses_a_model_of_another_indication_or_a_retired_one(trial: Trial, trial_admin: Any) -> None:
    cervical = register(name="combined-cervical", indication=Indication.CERVICAL)
    services.model_retire(actor=SYSTEM, model_version=cervical, reason="Superseded")
    with pytest.raises(RuleViolation, match="retired"):
        services.model_activate(actor=actor_for(trial_admin), trial=trial, model_version=cervical)
    assert not TrialModel.objects.exists()


# --- Retirement --------------------------------------------------------------------------


def test_it_will_not_retire_the_model_a_recruiting_trial_uses(deployed: TrialModel, recruiting: Trial) -> None:
    with pytest.raises(Conflict, match=recruiting.code):
        services.model_retire(actor=SYSTEM, model_version=deployed.model_version, reason="Obsolete")
    deployed.model_version.refresh_from_db()
    assert deployed.model_version.status == ModelStatus.ACTIVE
    assert selectors.active_model_for(trial=recruiting, indication=Indication.THYROID) == deployed.model_version


def test_retiring_needs_a_reason_and_ends_a_deployment_still_in_set_up(trial: Trial, deployed: TrialModel) -> None:
    with pytest.raises(RuleViolation, match="reason"):
        services.model_retire(actor=SYSTEM, model_version=deployed.model_version, reason=" ")

    retired = services.model_retire(actor=SYSTEM, model_version=deployed.model_version, reason="Validation failed")

    assert retired.status == ModelStatus.RETIRED and retired.retirement_reason == "Validation failed"
    assert selectors.active_model_for(trial=trial, indication=Indication.THYROID) is None
    assert TrialModel.objects.filter(pk=deployed.pk, active=False).exists()  # kept in the history
    assert AuditEvent.objects.get(action="ai_model.retire").reason == "Validation failed"


# --- Who may see the registry ---------------------------------------------------------------


def test_viewing_the_registry_needs_the_view_capability(deployed: TrialModel, users: dict[str, Any]) -> None:
    for role in (Role.TRIAL_ADMIN, Role.MONITOR, Role.DSMB, Role.STATISTICIAN_BLINDED, Role.COORDINATOR):
        assert list(selectors.model_versions_visible(users[role])) == [deployed.model_version]
        assert list(selectors.model_deployments_visible(users[role])) == [deployed]
    for role in (Role.BLINDED_READER, Role.PATHOLOGIST):
        with pytest.raises(PermissionDenied):
            selectors.model_versions_visible(users[role])


# --- The command -------------------------------------------------------------------------------


def run_command(*args: str, **options: Any) -> str:
    out = StringIO()
    call_command("register_model", *args, stdout=out, **options)
    return out.getvalue()


def test_the_command_registers_and_prints_the_sha256(db: Any, tmp_path: Path) -> None:
    card = tmp_path / "card.md"
    card.write_text("# Card from --card", encoding="utf-8")

    output = run_command(str(SHIPPED), name="thyroid-demo", version="0.1", indication="thyroid", card=str(card))

    assert f"sha256 {SHIPPED_SHA256}" in output
    row = ModelVersion.objects.get(sha256=SHIPPED_SHA256)
    assert (row.name, row.version, row.model_card) == ("thyroid-demo", "0.1", "# Card from --card")
    assert AuditEvent.objects.get(action="ai_model.register").actor_username == "system:register_model"


def test_the_command_fails_clearly_on_a_missing_file_or_a_duplicate(db: Any, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="No checkpoint file"):
        run_command(str(tmp_path / "absent.pt"), name="x", version="1", indication="thyroid")
    run_command(str(SHIPPED), name="x", version="1", indication="thyroid")
    with pytest.raises(CommandError, match="already registered"):
        run_command(str(SHIPPED), name="x", version="2", indication="thyroid")


def test_the_command_deploys_for_a_trial_and_keeps_nothing_when_that_fails(
    deployed: TrialModel, recruiting: Trial, retrained: Path
) -> None:
    with pytest.raises(CommandError, match="reason"):
        run_command(str(retrained), name="n", version="2", indication="thyroid", activate_for=recruiting.code)
    assert not ModelVersion.objects.filter(sha256=file_sha256(retrained)).exists()
    assert [p.name for p in stored_files()] == [f"{SHIPPED_SHA256}.pt", f"{SHIPPED_SHA256}.pt.sha256"]

    output = run_command(
        str(retrained), name="n", version="2", indication="thyroid", activate_for=recruiting.code, reason="Amendment"
    )

    assert "Deployed" in output
    assert selectors.active_model_for(trial=recruiting, indication=Indication.THYROID).sha256 == file_sha256(retrained)


# --- The demo ---------------------------------------------------------------------------------


def test_seed_demo_deploys_the_shipped_models_before_recruitment_opens(db: Any) -> None:
    call_command("seed_demo", stdout=StringIO())
    demo = Trial.objects.get(code="CONSILIUM-DEMO")

    thyroid = selectors.active_model_for(trial=demo, indication=Indication.THYROID)
    cervical = selectors.active_model_for(trial=demo, indication=Indication.CERVICAL)

    assert thyroid is not None and thyroid.sha256 == SHIPPED_SHA256
    assert (thyroid.name, thyroid.version) == ("combined-thyroid-synthetic", "1.0")
    assert "Not for clinical use" in thyroid.model_card
    colposcopy_path = services.SHIPPED_CHECKPOINTS[Indication.CERVICAL]
    assert cervical is not None and cervical.sha256 == file_sha256(colposcopy_path)
    assert (cervical.name, cervical.preprocessing["in_channels"]) == ("combined-colposcopy-synthetic", 3)
    assert "Not for clinical use" in cervical.model_card
    activations = AuditEvent.objects.filter(action="ai_model.activate", trial=demo)
    opening = AuditEvent.objects.get(action="trial.status", trial=demo)
    assert activations.count() == 2 and all(event.sequence < opening.sequence for event in activations)

    call_command("seed_demo", stdout=StringIO())  # a second run changes nothing
    assert ModelVersion.objects.count() == 2 and TrialModel.objects.count() == 2


def test_the_admin_lists_the_registry_read_only(deployed: TrialModel, users: dict[str, Any]) -> None:
    client = login(users[Role.TRIAL_ADMIN])

    listing = client.get("/admin/ai_engine/modelversion/")
    assert listing.status_code == 200 and SHIPPED_SHA256[:16] in listing.content.decode()
    assert client.get("/admin/ai_engine/modelversion/add/").status_code == 403
    deployments = client.get("/admin/ai_engine/trialmodel/")
    assert deployments.status_code == 200 and "combined-thyroid-synthetic" in deployments.content.decode()
    assert login(users[Role.COORDINATOR]).get("/admin/ai_engine/modelversion/").status_code == 302
