"""The browser viewer in a real browser: Debian's chromium driven by Playwright.

Each test starts its own server (``python -m web.app``) on a free port with a fresh data
folder, so tests are independent. Skipped when /usr/bin/chromium is absent, unless
CRYOPLAN_REQUIRE_BROWSER=1 (then they fail). Pictures are checked by their pixel colours:
the isotherm colours come from planner.scene.palette.
"""

from __future__ import annotations

import base64
import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
REPO = Path(__file__).resolve().parents[1]
DEMO_TIP = (-82.4, 81.5, -156.6)  # the intercostal demo plan's probe
DEMO_ENTRY = (-92.0, 107.9, -153.7)

if not CHROMIUM.exists():
    if os.environ.get("CRYOPLAN_REQUIRE_BROWSER") == "1":
        raise RuntimeError("CRYOPLAN_REQUIRE_BROWSER=1 but /usr/bin/chromium is missing (apt-get install chromium)")
    pytest.skip("Debian chromium (/usr/bin/chromium) is not installed", allow_module_level=True)

playwright_api = pytest.importorskip("playwright.sync_api")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _poll(condition, *, timeout_s: float, what: str, interval_s: float = 0.25):
    """Call ``condition()`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if isinstance(last, np.ndarray) or last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})")


@pytest.fixture()
def server(tmp_path):
    """A viewer on a free port, serving the intercostal demo with ``tmp_path/data`` as data folder."""
    data = tmp_path / "data"
    data.mkdir()
    port = _free_port()
    env = {**os.environ, "VTK_DEFAULT_OPENGL_WINDOW": "vtkEGLRenderWindow", "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "server.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "web.app", "intercostal", "--port", str(port), "--data", str(data)],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )

    def listening():
        if process.poll() is not None:
            raise AssertionError(f"server exited: {(tmp_path / 'server.log').read_text()[-2000:]}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    _poll(listening, timeout_s=90, what="the server to listen")
    yield {"url": f"http://127.0.0.1:{port}/", "data": data, "log": tmp_path / "server.log", "shots": tmp_path}
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture()
def page(browser, server):
    context = browser.new_context(viewport={"width": 1500, "height": 950}, accept_downloads=True)
    page = context.new_page()
    page.goto(server["url"])
    page.wait_for_selector("#slice-axial", timeout=60_000)
    yield page
    context.close()


# ---------------------------------------------------------------- pixels
def _rgb(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def canvas_rgb(page) -> np.ndarray:
    """The 3D view's pixels as shown (the remote view's canvas), with the HTML legend and
    the screenshot button hidden so their colour swatches do not count."""
    page.add_style_tag(content="#legend, #shot-3d { visibility: hidden !important; }")
    return _rgb(page.locator("#view3d-box canvas").screenshot())


def slice_rgb(page, name: str) -> np.ndarray:
    url = page.get_attribute(f"#slice-{name}", "src")
    return _rgb(base64.b64decode(url.split(",", 1)[1]))


def purple_mask(rgb: np.ndarray) -> np.ndarray:
    """Pixels of the -40 degC magenta, also when shaded and seen through the translucent
    0 and -20 degC shells and the skin: blue and red both well above green. No structure
    of the scene has that colour (skin and bone are warm or white, vessels red, nerves
    yellow, the probe grey and cyan)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return (b > g + 40) & (r > g + 20)


def cold_mask(rgb: np.ndarray) -> np.ndarray:
    """Pixels in the isotherm colours: the magenta, or clearly blue (the -20 and 0 degC
    shells; the probe's cyan active segment also counts, so compare with a picture taken
    before the freeze)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return purple_mask(rgb) | ((b > r + 30) & (b > g + 20) & (b > 80))


def nonblank(rgb: np.ndarray) -> bool:
    """A picture, not a blank: over 5 % of pixels differ from the most common (background)
    colour and there are over 200 distinct colours (a shaded scene, not a flat fill)."""
    flat = rgb.reshape(-1, 3)
    colours, counts = np.unique(flat, axis=0, return_counts=True)
    background = colours[np.argmax(counts)]
    return np.mean(np.any(np.abs(flat - background) > 12, axis=1)) > 0.05 and len(colours) > 200


def add_probe(page, tip=DEMO_TIP, entry=DEMO_ENTRY) -> None:
    for prefix, point in (("tip", tip), ("entry", entry)):
        for axis, value in zip("xyz", point):
            page.fill(f"#{prefix}-{axis}", str(value))
    before = page.locator(".probe-row").count()
    page.click("#add-probe")
    _poll(lambda: page.locator(".probe-row").count() == before + 1, timeout_s=30, what="the probe in the list")


# ---------------------------------------------------------------- tests
def test_demo_case_loads_and_the_3d_view_shows_it(page, server):
    rgb = _poll(lambda: (lambda image: image if nonblank(image) else None)(canvas_rgb(page)), timeout_s=60,
                what="non-blank 3D view")
    from PIL import Image

    Image.fromarray(rgb.astype(np.uint8)).save(server["shots"] / "demo_3d.png")
    assert page.inner_text("#clinical-note").strip().lower().startswith("research and education only")
    assert "Intercostal" in page.inner_text("#title")
    # The nerve tubes are yellow: some yellow pixels in the 3D view, and in the coronal slice.
    yellow = (rgb[..., 0] > 150) & (rgb[..., 1] > 120) & (rgb[..., 2] < 80)
    assert yellow.sum() > 50
    coronal = slice_rgb(page, "coronal")
    assert ((coronal[..., 0] > 200) & (coronal[..., 1] > 170) & (coronal[..., 2] < 60)).sum() > 20
    # No ice before any freeze.
    assert purple_mask(rgb).sum() < 20
    page.screenshot(path=str(server["shots"] / "demo.png"))


def test_typed_probe_and_freeze_show_isotherms_and_the_time_slider_changes_them(page, server):
    # No ice before the probe (a preview's ice may appear as soon as it is added).
    before_3d = canvas_rgb(page)
    before_axial = slice_rgb(page, "axial")
    add_probe(page)
    assert "-82.4, 81.5, -156.6" in page.inner_text("#probe-list")
    # One 60 s freeze, a snapshot every 15 s, on the coarse grid: quick.
    while page.locator(".step-remove").count() > 1:
        page.locator(".step-remove").last.click()
        page.wait_for_timeout(200)
    duration = page.locator(".step-duration input").first
    duration.fill("60")
    duration.press("Tab")
    every = page.locator("#snapshot-every")
    every.fill("15")
    every.press("Tab")
    _poll(lambda: page.locator(".step-remove").count() == 1, timeout_s=10, what="a one-step protocol")
    page.click("#run-freeze")
    _poll(lambda: "done" in page.inner_text("#freeze-status") or "fail" in page.inner_text("#freeze-status"),
          timeout_s=240, what="the freeze to finish", interval_s=1.0)
    assert "done" in page.inner_text("#freeze-status"), page.inner_text("#freeze-status")
    _poll(lambda: "t = 60 s" in page.inner_text("#snapshot-label"), timeout_s=20, what="the last snapshot")

    after_3d = _poll(
        lambda: (lambda image: image if cold_mask(image).sum() > cold_mask(before_3d).sum() + 300
                 and purple_mask(image).sum() > 50 else None)(canvas_rgb(page)),
        timeout_s=30, what="isotherm colours in the 3D view")
    axial = _poll(
        lambda: (lambda image: image if cold_mask(image).sum() > cold_mask(before_axial).sum() + 50
                 and purple_mask(image).sum() > 10 else None)(slice_rgb(page, "axial")),
        timeout_s=20, what="isotherm colours in the axial slice")
    # The ice sits around the probe: the crosshair (moved to the probe's tip when it was
    # added) is the picture's green cross; the -40 degC pixels' centre lies within 10 % of the
    # picture from it.
    rows, cols = np.nonzero(purple_mask(axial))
    green = (axial[..., 1] > 150) & (axial[..., 0] < 120) & (axial[..., 2] < 120)
    cross_row = np.argmax(green.sum(axis=1))
    cross_col = np.argmax(green.sum(axis=0))
    assert abs(rows.mean() - cross_row) < 0.1 * axial.shape[0]
    assert abs(cols.mean() - cross_col) < 0.1 * axial.shape[1]
    page.screenshot(path=str(server["shots"] / "frozen.png"))
    # The metrics panel: planner.metrics' nerve coverage of the full run, in words and numbers.
    metrics = _poll(lambda: (lambda text: text if "intercostal_nerve_T7 (target" in text else None)(
        page.inner_text("#metrics")), timeout_s=60, what="nerve coverage in the metrics panel")
    assert "Full simulation" in metrics and "below -20 \N{DEGREE SIGN}C" in metrics and "mm (" in metrics
    assert "ice volumes" in metrics and "ml" in metrics
    assert "PREVIEW" not in page.inner_text("#shown-label")

    # Back to the first snapshot (15 s): less ice on the slice and in 3D.
    page.locator(".v-slider-thumb").first.focus()
    page.keyboard.press("Home")
    _poll(lambda: "t = 15 s" in page.inner_text("#snapshot-label"), timeout_s=20, what="the first snapshot")
    late_axial = cold_mask(axial).sum() - cold_mask(before_axial).sum()
    late_3d = cold_mask(after_3d).sum() - cold_mask(before_3d).sum()
    early_axial = _poll(
        lambda: (lambda image: image if cold_mask(image).sum() - cold_mask(before_axial).sum() < 0.8 * late_axial
                 else None)(slice_rgb(page, "axial")), timeout_s=20, what="a smaller ice ball on the slice")
    early_3d = _poll(
        lambda: (lambda image: image if cold_mask(image).sum() - cold_mask(before_3d).sum() < 0.8 * late_3d
                 else None)(canvas_rgb(page)), timeout_s=20, what="a smaller ice ball in 3D")
    # Still some ice at 15 s: the slider shows an earlier ice ball, not none.
    assert cold_mask(early_axial).sum() > cold_mask(before_axial).sum()
    page.screenshot(path=str(server["shots"] / "early.png"))
    # Play runs through the snapshots to the last and stops.
    page.click("#play")
    _poll(lambda: "t = 60 s" in page.inner_text("#snapshot-label"), timeout_s=30, what="play to reach the end")
    _poll(lambda: "mdi-play" in page.inner_html("#play"), timeout_s=10, what="play to stop at the end")


def test_a_typed_probe_shows_the_preview_without_a_freeze(page, server):
    before_3d = canvas_rgb(page)
    add_probe(page)
    before_axial = slice_rgb(page, "axial")  # the probe drawn, no ice yet (or the preview already)
    # The first preview of a probe model and protocol may build its table (a solver run,
    # cached on disk after): allow for it.
    _poll(lambda: page.locator("#shown-label").count() and "PREVIEW" in page.inner_text("#shown-label"),
          timeout_s=240, what="the preview label", interval_s=0.5)
    assert "approximation" in page.inner_text("#shown-label").lower()
    axial = _poll(lambda: (lambda image: image if purple_mask(image).sum() > 10 else None)(slice_rgb(page, "axial")),
                  timeout_s=20, what="preview isotherm colours in the axial slice")
    assert cold_mask(axial).sum() > cold_mask(before_axial).sum() or purple_mask(before_axial).sum() > 10
    _poll(lambda: (lambda image: image if cold_mask(image).sum() > cold_mask(before_3d).sum() + 300
                   and purple_mask(image).sum() > 50 else None)(canvas_rgb(page)),
          timeout_s=30, what="preview isotherm colours in the 3D view")
    assert "no freeze computed yet" in page.inner_text("#freeze-status")
    metrics = _poll(lambda: (lambda text: text if "intercostal_nerve_T7" in text else None)(
        page.inner_text("#metrics")), timeout_s=60, what="preview metrics")
    assert "PREVIEW (approximation)" in metrics and "not the full solver" in metrics.lower()
    page.screenshot(path=str(server["shots"] / "preview.png"))
    # Nudged: a new preview around the moved probe replaces the old one.
    old_rows, old_cols = np.nonzero(purple_mask(slice_rgb(page, "axial")))
    for _ in range(3):
        page.click("#nudge-xp")  # +1 mm each (left, +x in LPS)

    def moved():
        rows, cols = np.nonzero(purple_mask(slice_rgb(page, "axial")))
        return len(cols) > 10 and abs(cols.mean() - old_cols.mean()) > 1.5

    _poll(moved, timeout_s=60, what="the preview's ice to follow the nudged probe on the axial slice")
    assert "PREVIEW" in page.inner_text("#shown-label")


def test_export_report_offers_the_html_report(page, server):
    add_probe(page)
    page.fill("#plan-name", "export_check")
    page.click("#export-report")
    _poll(lambda: "exported" in page.inner_text("#export-status") or "failed" in page.inner_text("#export-status"),
          timeout_s=300, what="the export", interval_s=1.0)
    assert "exported" in page.inner_text("#export-status"), page.inner_text("#export-status")
    assert (server["data"] / "plans" / "export_check.json").exists()
    with page.expect_download() as download_info:
        page.get_by_text("report.html", exact=True).click()
    html_text = Path(download_info.value.path()).read_text()
    assert "export_check" in html_text and "clinical" in html_text.lower()
    with page.expect_download() as download_info:
        page.get_by_text("report with pictures (zip)").click()
    import zipfile

    with zipfile.ZipFile(download_info.value.path()) as bundle:
        names = bundle.namelist()
    assert any(name.endswith("report.html") for name in names) and sum(name.endswith(".png") for name in names) >= 3


def test_save_plan_reload_page_open_plan_gives_the_same_probes(page, server):
    add_probe(page)
    add_probe(page, tip=(-80.0, 82.0, -150.0), entry=(-90.0, 108.0, -150.0))
    listed = page.inner_text("#probe-list")
    page.fill("#plan-name", "browser_check")
    page.click("#save-plan")
    saved = server["data"] / "plans" / "browser_check.json"
    _poll(saved.exists, timeout_s=20, what="the saved plan file")
    page.reload()
    page.wait_for_selector("#slice-axial", timeout=60_000)
    page.click("#demo-intercostal")  # a fresh demo: no probes
    _poll(lambda: page.locator(".probe-row").count() == 0, timeout_s=30, what="the probes to clear")
    page.locator("#file-choice").click(force=True)
    page.get_by_text("plans/browser_check.json (plan)").click()
    page.click("#open-file")
    _poll(lambda: page.locator(".probe-row").count() == 2, timeout_s=30, what="the plan's probes")
    assert page.inner_text("#probe-list") == listed


def test_bad_upload_shows_an_error_and_the_session_keeps_working(page, server, tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('{"format": "cryoplan.plan", "schema_version": 1, "name": 5}')
    page.set_input_files("#upload", str(bad))
    message = _poll(lambda: page.locator("#error").count() and page.inner_text("#error"), timeout_s=30,
                    what="an error message")
    assert "broken.json" in message
    assert not (server["data"] / "uploads" / "broken.json").exists()  # refused uploads are not kept
    # Still working: a probe can be added and the slices still respond to a click.
    add_probe(page)
    before = page.get_attribute("#slice-coronal", "src")
    box = page.locator("#slice-axial").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.4)
    _poll(lambda: page.get_attribute("#slice-coronal", "src") != before, timeout_s=20,
          what="the coronal slice to follow the crosshair")


def _slice_point(page, name: str, fx: float, fy: float) -> tuple[float, float]:
    box = page.locator(f"#slice-{name}").bounding_box()
    return box["x"] + box["width"] * fx, box["y"] + box["height"] * fy


def test_drag_the_tip_trace_rename_and_delete_a_nerve(page, server):
    add_probe(page)
    tip_before = page.inner_text("#probe-list")
    for title in ("View", "Nerves"):  # panels closed at start
        page.locator(".v-expansion-panel-title", has_text=title).click()
    # Drag on the axial slice in "probe tip" mode: the selected probe's tip goes where the drag ends.
    page.locator("#mode-tip").click()
    x0, y0 = _slice_point(page, "axial", 0.5, 0.5)
    x1, y1 = _slice_point(page, "axial", 0.56, 0.5)
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=5)
    page.mouse.up()
    _poll(lambda: page.inner_text("#probe-list") != tip_before, timeout_s=20, what="the dragged tip")
    tip_text = page.inner_text("#probe-list").split("tip ", 1)[1].split(" ·", 1)[0]
    moved_tip = [float(v) for v in tip_text.split(",")]
    # The axial slice passes through the tip (the crosshair went there when the probe was
    # added): the dragged tip stays in that plane (same z) and moved within it.
    assert abs(moved_tip[2] - DEMO_TIP[2]) < 0.6
    assert np.hypot(moved_tip[0] - DEMO_TIP[0], moved_tip[1] - DEMO_TIP[1]) > 1.0
    # Trace a nerve by three clicks, finish, rename it, then delete it.
    nerves_before = page.locator(".nerve-row").count()
    page.locator("#mode-nerve").click()
    for fx in (0.3, 0.4, 0.5):
        page.mouse.click(*_slice_point(page, "axial", fx, 0.45))
    _poll(lambda: "3 points" in page.inner_text("#finish-nerve").lower(), timeout_s=20, what="three traced points")
    page.click("#finish-nerve")
    _poll(lambda: page.locator(".nerve-row").count() == nerves_before + 1, timeout_s=20, what="the traced nerve")
    name = page.locator(".nerve-name input").last
    name.fill("traced_check")
    name.press("Tab")
    # The server has the new name: a saved plan holds it.
    page.fill("#plan-name", "nerve_check")
    page.click("#save-plan")
    saved = server["data"] / "plans" / "nerve_check.json"
    _poll(lambda: saved.exists() and "traced_check" in saved.read_text(), timeout_s=20,
          what="the renamed nerve in the saved plan")
    page.locator(".nerve-delete").last.click()
    _poll(lambda: page.locator(".nerve-row").count() == nerves_before, timeout_s=20, what="the nerve deleted")


def test_two_tabs_share_one_session(page, server, browser):
    """By design (web/state.py) every tab shows and edits the same session: a probe added in
    one tab appears in the other, and edits from both land without corrupting the list."""
    other_context = browser.new_context(viewport={"width": 1500, "height": 950})
    other = other_context.new_page()
    try:
        other.goto(server["url"])
        other.wait_for_selector("#slice-axial", timeout=60_000)
        add_probe(page)
        _poll(lambda: other.locator(".probe-row").count() == 1, timeout_s=20, what="the probe in the other tab")
        add_probe(other, tip=(-80.0, 82.0, -150.0), entry=(-90.0, 108.0, -150.0))
        _poll(lambda: page.locator(".probe-row").count() == 2, timeout_s=20, what="the other tab's probe")
        assert page.inner_text("#probe-list") == other.inner_text("#probe-list")
        assert other.inner_text("#clinical-note").strip().lower().startswith("research and education only")
    finally:
        other_context.close()
