"""Views: the 3D scene and the four slice pictures of a session (logic; no trame here).

The 3D view is a ``pyvista.Plotter`` rendered on the server (the browser gets images
through trame's remote view); each layer (volume, tissues, nerves, vessels, probes,
isotherms) is rebuilt on its own when it changes. Slices are numpy pictures from
:mod:`planner.scene.slices`, sent as PNG data URLs.
"""

from __future__ import annotations

import base64

import numpy as np

from planner.scene import palette, slices, view3d

SLICE_NAMES = ("axial", "coronal", "sagittal", "probe")
SLICE_MAX_PIXELS = 360
TISSUE_DISPLAY_VOXELS = 400_000
"""Tissue surfaces are built from a label map thinned to about this many voxels (display only)."""


SLICE_JPEG_QUALITY = 92


def data_url(content: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(content).decode("ascii")


def encode_jpeg(rgb: np.ndarray, *, quality: int = SLICE_JPEG_QUALITY) -> bytes:
    """JPEG bytes of an ``(rows, cols, 3)`` uint8 picture, without chroma subsampling (the
    thin coloured contour lines keep their colour). About 20x faster to encode than PNG and
    half the bytes for a slice picture; downloads of a slice stay PNG."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, format="JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()


class Views:
    """Pictures of one :class:`web.state.Session`.

    Parameters
    ----------
    session : Session
    window_size : (width, height)
        Initial 3D render size in pixels (the remote view resizes it to the browser's).
    """

    def __init__(self, session, *, window_size=(900, 640)) -> None:
        self.session = session
        self.plotter = view3d.new_plotter(window_size=window_size, interactive=True)
        self.volume_preset = "off"
        self.visible_tissues = list(view3d.DEFAULT_VISIBLE_TISSUES)
        self.window = palette.default_window("CT")
        self.snapshot: int = -1
        self.selected_probe: int | None = None
        self.trace_points: list = []
        self._tissue_surfaces: dict = {}
        self._isotherm_cache: dict = {}
        self._slice_values: dict = {}

    # ------------------------------------------------------------ 3D
    def rebuild(self) -> None:
        """Everything, after a new volume or plan: volume, surfaces, lines, probes, isotherms, camera."""
        session = self.session
        self.plotter.clear_actors()
        self._isotherm_cache.clear()
        self._slice_values.clear()
        self._tissue_surfaces = {}
        if session.labels is not None:
            from planner.anatomy import tissue_surfaces

            display = view3d.strided(session.labels, max_voxels=TISSUE_DISPLAY_VOXELS)
            self._tissue_surfaces = tissue_surfaces(display)
        if session.volume is not None:
            self.window = palette.default_window(session.volume.modality, session.volume.value_range())
        view3d.build_scene(
            self.plotter,
            volume=session.volume,
            volume_preset=self.volume_preset,
            tissue_surfaces=self._tissue_surfaces,
            visible_tissues=self.visible_tissues,
            nerves=session.nerves,
            vessels=session.vessels,
            probes=session.placed_probes(),
            selected_probe=self.selected_probe,
            isotherm_levels_c=session.isotherms_c,
            legend=False,  # the page draws the legend in HTML
        )
        self.update_isotherms()

    def tissue_keys(self) -> list[str]:
        return [key for key in self._tissue_surfaces if key not in ("nerve", "vessel")]

    def set_volume_preset(self, preset: str) -> None:
        """``"off"`` or a name of :data:`planner.scene.palette.VOLUME_PRESETS`."""
        self.volume_preset = preset
        if preset == "off" or self.session.volume is None:
            self.plotter.remove_actor("volume", render=False)
        else:
            view3d.add_volume(self.plotter, self.session.volume, preset=preset)

    def set_visible_tissues(self, keys) -> None:
        self.visible_tissues = list(keys)
        view3d.set_tissue_visibility(self.plotter, self.visible_tissues)

    def update_probes(self) -> None:
        view3d.add_probes(self.plotter, self.session.placed_probes(), selected=self.selected_probe)

    def update_nerves(self) -> None:
        view3d.add_nerves(self.plotter, self.session.nerves)
        view3d.remove_layer(self.plotter, "trace")
        if len(self.trace_points) >= 1:
            import pyvista as pv

            points = np.asarray(self.trace_points, dtype=float)
            self.plotter.add_mesh(pv.PolyData(points), color=palette.NERVE_COLOR, point_size=10,
                                  render_points_as_spheres=True, name="trace:points", reset_camera=False,
                                  render=False)

    def shown(self) -> tuple[object, int | str, bool]:
        """``(result, snapshot, is_preview)`` drawn now (see :meth:`Session.shown_result`): a
        full result at the slider's snapshot, or a preview's lowest temperature (``"min"``)."""
        result, is_preview, _ = self.session.shown_result()
        return result, ("min" if is_preview else self.snapshot), is_preview

    def isotherm_surfaces(self, result, snapshot) -> dict:
        if result is None:
            return {}
        key = (id(result), snapshot)
        if key not in self._isotherm_cache:
            if len(self._isotherm_cache) > 64:  # previews come and go: keep memory bounded
                self._isotherm_cache.clear()
            self._isotherm_cache[key] = view3d.isotherm_surfaces(result, self.session.isotherms_c, snapshot)
        return self._isotherm_cache[key]

    def update_isotherms(self) -> None:
        result, snapshot, _ = self.shown()
        if result is None:
            view3d.remove_layer(self.plotter, "isotherm:")
            return
        view3d.add_isotherms(self.plotter, self.isotherm_surfaces(result, snapshot))

    def new_result(self) -> None:
        self.snapshot = len(self.session.result.snapshot_times) - 1 if self.session.result is not None else -1
        self.update_isotherms()

    def focus_probe(self, index: int, *, half_size_mm: float = 35.0) -> None:
        """Point the 3D camera at a probe's tip from along its approach (a box of
        ``2 * half_size_mm`` around the tip fills the view)."""
        probes = self.session.placed_probes()
        if not 0 <= index < len(probes):
            return
        tip = np.asarray(probes[index].tip, dtype=float)
        view3d.frame_bounds(self.plotter, np.stack([tip - half_size_mm, tip + half_size_mm]),
                            view=view3d.approach_view([probes[index]]))

    def screenshot_3d(self) -> bytes:
        """PNG of the 3D view as it is now."""
        import io

        from PIL import Image

        image = self.plotter.screenshot(return_img=True)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        return buffer.getvalue()

    # ------------------------------------------------------------ slices
    def plane(self, name: str) -> slices.SlicePlane | None:
        """The plane of a slice view now (None for the probe view without a probe, or without a volume)."""
        session = self.session
        if session.volume is None:
            return None
        if name == "probe":
            probes = session.placed_probes()
            if not probes:
                return None
            index = self.selected_probe if self.selected_probe is not None and self.selected_probe < len(probes) else 0
            probe = probes[index]
            depth = None
            if session.labels is not None:
                try:
                    from planner.anatomy import skin_normal

                    normal = skin_normal(session.labels, probe.entry)
                    if np.all(np.isfinite(normal)) and np.linalg.norm(normal) > 0:
                        depth = -np.asarray(normal, dtype=float)
                except Exception:  # no skin near the entry: fall back to the shaft's main axis
                    depth = None
            return slices.probe_plane(probe.tip, probe.entry, depth_direction=depth, max_pixels=SLICE_MAX_PIXELS)
        return slices.orthogonal_plane(name, self.session.crosshair, session.volume.bounds_world(),
                                       max_pixels=SLICE_MAX_PIXELS)

    def slice_picture(self, name: str) -> tuple[np.ndarray, slices.SlicePlane] | None:
        """``(rgb, plane)`` of one slice view with all overlays, or None when it has nothing to show."""
        plane = self.plane(name)
        if plane is None:
            return None
        session = self.session
        temperature = None
        result, snapshot, is_preview = self.shown()
        if result is not None:
            temperature = slices.sample_temperature_plane(result, plane, snapshot=snapshot)
        probes = [slices.probe_overlay(p, selected=(i == self.selected_probe))
                  for i, p in enumerate(session.placed_probes())]
        nerves = list(session.nerves)
        rgb = slices.render_slice(
            session.volume, plane, window=self.window.width, level=self.window.level, temperature=temperature,
            isotherms_c=session.isotherms_c, nerves=nerves, vessels=session.vessels, probes=probes,
            crosshair=session.crosshair if name != "probe" else None,
            title=(name if name != "probe" else "along the probe") + (" - PREVIEW (approximation)" if is_preview else ""),
        )
        if self.trace_points:
            rgb = np.array(rgb)
            rows, cols, distance = plane.world_to_pixel(np.asarray(self.trace_points, dtype=float))
            for r, c, d in zip(rows, cols, distance):
                if abs(d) <= 2.0 and 0 <= r < rgb.shape[0] and 0 <= c < rgb.shape[1]:
                    rr, cc = int(round(r)), int(round(c))
                    rgb[max(rr - 2, 0) : rr + 3, max(cc - 2, 0) : cc + 3] = palette.to_rgb255(palette.NERVE_COLOR)
        return rgb, plane

    def slice_url(self, name: str) -> str:
        picture = self.slice_picture(name)
        if picture is None:
            return ""
        return data_url(encode_jpeg(picture[0]), "image/jpeg")

    def click_to_world(self, name: str, x_px: float, y_px: float, width_px: float, height_px: float, *,
                       natural_width_px: float = 0.0, natural_height_px: float = 0.0):
        """World point (mm) under a click at ``(x_px, y_px)`` on a slice element shown ``width_px``
        x ``height_px`` big in the browser; None when the view shows nothing or the click is
        outside the picture.

        With the picture's own size (``natural_*``), the picture is taken as letterboxed in the
        element (CSS ``object-fit: contain``: scaled to fit, centred); without it, as filling it.
        """
        plane = self.plane(name)
        if plane is None or width_px <= 0 or height_px <= 0:
            return None
        left, top, shown_width, shown_height = 0.0, 0.0, float(width_px), float(height_px)
        if natural_width_px and natural_height_px and natural_width_px > 0 and natural_height_px > 0:
            scale = min(width_px / natural_width_px, height_px / natural_height_px)
            shown_width, shown_height = natural_width_px * scale, natural_height_px * scale
            left, top = (width_px - shown_width) / 2.0, (height_px - shown_height) / 2.0
        fx = (float(x_px) - left) / shown_width
        fy = (float(y_px) - top) / shown_height
        if not (0.0 <= fx <= 1.0 and 0.0 <= fy <= 1.0):
            return None
        rows, cols = plane.shape
        return plane.pixel_to_world(fy * rows - 0.5, fx * cols - 0.5)
