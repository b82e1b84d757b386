"""The reading page's scripts (static/js/viewer.js and read_form.js) in
Chromium against the live server and the real case page:
- the viewer draws the frame, zooms (buttons, wheel, keys), pages through
  the 30-frame cine loop (slider and arrow keys), measures in millimetres
  with the caliper;
- window/level controls exist for a grey image only, and change its pixels;
- a lesion outline drawn on the image fills the form's hidden input and the
  autosave stores it (read back from the database), then clears it;
- two tabs autosaving the same read: the second gets the conflict, keeps
  its entries and can load the saved version (or save its entries over it);
- the computed scores (TI-RADS, Swede) are previewed as the form is filled
  in, as the server computes them; signing with "time spent" empty fills in
  the time the page was on screen;
- in the AI-assisted arm after the unaided read is signed: the AI panel is
  filled, and each time the contour (or heat map) is switched on the layer
  is fetched again, drawn over the image and recorded (AiDisplay).
Every page ends without console errors or failed requests (but the
expected conflicts); screenshots are saved as artifacts."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from django.urls import reverse
from playwright.sync_api import Page

from ai_engine import jobs
from ai_engine.models import AiResult
from ai_engine.synthetic import thyroid_frame
from imaging import services as imaging_services
from imaging.models import Image
from randomization.models import Arm
from readings import services
from readings.models import AiDisplay, Phase, Read, ReadingTask
from tests.browser import PageProblems, logged_in, screenshot
from tests.conftest import PASSWORD, actor_for
from tests.imaging_files import to_bytes, ultrasound_dataset
from tests.reading_fixtures import Case, valid_read
from trial.models import Role

# Pixels of the viewer's canvas: how many are lit, a checksum of all of them,
# and how many have the AI contour's colour (readings.rendering.CONTOUR_RGBA).
CANVAS_STATS = """canvas => {
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let lit = 0, checksum = 0, contour = 0;
  for (let i = 0; i < data.length; i += 4) {
    const r = data[i], g = data[i + 1], b = data[i + 2];
    if (r + g + b > 30) lit += 1;
    checksum = (checksum * 31 + r * 3 + g * 5 + b * 7) % 1000000007;
    if (r >= 245 && g >= 205 && g <= 235 && b <= 25) contour += 1;
  }
  return {lit, checksum, contour, total: data.length / 4};
}"""

# The first and last lit pixel of the canvas's middle row (CSS pixels; the
# tests run at a device pixel ratio of 1).
ROW_EXTENT = """canvas => {
  const y = Math.floor(canvas.height / 2);
  const data = canvas.getContext("2d").getImageData(0, y, canvas.width, 1).data;
  let first = -1, last = -1;
  for (let x = 0; x < canvas.width; x += 1) {
    if (data[4 * x] + data[4 * x + 1] + data[4 * x + 2] > 60) {
      if (first < 0) first = x;
      last = x;
    }
  }
  return [first, last, canvas.width];
}"""

# What a Content-Security-Policy without 'unsafe-inline' would block, in what
# the scripts built: style attributes and inline event handlers.
INLINE_IN_SCRIPTED_PARTS = """() => [...document.querySelectorAll(
  "#viewer, #viewer *, #ai-panel, #ai-panel *, #read-form, #read-form *"
)].filter((element) => [...element.attributes].some(
  (attribute) => attribute.name === "style" || attribute.name.startsWith("on")
)).map((element) => element.outerHTML.slice(0, 120))"""

SAVED = re.compile(r"Draft saved at \d\d:\d\d:\d\d")


def canvas_stats(page: Page) -> dict[str, int]:
    stats: dict[str, int] = page.locator("#viewer canvas").evaluate(CANVAS_STATS)
    return stats


def zoom_of(page: Page) -> float:
    return float(page.locator("#viewer canvas").get_attribute("data-zoom") or "nan")


def frame_of(page: Page) -> int:
    return int(page.locator("#viewer canvas").get_attribute("data-frame") or "-1")


def wait_for_frame(page: Page, frame: int) -> None:
    page.locator(f"#viewer canvas[data-frame='{frame}']").wait_for()


def open_case(page: Page, live_server: Any, task: ReadingTask) -> None:
    """The case page with its viewer drawn (the task started if it was pending)."""
    page.goto(f"{live_server.url}{reverse('readings:task', args=[task.pk])}")
    start = page.get_by_role("button", name="Start reading")
    if start.count():
        with page.expect_navigation():
            start.click()
    page.locator("#read-form").wait_for()
    page.locator("#viewer canvas[data-frame]").wait_for()


def click_image(page: Page, *points: tuple[float, float]) -> None:
    """Click the canvas at these points (CSS pixels from its top left corner)."""
    box = page.locator("#viewer canvas").bounding_box()
    assert box is not None
    for x, y in points:
        page.mouse.click(box["x"] + x, box["y"] + y)


def current_read(task: ReadingTask) -> Read:
    return Read.objects.get(task=task, current=True, phase__in=[Phase.UNAIDED, Phase.FINAL], signed_at=None)


def test_the_viewer_draws_zooms_pages_through_the_cine_loop_and_measures_in_mm(
    page: Page, page_problems: PageProblems, live_server: Any, users: dict[str, Any], make_case: Callable[..., Case]
) -> None:
    case = make_case(Arm.SPECIALIST_ONLY, ai=False)  # pydicom's colour cine loop: 30 frames, pixel spacing
    [image] = case.images
    assert image.frames == 30 and image.pixel_spacing_mm is not None
    task = case.task()
    frames_asked: list[str] = []
    page.on("request", lambda request: frames_asked.append(request.url) if "/frames/" in request.url else None)
    logged_in(page, live_server, users[Role.CLINICIAN_READER], PASSWORD)
    open_case(page, live_server, task)

    # The frame is drawn: the key frame, at a zoom that fits the canvas.
    assert frame_of(page) == image.key_frame
    first = canvas_stats(page)
    assert first["lit"] > first["total"] // 10, first
    assert page.locator("#viewer canvas").get_attribute("aria-label") == (
        f"Image 1 of 1, frame {image.key_frame + 1} of 30 ({image.columns} × {image.rows} pixels)"
    )
    # No window/level for a colour image; no image picker for a single image.
    assert page.get_by_label("Window width").count() == 0 and page.get_by_label("Window centre").count() == 0
    assert page.get_by_role("button", name="Image 1").count() == 0
    screenshot(page, "viewer-cine-fitted")

    # Zoom: the buttons, the mouse wheel and the keys change the scale about
    # the centre (what is drawn on the middle row shrinks by the factor);
    # Reset view fits the image again.
    fitted = zoom_of(page)
    left, right, width = page.locator("#viewer canvas").evaluate(ROW_EXTENT)
    assert 0 <= left < right
    page.get_by_role("button", name="Zoom out").click()
    assert math.isclose(zoom_of(page), fitted / 1.25, rel_tol=1e-3)
    centre = width / 2
    left_out, right_out, _ = page.locator("#viewer canvas").evaluate(ROW_EXTENT)
    assert abs(left_out - (centre + (left - centre) / 1.25)) <= 3, (left, left_out)
    assert abs(right_out - (centre + (right - centre) / 1.25)) <= 3, (right, right_out)
    page.get_by_role("button", name="Reset view").click()
    page.get_by_role("button", name="Zoom in").click()
    assert math.isclose(zoom_of(page), fitted * 1.25, rel_tol=1e-3)
    shown = page.locator("#viewer output[aria-label='Zoom level']").inner_text()
    assert re.fullmatch(r"\d+ %", shown) and abs(int(shown.split()[0]) - fitted * 125) <= 1, shown
    box = page.locator("#viewer canvas").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -100)
    page.wait_for_function(f"() => Number(document.querySelector('#viewer canvas').dataset.zoom) > {fitted * 1.3}")
    zoomed = zoom_of(page)
    assert canvas_stats(page)["checksum"] != first["checksum"]
    page.locator("#viewer canvas").focus()
    page.keyboard.press("-")
    assert math.isclose(zoom_of(page), zoomed / 1.25, rel_tol=1e-3)
    page.keyboard.press("+")
    assert math.isclose(zoom_of(page), zoomed, rel_tol=1e-3)
    screenshot(page, "viewer-cine-zoomed")
    page.get_by_role("button", name="Reset view").click()
    assert math.isclose(zoom_of(page), fitted, rel_tol=1e-6)

    # Pan: dragging moves the image.
    before_pan = canvas_stats(page)["checksum"]
    page.mouse.move(box["x"] + 300, box["y"] + 200)
    page.mouse.down()
    page.mouse.move(box["x"] + 380, box["y"] + 260, steps=4)
    page.mouse.up()
    assert canvas_stats(page)["checksum"] != before_pan
    page.get_by_role("button", name="Reset view").click()

    # Frames: the slider and the arrow keys ask for another frame and draw it.
    slider = page.locator("#viewer input[type=range]#viewer-frame")
    assert slider.get_attribute("max") == "29"
    assert page.get_by_label("Frame", exact=True).count() == 1
    key_pixels = canvas_stats(page)["checksum"]
    slider.fill("12")
    wait_for_frame(page, 12)
    assert any(url.endswith("/frames/12.png") for url in frames_asked)
    assert page.locator("#viewer .viewer-frame-number").inner_text() == "Frame 13 of 30"
    assert canvas_stats(page)["checksum"] != key_pixels
    page.locator("#viewer canvas").focus()
    page.keyboard.press("ArrowRight")
    wait_for_frame(page, 13)
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    wait_for_frame(page, 11)
    assert slider.input_value() == "11"
    screenshot(page, "viewer-cine-frame-12")

    # The caliper: two clicks, the length in mm from the pixel spacing
    # [row, column]: dy × row spacing, dx × column spacing.
    page.get_by_role("button", name="Caliper").click()
    assert page.get_by_role("button", name="Caliper").get_attribute("aria-pressed") == "true"
    zoom = zoom_of(page)
    start, end = (200.0, 150.0), (420.0, 330.0)
    click_image(page, start, end)
    readout = page.locator("#viewer .viewer-readout").inner_text()
    match = re.search(r"Caliper: ([\d.,]+) mm", readout)
    assert match, readout
    row_mm, column_mm = image.pixel_spacing_mm
    expected = math.hypot((end[0] - start[0]) / zoom * column_mm, (end[1] - start[1]) / zoom * row_mm)
    assert math.isclose(float(match.group(1).replace(",", "")), expected, rel_tol=0.02), (readout, expected)
    assert "no pixel spacing" not in readout
    screenshot(page, "viewer-cine-caliper")
    page_problems.assert_none()


def test_window_and_level_exist_for_a_grey_image_only_and_change_its_pixels(
    page: Page, page_problems: PageProblems, live_server: Any, users: dict[str, Any], make_case: Callable[..., Case]
) -> None:
    case = make_case(Arm.SPECIALIST_ONLY, images=("grey",), ai=False)
    [image] = case.images
    logged_in(page, live_server, users[Role.CLINICIAN_READER], PASSWORD)
    open_case(page, live_server, case.task())

    width, centre = page.get_by_label("Window width"), page.get_by_label("Window centre")
    assert width.count() == 1 and centre.count() == 1
    assert width.get_attribute("type") == "range" and centre.get_attribute("type") == "range"
    # A single frame: no frame slider.
    assert page.locator("#viewer-frame").count() == 0 and page.get_by_label("Frame", exact=True).count() == 0
    full = canvas_stats(page)
    assert full["lit"] > 0

    # A narrow window around a high level darkens the picture; a low level brightens it.
    width.fill("40")
    centre.fill("220")
    dark = canvas_stats(page)
    assert dark["lit"] < full["lit"], (dark, full)
    centre.fill("30")
    bright = canvas_stats(page)
    assert bright["lit"] > dark["lit"] and bright["checksum"] != full["checksum"]
    assert page.locator("#viewer output[for='viewer-window-width']").inner_text() == "40"
    screenshot(page, "viewer-grey-windowed")
    page.get_by_role("button", name="Reset view").click()
    assert width.input_value() == "256" and page.get_by_label("Window centre").input_value() == "128"
    assert canvas_stats(page)["checksum"] == full["checksum"]

    # The caliper says when the image carries no pixel spacing.
    page.get_by_role("button", name="Caliper").click()
    click_image(page, (300, 200), (500, 200))
    readout = page.locator("#viewer .viewer-readout").inner_text()
    if image.pixel_spacing_mm is None:
        assert re.search(r"Caliper: [\d.]+ px \(no pixel spacing\)", readout), readout
    else:
        assert re.search(r"Caliper: [\d.]+ mm", readout), readout
    screenshot(page, "viewer-grey-caliper")
    page_problems.assert_none()


def test_an_outline_drawn_on_the_image_is_autosaved_with_the_draft_and_cleared(
    page: Page, page_problems: PageProblems, live_server: Any, users: dict[str, Any], make_case: Callable[..., Case]
) -> None:
    case = make_case(Arm.SPECIALIST_ONLY, ai=False)
    [image] = case.images
    task = case.task()
    logged_in(page, live_server, users[Role.CLINICIAN_READER], PASSWORD)
    open_case(page, live_server, task)
    assert current_read(task).outline == {}

    page.get_by_role("button", name="Outline", exact=True).click()
    assert page.get_by_role("button", name="Close outline").is_disabled()
    click_image(page, (300, 150), (460, 160), (480, 320))
    box = page.locator("#viewer canvas").bounding_box()
    assert box is not None
    page.mouse.dblclick(box["x"] + 310, box["y"] + 300)  # the fourth vertex, and the end of the outline
    hidden = page.locator("#read-form input[name='outline']")
    page.wait_for_function(
        "() => document.querySelector(\"#read-form input[name='outline']\").value.includes('points')"
    )
    outline = json.loads(hidden.input_value())
    assert outline["image"] == image.pk and outline["frame"] == frame_of(page)
    assert len(outline["points"]) == 4
    assert all(0 <= x <= image.columns and 0 <= y <= image.rows for x, y in outline["points"])

    # The autosave stores it: the read in the database has it, the page its new revision.
    status = page.locator("#save-status")
    status.wait_for()
    page.wait_for_function("() => /Draft saved at/.test(document.querySelector('#save-status').textContent)")
    assert SAVED.search(status.inner_text())
    read = current_read(task)
    assert read.outline == outline
    assert page.locator("#read-form input[name='revision']").input_value() == str(read.revision)
    assert page.locator("#read-form").get_attribute("data-revision") == str(read.revision)
    screenshot(page, "viewer-outline-saved")

    # On a new visit the outline is drawn again; clearing it is saved too.
    open_case(page, live_server, task)
    assert "Outline: 4 points" in page.locator("#viewer .viewer-readout").inner_text()
    page.get_by_role("button", name="Clear outline").click()
    assert hidden.input_value() == "{}"
    page.wait_for_function("() => /Draft saved at/.test(document.querySelector('#save-status').textContent)")
    assert current_read(task).outline == {}
    page_problems.assert_none()


def test_two_tabs_saving_the_same_read_the_second_gets_the_conflict_and_keeps_its_entries(
    page: Page, page_problems: PageProblems, live_server: Any, users: dict[str, Any], make_case: Callable[..., Case]
) -> None:
    case = make_case(Arm.SPECIALIST_ONLY, ai=False)
    task = case.task()
    logged_in(page, live_server, users[Role.CLINICIAN_READER], PASSWORD)
    open_case(page, live_server, task)
    second = page.context.new_page()  # the same reader's second tab
    second_problems = PageProblems()
    second.on("console", second_problems.on_console)
    second.on("pageerror", second_problems.on_page_error)
    second.on("response", second_problems.on_response)
    open_case(second, live_server, task)
    status_a, status_b = page.locator("#save-status"), second.locator("#save-status")

    page.locator("#read-form [name='confidence']").fill("4")
    page.locator("#read-form [name='largest_diameter_mm']").fill("18")
    page.wait_for_function("() => /Draft saved at/.test(document.querySelector('#save-status').textContent)")
    saved = current_read(task)
    assert saved.data == {"confidence": 4, "largest_diameter_mm": 18} and saved.revision == 1

    # The second tab still holds revision 0: its save is refused, its entries stay.
    second.locator("#read-form [name='note']").fill("Entered in the second tab")
    second.locator("#read-form [name='confidence']").fill("2")
    second.wait_for_function("() => /saved elsewhere/.test(document.querySelector('#save-status').textContent)")
    assert "your changes were not saved" in status_b.inner_text()
    assert "alert-error" in (status_b.get_attribute("class") or "")
    assert second.locator("#read-form [name='note']").input_value() == "Entered in the second tab"
    assert second.locator("#read-form [name='confidence']").input_value() == "2"
    assert current_read(task).data == saved.data  # nothing overwritten
    screenshot(second, "read-form-conflict")

    # Loading the saved version puts the first tab's read and revision into the second.
    second.get_by_role("button", name="Load the saved version").click()
    assert second.locator("#read-form [name='confidence']").input_value() == "4"
    assert second.locator("#read-form [name='largest_diameter_mm']").input_value() == "18"
    assert second.locator("#read-form [name='note']").input_value() == ""
    assert second.locator("#read-form input[name='revision']").input_value() == "1"
    assert "loaded" in status_b.inner_text()
    second.locator("#read-form [name='note']").fill("Added after loading")
    second.wait_for_function("() => /Draft saved at/.test(document.querySelector('#save-status').textContent)")
    final = current_read(task)
    assert final.revision == 2
    assert final.data == {"confidence": 4, "largest_diameter_mm": 18, "note": "Added after loading"}
    second.close()

    # Now the first tab is behind: its next save is refused in turn, and the
    # reader may deliberately save their entries over the saved version.
    page.locator("#read-form [name='confidence']").fill("5")
    page.wait_for_function("() => /saved elsewhere/.test(document.querySelector('#save-status').textContent)")
    assert current_read(task).data == final.data
    page.get_by_role("button", name="Save my entries over it").click()
    page.wait_for_function("() => /Draft saved at/.test(document.querySelector('#save-status').textContent)")
    assert "alert-error" not in (status_a.get_attribute("class") or "")
    overwritten = current_read(task)
    assert overwritten.revision == 3 and overwritten.data == {"confidence": 5, "largest_diameter_mm": 18}
    assert page.locator("#read-form input[name='revision']").input_value() == "3"

    for problems in (second_problems, page_problems):
        conflicts = [text for text in problems.failed_requests if "→ 409" in text]
        assert len(conflicts) == 1 and "/draft/" in conflicts[0], problems.describe()
        others = [text for text in problems.failed_requests if text not in conflicts]
        console = [text for text in problems.console_errors if "409" not in text]
        assert not (others or console or problems.page_errors), problems.describe()


def computed_scores(page: Page) -> dict[str, str]:
    scores: dict[str, str] = page.locator("#computed").evaluate(
        "dl => Object.fromEntries("
        "[...dl.querySelectorAll('[data-score]')].map(dd => [dd.dataset.score, dd.textContent.trim()]))"
    )
    return scores


def words(page: Page, key: str, code: str) -> str:
    text = page.locator(f"#computed [data-score='{key}']").get_attribute(f"data-label-{code.lower()}")
    assert text, (key, code)
    return text


def test_the_ti_rads_preview_follows_the_form_and_signing_fills_in_the_time_on_the_page(
    page: Page, page_problems: PageProblems, live_server: Any, users: dict[str, Any], make_case: Callable[..., Case]
) -> None:
    case = make_case(Arm.SPECIALIST_ONLY, ai=False)
    task = case.task()
    logged_in(page, live_server, users[Role.CLINICIAN_READER], PASSWORD)
    open_case(page, live_server, task)
    opened = time.monotonic()
    form = page.locator("#read-form")
    assert computed_scores(page) == {"points": "—", "category": "—", "fna": "—"}

    for name, value in (
        ("composition", "solid"),
        ("echogenicity", "hypoechoic"),
        ("shape", "wider_than_tall"),
        ("margin", "smooth"),
    ):
        form.locator(f"select[name='{name}']").select_option(value)
    form.locator("input[name='echogenic_foci'][value='none']").check()
    assert computed_scores(page) == {"points": "4", "category": words(page, "category", "TR4"), "fna": "—"}
    form.locator("[name='largest_diameter_mm']").fill("18")
    assert computed_scores(page)["fna"] == words(page, "fna", "fna")
    # "None" with another focus is refused by the server: no points until it is resolved.
    form.locator("input[name='echogenic_foci'][value='punctate']").check()
    assert computed_scores(page)["points"] == "—"
    form.locator("input[name='echogenic_foci'][value='none']").uncheck()
    assert computed_scores(page) == {
        "points": "7",
        "category": words(page, "category", "TR5"),
        "fna": words(page, "fna", "fna"),
    }
    form.locator("[name='largest_diameter_mm']").fill("7")
    assert computed_scores(page)["fna"] == words(page, "fna", "follow-up")
    previewed = computed_scores(page)
    screenshot(page, "read-form-ti-rads-preview")

    # The server computes the same from the autosaved draft.
    page.wait_for_function("() => /Draft saved at/.test(document.querySelector('#save-status').textContent)")
    open_case(page, live_server, task)
    assert computed_scores(page) == previewed

    # Signed with "time spent" left empty: the time the page was on screen is filled in.
    form.locator("select[name='cancer_suspected']").select_option("false")
    form.locator("[name='confidence']").fill("4")
    assert form.locator("[name='time_spent_s']").input_value() == ""
    form.locator("[name='password']").fill(PASSWORD)
    with page.expect_navigation():
        form.locator("button[name='action'][value='sign']").click()
    signed = Read.objects.get(task=task, current=True)
    assert signed.signed_at is not None, page.locator(".read-summary, .alert").all_inner_texts()
    spent = signed.data["time_spent_s"]
    assert isinstance(spent, int) and 1 <= spent <= math.ceil(time.monotonic() - opened) + 1, spent
    assert signed.values["category"] == "TR5"
    page_problems.assert_none()


def test_the_swede_preview_and_a_photograph_without_pixel_spacing(
    page: Page, page_problems: PageProblems, live_server: Any, users: dict[str, Any], make_case: Callable[..., Case]
) -> None:
    case = make_case(Arm.SPECIALIST_ONLY, indication="cervical", ai=False)
    [image] = case.images
    assert image.pixel_spacing_mm is None and image.frames == 1
    task = case.task()
    logged_in(page, live_server, users[Role.CLINICIAN_READER], PASSWORD)
    open_case(page, live_server, task)
    assert canvas_stats(page)["lit"] > 0
    # A colour photograph: no window/level, no frame slider.
    assert page.get_by_label("Window width").count() == 0 and page.locator("#viewer-frame").count() == 0
    page.get_by_role("button", name="Caliper").click()
    click_image(page, (200, 150), (320, 250))
    readout = page.locator("#viewer .viewer-readout").inner_text()
    assert re.search(r"Caliper: [\d.,]+ px \(no pixel spacing\)", readout), readout

    form = page.locator("#read-form")
    assert computed_scores(page) == {"swede_total": "—"}
    items = {
        "swede_acetowhite": 2,
        "swede_margins_surface": 1,
        "swede_vessels": 2,
        "swede_lesion_size": 0,
        "swede_iodine": 1,
    }
    for name, score in items.items():
        assert computed_scores(page) == {"swede_total": "—"}  # until all five are chosen
        form.locator(f"select[name='{name}']").select_option(str(score))
    assert computed_scores(page) == {"swede_total": "6"}
    screenshot(page, "read-form-swede-preview")
    page.wait_for_function("() => /Draft saved at/.test(document.querySelector('#save-status').textContent)")
    assert current_read(task).data == items  # whole numbers, as the form's choices are
    open_case(page, live_server, task)
    assert computed_scores(page) == {"swede_total": "6"}
    page_problems.assert_none()


def nodule_dicom() -> bytes:
    """A grey ultrasound DICOM of a synthetic thyroid with a large nodule,
    which the shipped model finds (as in tests/ai_fixtures.py)."""
    frame = thyroid_frame(np.random.default_rng(3), 128)
    dataset = ultrasound_dataset(rows=128, columns=128, monochrome_bits=8, seed=11)
    dataset.set_pixel_data(np.ascontiguousarray(frame.image, dtype=np.uint8), "MONOCHROME2", 8)
    return to_bytes(dataset)


def add_judged_image(case: Case, uploader: Any, data: bytes) -> tuple[Image, AiResult]:
    """Another accepted image of the case, judged by the deployed model in-process."""
    outcome = imaging_services.image_upload(
        actor=actor_for(uploader), participant=case.participant, name="nodule.dcm", data=data
    )
    assert outcome.status == "accepted" and outcome.image is not None, outcome.reason
    results = [done for queued in AiResult.objects.filter(image=outcome.image) for done in jobs.process(queued.pk)]
    assert len(results) == 1
    return outcome.image, results[0]


def test_the_ai_contour_and_heat_map_are_fetched_drawn_and_recorded_each_time_they_are_shown(
    page: Page,
    page_problems: PageProblems,
    live_server: Any,
    users: dict[str, Any],
    make_case: Callable[..., Case],
) -> None:
    case = make_case(Arm.AI_ASSISTED)  # the colour cine loop, its AI result on one of its 30 frames
    [cine] = case.images
    [cine_result] = case.ai_results
    nodule, nodule_result = add_judged_image(case, users[Role.COORDINATOR], nodule_dicom())
    assert nodule_result.measurements["lesion_count"] >= 1 and nodule_result.mask and nodule_result.probability
    clinician = users[Role.CLINICIAN_READER]
    task = case.task()
    # The unaided read is signed (through the services: its page is tested elsewhere).
    actor = actor_for(clinician)
    services.reading_task_start(actor=actor, task=task)
    task.refresh_from_db()
    services.read_sign(
        actor=actor, task=task, phase=Phase.UNAIDED, data=valid_read("thyroid"), revision=0, password=PASSWORD
    )
    logged_in(page, live_server, clinician, PASSWORD)
    open_case(page, live_server, task)
    assert page.locator("#viewer[data-ai-api]").count() == 1

    # The panel shows the opinion on the image on screen; the suggestion is recorded once per result.
    panel = page.locator("#ai-panel")
    page.locator("#ai-panel .ai-facts").wait_for()
    text = panel.inner_text()
    model = cine_result.model_version
    assert model.version in text and model.name in text and model.sha256[:12] in text
    assert model.sha256[:13] not in text
    if cine_result.category:
        assert "Suggested category" in text and str(cine_result.category) in text
    assert AiDisplay.objects.filter(task=task, what="suggestion").count() == 2
    contour, heatmap = page.get_by_label("Contour"), page.get_by_label("Heat map")
    assert contour.count() == 1 and heatmap.count() == 1
    # Checked before any screenshot: Playwright's screenshots leave style="" on form controls.
    assert page.evaluate(INLINE_IN_SCRIPTED_PARTS) == []
    page.get_by_label("Overlay opacity").fill("100")

    # The cine loop: the layer belongs to the frame the AI judged, which the panel names.
    ai_frame = cine_result.frame_index or 0
    if cine.key_frame == ai_frame:  # pragma: no cover - the key frame is the AI's: look elsewhere first
        page.locator("#viewer canvas").focus()
        page.keyboard.press("ArrowRight")
        wait_for_frame(page, ai_frame + 1)
    with page.expect_response(lambda response: response.url.endswith("contour.png")) as first_layer:
        contour.check()
    assert first_layer.value.status == 200
    note = page.locator("#ai-panel .ai-frame-note")
    note.wait_for()
    assert f"AI judged frame {ai_frame + 1}" in note.inner_text()
    page.get_by_role("button", name=f"Go to frame {ai_frame + 1}").click()
    wait_for_frame(page, ai_frame)
    assert note.is_hidden()
    assert AiDisplay.objects.filter(task=task, what="contour").count() == 1
    screenshot(page, "viewer-ai-cine-frame")

    # The nodule image: its own opinion, and a contour that shows.
    page.get_by_role("button", name="Image 2").click()
    page.locator(f"#viewer canvas[data-image='{nodule.pk}']").wait_for()
    assert page.get_by_role("button", name="Image 2").get_attribute("aria-pressed") == "true"
    assert not contour.is_checked()  # a layer is never carried over to another image
    facts = page.locator("#ai-panel .ai-facts").inner_text()
    assert re.search(rf"Lesions found\s+{nodule_result.measurements['lesion_count']}", facts), facts
    bare = canvas_stats(page)
    with page.expect_response(lambda response: response.url.endswith("contour.png")) as layer:
        contour.check()
    assert layer.value.status == 200 and layer.value.headers["content-type"] == "image/png"
    assert f"/ai/{nodule_result.pk}/" in layer.value.url
    page.wait_for_function(f"() => ({CANVAS_STATS})(document.querySelector('#viewer canvas')).contour > 20")
    assert canvas_stats(page)["contour"] > bare["contour"] + 20
    assert AiDisplay.objects.filter(task=task, what="contour").count() == 2
    screenshot(page, "viewer-ai-contour")

    # Off and on again: fetched again (never from a cache) and recorded again.
    contour.uncheck()
    assert canvas_stats(page)["checksum"] == bare["checksum"]
    with page.expect_response(lambda response: response.url.endswith("contour.png")) as again:
        contour.check()
    assert again.value.status == 200
    page.wait_for_function(f"() => ({CANVAS_STATS})(document.querySelector('#viewer canvas')).contour > 20")
    assert AiDisplay.objects.filter(task=task, what="contour").count() == 3
    contour.uncheck()

    with page.expect_response(lambda response: response.url.endswith("heatmap.png")) as heat:
        heatmap.check()
    assert heat.value.status == 200
    page.wait_for_function(
        f"() => ({CANVAS_STATS})(document.querySelector('#viewer canvas')).checksum !== {bare['checksum']}"
    )
    assert AiDisplay.objects.filter(task=task, what="heatmap").count() == 1
    assert list(AiDisplay.objects.filter(task=task, ai_result=nodule_result).values_list("what", flat=True)) == [
        "suggestion",
        "contour",
        "contour",
        "heatmap",
    ]
    screenshot(page, "viewer-ai-heatmap")
    page_problems.assert_none()
