"""Every imaging endpoint and page, for every role and anonymous: the status
each must get. Site-scoped roles (coordinator, clinician reader,
pathologist, monitor) belong to site A; the others hold all sites.

Expectations are written out here, not derived from trial.permissions, so a
wrong entry in the capability table shows up as a failing test."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from django.test import Client

from imaging.models import Image
from randomization.services import participant_randomize
from tests.conftest import actor_for, api_client, login
from tests.test_imaging_api import synthetic_cine, upload_file
from trial.models import Role

ANONYMOUS = "anonymous"
ROLES = [*Role.values, ANONYMOUS]
SITE_A_ONLY = {Role.COORDINATOR, Role.CLINICIAN_READER, Role.PATHOLOGIST, Role.MONITOR}
VIEWERS = {
    Role.COORDINATOR,
    Role.CLINICIAN_READER,
    Role.MONITOR,
    Role.TRIAL_ADMIN,
    Role.STATISTICIAN_BLINDED,
    Role.STATISTICIAN_UNBLINDED,
}
UPLOADERS = {Role.COORDINATOR}
EXPORTERS = {Role.MONITOR, Role.STATISTICIAN_BLINDED, Role.STATISTICIAN_UNBLINDED}
NOBODY_ELSE = {Role.PATHOLOGIST, Role.DSMB, Role.BLINDED_READER}


def expected(role: str, allowed: set[str], *, at_site_b: bool, success: int = 200, anonymous: int = 401) -> int:
    """Anonymous → 401 (API) or the login page (pages); a role without the
    capability anywhere → 403; an object at a site outside the member's
    scope → 404, so its existence is not revealed; otherwise success."""
    if role == ANONYMOUS:
        return anonymous
    if role not in allowed:
        return 403
    if at_site_b and role in SITE_A_ONLY:
        return 404
    return success


@pytest.fixture
def world(users: dict[str, Any], enroll: Any, coordinator: Any, coordinator_b: Any, site_b: Any, block_scheme: Any):
    participant_a = enroll(indication="thyroid")
    participant_b = enroll(indication="thyroid", site=site_b, user=coordinator_b)
    participant_randomize(actor=actor_for(coordinator), participant=participant_a)
    participant_randomize(actor=actor_for(coordinator_b), participant=participant_b)
    images = {}
    sites = (("a", participant_a, coordinator, 1), ("b", participant_b, coordinator_b, 2))
    for key, participant, uploader, seed in sites:
        cine = upload_file("cine.dcm", synthetic_cine(seed))
        response = api_client(uploader).post(
            f"/api/v1/participants/{participant.pk}/images/", {"file": [cine]}, format="multipart"
        )
        assert response.status_code == 201, response.content
        images[key] = Image.objects.get(pk=response.json()[0]["image_id"])
    return SimpleNamespace(participants={"a": participant_a, "b": participant_b}, images=images, users=users)


READS = [
    ("/api/v1/participants/{participant}/images/", VIEWERS),
    ("/api/v1/images/{image}/", VIEWERS),
    ("/api/v1/images/{image}/preview.png", VIEWERS),
    ("/api/v1/images/{image}/thumbnail.png", VIEWERS),
    ("/api/v1/images/{image}/frames.png", VIEWERS),
    ("/api/v1/images/{image}/file", VIEWERS),
    ("/api/v1/participants/{participant}/images/ai-status/", VIEWERS),
    ("/api/v1/participants/{participant}/images/export.zip", EXPORTERS),
]
PAGES = ["/imaging/participants/{participant}/", "/imaging/images/{image}/"]


def _url(template: str, world: SimpleNamespace, site: str) -> str:
    return template.format(participant=world.participants[site].pk, image=world.images[site].pk)


def _api(role: str, world: SimpleNamespace) -> Any:
    return api_client(None if role == ANONYMOUS else world.users[role])


def _page_client(role: str, world: SimpleNamespace) -> Client:
    return Client() if role == ANONYMOUS else login(world.users[role])


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("template", "allowed"), READS)
@pytest.mark.parametrize("site", ["a", "b"])
def test_it_answers_each_read_endpoint_by_role_and_site(role, template, allowed, site, world):
    response = _api(role, world).get(_url(template, world, site))

    assert response.status_code == expected(role, allowed, at_site_b=site == "b"), response.content


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("site", ["a", "b"])
def test_only_the_sites_coordinator_uploads(role, site, world):
    url = _url("/api/v1/participants/{participant}/images/", world, site)

    response = _api(role, world).post(url, {"file": [upload_file("examples_palette.dcm")]}, format="multipart")

    assert response.status_code == expected(role, UPLOADERS, at_site_b=site == "b", success=201), response.content
    assert Image.objects.filter(participant=world.participants[site]).count() == (
        2 if response.status_code == 201 else 1
    )


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("template", PAGES)
@pytest.mark.parametrize("site", ["a", "b"])
def test_it_answers_each_page_by_role_and_site(role, template, site, world):
    response = _page_client(role, world).get(_url(template, world, site))

    assert response.status_code == expected(role, VIEWERS, at_site_b=site == "b", anonymous=302)
    if role == ANONYMOUS:
        assert response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("site", ["a", "b"])
def test_only_the_sites_coordinator_posts_the_upload_form(role, site, world):
    url = _url("/imaging/participants/{participant}/", world, site)

    response = _page_client(role, world).post(url, {"file": [upload_file("examples_palette.dcm")]})

    assert response.status_code == expected(role, UPLOADERS, at_site_b=site == "b", anonymous=302)
    assert Image.objects.filter(participant=world.participants[site]).count() == (
        2 if response.status_code == 200 else 1
    )


def test_the_coordinator_of_site_b_finds_nothing_of_site_a(world, coordinator_b):
    api, page = api_client(coordinator_b), login(coordinator_b)

    for template, _ in READS[:-1]:
        assert api.get(_url(template, world, "a")).status_code == 404, template
    upload = api.post(
        _url("/api/v1/participants/{participant}/images/", world, "a"),
        {"file": [upload_file("examples_palette.dcm")]},
        format="multipart",
    )
    assert upload.status_code == 404
    for template in PAGES:
        assert page.get(_url(template, world, "a")).status_code == 404
    assert page.post(_url(PAGES[0], world, "a"), {"file": [upload_file("examples_palette.dcm")]}).status_code == 404
    # Export is not a coordinator's capability at all: 403 before any site is looked at.
    assert api.get(_url(READS[-1][0], world, "a")).status_code == 403


def test_a_blinded_reader_gets_nothing(world):
    reader = world.users[Role.BLINDED_READER]
    api, page = api_client(reader), login(reader)
    image, participant = world.images["a"], world.participants["a"]

    answers = [api.get(_url(template, world, "a")) for template, _ in READS]
    answers += [page.get(_url(template, world, "a")) for template in PAGES]
    answers.append(api.post(_url(READS[0][0], world, "a"), {"file": [upload_file("examples_palette.dcm")]}))

    for response in answers:
        assert response.status_code == 403
        assert image.sha256.encode() not in response.content
        assert participant.study_id.encode() not in response.content
        assert response["Content-Type"].startswith(("application/json", "text/html"))


@pytest.mark.parametrize("role", sorted(NOBODY_ELSE))
def test_roles_without_images_get_no_pixels(role, world):
    response = api_client(world.users[role]).get(_url("/api/v1/images/{image}/file", world, "a"))

    assert response.status_code == 403
    assert not response.content.startswith(b"\x89PNG") and b"DICM" not in response.content


@pytest.mark.parametrize("role", sorted(VIEWERS))
def test_the_ai_status_gives_each_viewer_the_state_of_the_work_never_the_ai_output(role, users, ai_case):
    [result] = ai_case.ai_results
    url = f"/api/v1/participants/{ai_case.participant.pk}/images/ai-status/"

    response = api_client(users[role]).get(url)

    assert response.status_code == 200, response.content
    assert response["Cache-Control"] == "private, no-store"
    assert response.json() == {
        "participant": ai_case.participant.pk,
        "final": True,
        "images": [
            {
                "image": ai_case.images[0].pk,
                "state": result.status,
                "state_label": {"done": "Done", "abstained": "Abstained (image unfit for the model)"}[result.status],
                "final": True,
            }
        ],
    }
    body = response.content.decode()
    for output in (result.category, result.model_version.name, result.model_version.sha256, "measurements", "mask"):
        assert not output or output not in body, output
