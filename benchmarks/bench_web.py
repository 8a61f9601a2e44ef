"""Viewer speed: first 3D image after opening the page, slice update after a click, 3D frame time.

    .venv/bin/python benchmarks/bench_web.py [--ct PATH_TO_Cranium.inv3] [--frames 20]

Measures, for the demo case and (when given or installed) the InVesalius head CT:

- page open -> first non-blank 3D image in Debian's chromium (server already running
  with the case loaded, as ``planner serve CASE`` leaves it);
- page open -> first non-blank 3D image is read from the remote view's <img> inside the
  page (cheap), not from page screenshots (0.5-4 s each on 2 busy cores);
- crosshair click on the axial slice -> the coronal picture changed, in the browser (by
  Playwright polling, and timed inside the page up to the new image decoded); and the
  server's own time to redraw the three orthogonal slices;
- server render time per frame while the camera turns (surfaces only, and with CT volume
  rendering).

Targets (issue 5): first image under 3 s for the demo case, slice update under 150 ms.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
HEAD_CT = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CANVAS_NONBLANK_JS = """() => {
  // trame's remote view shows each rendered frame as an <img> behind its (empty) event canvas.
  const view = document.querySelector('#view3d-box img');
  if (!view || !view.complete || !view.naturalWidth) return false;
  const small = document.createElement('canvas');
  small.width = 96; small.height = 96;
  const context = small.getContext('2d');
  const w = view.naturalWidth, h = view.naturalHeight;
  context.drawImage(view, 0.2 * w, 0.2 * h, 0.6 * w, 0.6 * h, 0, 0, 96, 96);
  const data = context.getImageData(0, 0, 96, 96).data;
  const counts = new Map();
  for (let i = 0; i < data.length; i += 4) {
    const key = (data[i] >> 3) << 10 | (data[i + 1] >> 3) << 5 | (data[i + 2] >> 3);
    counts.set(key, (counts.get(key) || 0) + 1);
  }
  let most = 0;
  for (const n of counts.values()) most = Math.max(most, n);
  return counts.size > 40 && most < 0.95 * 96 * 96;
}"""
"""True once the 3D view's canvas shows a shaded picture (not one flat colour)."""


CLICK_TO_SLICE_JS = """(fraction) => new Promise((resolve) => {
  const axial = document.querySelector('#slice-axial');
  const coronal = document.querySelector('#slice-coronal');
  const before = coronal.getAttribute('src');
  const rect = axial.getBoundingClientRect();
  const observer = new MutationObserver(() => {
    const now = document.querySelector('#slice-coronal');
    if (now && now.getAttribute('src') !== before) {
      observer.disconnect();
      now.decode().then(() => resolve(performance.now() - t0));
    }
  });
  observer.observe(coronal.parentElement, {attributes: true, subtree: true, childList: true});
  const t0 = performance.now();
  axial.dispatchEvent(new MouseEvent('click', {bubbles: true, clientX: rect.left + fraction * rect.width,
                                               clientY: rect.top + 0.5 * rect.height}));
})"""
"""Milliseconds from a click on the axial picture to the coronal picture's new image, decoded."""


def _nonblank(png: bytes) -> bool:
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3).astype(int)
    colours, counts = np.unique(rgb, axis=0, return_counts=True)
    background = colours[np.argmax(counts)]
    return np.mean(np.any(np.abs(rgb - background) > 12, axis=1)) > 0.05 and len(colours) > 200


def browser_times(target: str) -> dict:
    """Start a server on ``target``, then time page open -> 3D image and click -> slice update."""
    from playwright.sync_api import sync_playwright

    port = _free_port()
    env = {**os.environ, "VTK_DEFAULT_OPENGL_WINDOW": "vtkEGLRenderWindow"}
    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "web.app", target, "--port", str(port)], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if server.poll() is not None or time.perf_counter() - started > 180:
                raise RuntimeError("server did not start")
            time.sleep(0.1)
        server_start = time.perf_counter() - started
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 950})
            opened = time.perf_counter()
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#view3d-box canvas", timeout=60_000)
            box = page.locator("#view3d-box canvas").bounding_box()
            # Read the view's pixels in the page itself (drawn into a small 2D canvas): cheap,
            # unlike a page screenshot (0.5-4 s each on 2 busy cores, which the first version
            # of this benchmark counted in the time).
            while not page.evaluate(CANVAS_NONBLANK_JS):
                if time.perf_counter() - opened > 120:
                    raise RuntimeError("no 3D image within 120 s")
                time.sleep(0.02)
            first_image = time.perf_counter() - opened
            page.wait_for_selector("#slice-axial")
            clicks, in_page = [], []
            box = page.locator("#slice-axial").bounding_box()
            for fraction in (0.3, 0.5, 0.7, 0.4, 0.6):
                before = page.get_attribute("#slice-coronal", "src")
                t0 = time.perf_counter()
                page.mouse.click(box["x"] + box["width"] * fraction, box["y"] + box["height"] * 0.5)
                while page.get_attribute("#slice-coronal", "src") == before:
                    time.sleep(0.005)
                clicks.append(time.perf_counter() - t0)
            # The same, timed inside the page (no Playwright round trips): a click event on the
            # axial picture -> the coronal picture's new image decoded.
            for fraction in (0.35, 0.55, 0.65, 0.45, 0.5):
                in_page.append(page.evaluate(CLICK_TO_SLICE_JS, fraction))
            browser.close()
        return {"server_start_s": server_start, "first_3d_image_s": first_image,
                "click_to_slice_ms": 1000 * float(np.median(clicks)),
                "click_to_slice_in_page_ms": float(np.median(in_page))}
    finally:
        server.terminate()
        server.wait(timeout=10)


def server_times(target: str, frames: int) -> dict:
    """In-process: redraw of the three orthogonal slices, and 3D frame times while turning."""
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    from web.state import Session
    from web.views import Views

    session = Session()
    if Path(target).exists():
        session.load_volume_file(Path(target))
    else:
        session.load_demo(target)
    views = Views(session)
    views.rebuild()
    bounds = session.volume.bounds_world()
    slice_times = []
    for fraction in np.linspace(0.3, 0.7, 7):
        session.crosshair = bounds[0] + fraction * (bounds[1] - bounds[0])
        t0 = time.perf_counter()
        for name in ("axial", "coronal", "sagittal"):
            views.slice_url(name)
        slice_times.append(time.perf_counter() - t0)
    out = {"three_slices_ms": 1000 * float(np.median(slice_times))}
    plotter = views.plotter
    for preset in ("off", "CT soft tissue"):
        views.set_volume_preset(preset)
        plotter.render_window.Render()
        times = []
        for _ in range(frames):
            plotter.camera.Azimuth(5.0)
            t0 = time.perf_counter()
            plotter.render_window.Render()
            times.append(time.perf_counter() - t0)
        out[f"frame_ms_volume_{preset.replace(' ', '_')}"] = 1000 * float(np.median(times))
    out["render_size"] = tuple(plotter.window_size)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ct", default=str(HEAD_CT) if HEAD_CT.exists() else None)
    parser.add_argument("--frames", type=int, default=15)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    targets = ["intercostal"] + ([args.ct] if args.ct else [])
    for target in targets:
        print(f"== {Path(target).name}")
        if not args.no_browser and Path(CHROMIUM).exists():
            for key, value in browser_times(target).items():
                print(f"  {key}: {value:.3f}")
        for key, value in server_times(target, args.frames).items():
            print(f"  {key}: {value if isinstance(value, tuple) else round(value, 1)}")


if __name__ == "__main__":
    main()
