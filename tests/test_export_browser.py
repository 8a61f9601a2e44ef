"""Export reports in a real browser: Debian's chromium driven by Playwright.

The report and index pages must open from disk with no console errors, load every picture
(``naturalWidth > 0``), draw the growth plot and ask for nothing from the network.
Skipped when /usr/bin/chromium is absent, unless CRYOPLAN_REQUIRE_BROWSER=1 (then they fail).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from planner.export import export_plans

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

if not CHROMIUM.exists():
    if os.environ.get("CRYOPLAN_REQUIRE_BROWSER") == "1":
        raise RuntimeError("CRYOPLAN_REQUIRE_BROWSER=1 but /usr/bin/chromium is missing (apt-get install chromium)")
    pytest.skip("Debian chromium (/usr/bin/chromium) is not installed", allow_module_level=True)

playwright_api = pytest.importorskip("playwright.sync_api")


def _plan(path: Path) -> Path:
    """Two probes in muscle with a target nerve between them (metrics tables and warnings)."""
    plan = {
        "format": "cryoplan.plan",
        "schema_version": 1,
        "name": "Two probes <teaching> & a nerve",  # markup in the name must come out as text
        "description": "Browser test plan.",
        "volume": None,
        "tissue": {"source": "homogeneous", "class": "muscle", "overrides": {}},
        "probes": [{"name": "A", "model": "n2o-16g", "tip": [-3.0, 0.0, 0.0], "entry": [-3.0, 0.0, 30.0]},
                   {"name": "B", "model": "n2o-16g", "tip": [3.0, 0.0, 0.0], "entry": [3.0, 0.0, 30.0]}],
        "protocol": [{"kind": "freeze", "duration_s": 40.0}, {"kind": "passive_thaw", "duration_s": 10.0},
                     {"kind": "freeze", "duration_s": 30.0}],
        "nerves": [{"name": "target", "points": [[-15.0, 2.5, 2.0], [15.0, 2.5, 2.0]], "radius_mm": 0.8,
                    "target": True}],
        "isotherms_c": [0.0, -20.0, -40.0],
        "snapshot_times_s": None,
        "grid": None,
    }
    path.write_text(json.dumps(plan), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser")
    plans = folder / "plans"
    plans.mkdir()
    _plan(plans / "two_probes.json")
    (plans / "zz_broken.json").write_text("{ not json", encoding="utf-8")
    out = folder / "out"
    report = export_plans([plans], out, views="3d,axial,probe", times="40,end", size="480x360", spacing_mm=2.0)
    assert [o.status for o in report.outcomes] == ["ok", "failed"]
    return out


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _open(browser, path: Path, shot: Path | None = None) -> dict:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors, requests = [], []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("requestfailed", lambda request: errors.append(f"failed: {request.url}"))
    page.on("request", lambda request: requests.append(request.url))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    images = page.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
    facts = {
        "errors": errors,
        "requests": requests,
        "images": images,
        "svg_lines": page.evaluate("document.querySelectorAll('svg polyline').length"),
        "text": page.inner_text("body"),
        "title": page.title(),
    }
    if shot is not None:
        page.screenshot(path=str(shot), full_page=True)
    page.close()
    return facts


def test_plan_report_opens_without_errors_and_shows_its_pictures(exported, browser, tmp_path):
    facts = _open(browser, exported / "two_probes" / "report.html", shot=tmp_path / "report.png")
    assert facts["errors"] == []
    assert len(facts["images"]) == 6  # 3 views x 2 times
    for src, complete, width in facts["images"]:
        assert complete and width == 480, src
    assert all(url.startswith("file://") for url in facts["requests"]), facts["requests"]
    assert facts["svg_lines"] == 3  # growth of 0, -20 and -40 degC
    text = facts["text"]
    assert "Not for clinical use." in text
    assert "Two probes <teaching> & a nerve" in text and "Two probes <teaching> & a nerve" in facts["title"]
    for words in ("Warnings", "Nerves", "Ice volumes", "Probes", "Protocol", "Data files", "min_temperature.nii.gz"):
        assert words in text
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_index_compares_plans_and_reports_the_failure(exported, browser):
    facts = _open(browser, exported / "index.html")
    assert facts["errors"] == []
    assert len(facts["images"]) == 1 and facts["images"][0][2] > 0  # the exported plan's thumbnail
    assert all(url.startswith("file://") for url in facts["requests"])
    text = facts["text"]
    assert "2 plans: 1 exported, 0 up to date from an earlier run, 1 failed" in text
    assert "zz_broken.json" in text and "not valid JSON" in text
    assert "Not for clinical use." in text
