"""The page: a toolbar with the not-for-clinical-use note, a side panel per task (files,
view, probes, nerves, freeze, metrics) and the views (3D plus four slices).

Only layout here; each control calls a :class:`web.controller.Controller` method.
"""

from __future__ import annotations

from trame.ui.vuetify3 import SinglePageWithDrawerLayout
from trame.widgets import html
from trame.widgets import vtk as vtk_widgets
from trame.widgets import vuetify3 as v3

# The click mode and the picture's own size go with the click: trame sends a state change
# (the radio) later than a trigger, and the picture is letterboxed in its box (object-fit).
SLICE_CLICK_ARGS = ("[{name}, $event.offsetX, $event.offsetY, $event.target.clientWidth, $event.target.clientHeight,"
                    " click_mode, $event.target.naturalWidth, $event.target.naturalHeight]")
# The typed numbers go with the click: the page may not have sent the last keystrokes' state yet.
TYPED_ARGS = "[tip_x, tip_y, tip_z, entry_x, entry_y, entry_z]"
SCREENSHOT_JS = "utils.download('{name}.png', trigger('screenshot', ['{name}']), 'image/png')"


def _number(label, model, element_id, **kwargs):
    return v3.VTextField(label=label, v_model=(model,), id=element_id, density="compact", hide_details=True,
                         type="number", step="0.1", **kwargs)


def files_panel(c) -> None:
    with v3.VExpansionPanel(title="Files and cases", value="files"):
        with v3.VExpansionPanelText():
            with html.Div(classes="d-flex flex-wrap ga-1 mb-2"):
                html.Div("Demo cases:", classes="text-caption w-100")
                v3.VBtn("{{ demo }}", v_for="demo in cases", key="demo", size="small", variant="tonal",
                        click=(c.load_demo, "[demo]"), id=("`demo-${demo}`",))
            v3.VSelect(label="Open from data folder", items=("files",), v_model=("file_choice",), density="compact",
                       id="file-choice", hide_details=True, no_data_text="no plans or volumes in the data folders")
            v3.VBtn("Open", click=c.open_file, size="small", classes="mt-1", id="open-file")
            v3.VFileInput(label="Upload a plan or volume", v_model=("upload",), density="compact", id="upload",
                          hide_details=True, classes="mt-2", show_size=True)
            v3.VTextField(label="Plan name", v_model=("plan_name",), density="compact", hide_details=True,
                          classes="mt-2", id="plan-name")
            with html.Div(classes="d-flex flex-wrap ga-1 mt-1"):
                v3.VBtn("Save plan", click=(c.save_plan, "[plan_name]"), size="small", disabled=("!can_save",), id="save-plan")
                v3.VBtn("Download plan", size="small", id="download-plan",
                        click="utils.download(`${plan_name || 'plan'}.json`, trigger('plan_json'), 'application/json')")
            html.Div("Saving and uploads need a data folder (--data DIR).", v_if="!can_save",
                     classes="text-caption text-medium-emphasis")


def view_panel(c) -> None:
    with v3.VExpansionPanel(title="View", value="view"):
        with v3.VExpansionPanelText():
            v3.VSelect(label="Window preset", items=("window_presets",), v_model=("window_preset",),
                       density="compact", hide_details=True, id="window-preset")
            with html.Div(classes="d-flex ga-1 mt-1"):
                _number("Window width", "window_width", "window-width")
                _number("Level", "window_level", "window-level")
            v3.VSelect(label="3D volume rendering", items=("volume_presets",), v_model=("volume_preset",),
                       density="compact", hide_details=True, classes="mt-2", id="volume-preset")
            v3.VSelect(label="Tissue surfaces", items=("tissue_keys",), v_model=("visible_tissues",), multiple=True,
                       chips=True, closable_chips=True, density="compact", hide_details=True, classes="mt-2",
                       id="tissues")
            with html.Div(classes="d-flex ga-1 mt-2 align-center"):
                v3.VTextField(label="Crosshair x, y, z (mm)", v_model=("crosshair_text",), density="compact",
                              hide_details=True, id="crosshair")
                v3.VBtn("Go", size="small", click=c.set_crosshair_text, id="crosshair-go")
            html.Div("A click on a slice sets (for a probe tip or entry, drag it there and let go):",
                     classes="text-caption mt-2")
            with v3.VRadioGroup(v_model=("click_mode",), density="compact", hide_details=True, inline=True):
                v3.VRadio(label="crosshair", value="crosshair", id="mode-crosshair")
                v3.VRadio(label="probe tip", value="tip", id="mode-tip")
                v3.VRadio(label="probe entry", value="entry", id="mode-entry")
                v3.VRadio(label="nerve point", value="nerve", id="mode-nerve")


def probes_panel(c) -> None:
    with v3.VExpansionPanel(title="Probes", value="probes"):
        with v3.VExpansionPanelText():
            v3.VSelect(label="Model", items=("probe_models",), v_model=("new_model",), density="compact",
                       hide_details=True, id="probe-model")
            html.Div("Tip (mm, world LPS)", classes="text-caption mt-1")
            with html.Div(classes="d-flex ga-1"):
                _number("x", "tip_x", "tip-x")
                _number("y", "tip_y", "tip-y")
                _number("z", "tip_z", "tip-z")
            html.Div("Entry (mm)", classes="text-caption mt-1")
            with html.Div(classes="d-flex ga-1"):
                _number("x", "entry_x", "entry-x")
                _number("y", "entry_y", "entry-y")
                _number("z", "entry_z", "entry-z")
            with html.Div(classes="d-flex flex-wrap ga-1 mt-1"):
                v3.VBtn("Add probe", click=(c.add_probe, TYPED_ARGS), size="small", color="primary", id="add-probe")
                v3.VBtn("Apply to selected", click=(c.apply_typed, TYPED_ARGS), size="small", disabled=("selected_probe === null",),
                        id="apply-probe")
            with html.Div(v_if="selected_probe !== null", classes="d-flex flex-wrap ga-1 mt-2"):
                html.Span("Nudge 1 mm:", classes="text-caption")
                for axis in "xyz":
                    for sign, label in ((-1, "-"), (1, "+")):
                        v3.VBtn(f"{label}{axis}", size="x-small", click=(c.nudge, f"['{axis}', {sign}]"),
                                id=f"nudge-{axis}{'m' if sign < 0 else 'p'}")
                v3.VBtn("advance", size="x-small", click=(c.nudge, "['shaft', 1]"), id="nudge-advance")
                v3.VBtn("3D: look at it", size="x-small", click=c.focus_probe, id="focus-probe")
                v3.VBtn("withdraw", size="x-small", click=(c.nudge, "['shaft', -1]"), id="nudge-withdraw")
            with v3.VList(density="compact", id="probe-list"):
                with v3.VListItem(v_for="p in probes", key="p.index", active=("selected_probe === p.index",),
                                  click="selected_probe = p.index", classes="probe-row"):
                    v3.VListItemTitle("{{ p.name }} — {{ p.model }}")
                    v3.VListItemSubtitle("tip {{ p.tip }} · entry {{ p.entry }}")
                    html.Div("⚠ {{ w }}", v_for="w in p.warnings", classes="text-caption text-orange probe-warning")
                    with v3.Template(v_slot_append=True):
                        v3.VBtn(icon="mdi-delete", size="x-small", variant="text", click=(c.delete_probe, "[p.index]"))


def nerves_panel(c) -> None:
    with v3.VExpansionPanel(title="Nerves", value="nerves"):
        with v3.VExpansionPanelText():
            v3.VBtn("Find nerves in the label map", click=c.nerves_from_labels, size="small", id="nerves-from-labels")
            html.Div("Trace: choose 'nerve point' in View, click along the nerve on the slices, then finish.",
                     classes="text-caption mt-2")
            with html.Div(classes="d-flex ga-1"):
                v3.VTextField(label="Name", v_model=("new_nerve_name",), density="compact", hide_details=True)
                _number("Radius mm", "new_nerve_radius", "nerve-radius")
            with html.Div(classes="d-flex ga-1 mt-1"):
                v3.VBtn("Finish nerve ({{ trace_count }} points)", click=c.finish_nerve, size="small",
                        disabled=("trace_count < 2",), id="finish-nerve")
                v3.VBtn("Clear points", click=c.clear_trace, size="small", disabled=("trace_count === 0",))
            with html.Div(v_for="n in nerves", key="n.index", classes="d-flex ga-1 align-center mt-1 nerve-row"):
                v3.VTextField(v_model=("n.name",), density="compact", hide_details=True, classes="nerve-name",
                              blur=(c.update_nerve, "[n.index, n.name, n.radius]"))
                v3.VTextField(v_model=("n.radius",), density="compact", hide_details=True, type="number",
                              style="max-width: 96px", suffix="mm", classes="nerve-radius",
                              blur=(c.update_nerve, "[n.index, n.name, n.radius]"))
                html.Span("{{ n.length }} mm", classes="text-caption")
                v3.VBtn(icon="mdi-delete", size="x-small", variant="text", click=(c.delete_nerve, "[n.index]"),
                        classes="nerve-delete")


def freeze_panel(c) -> None:
    with v3.VExpansionPanel(title="Freeze", value="freeze"):
        with v3.VExpansionPanelText():
            with html.Div(v_for="(step, i) in protocol", key="i", classes="d-flex ga-1 align-center"):
                v3.VSelect(items=("step_kinds",), model_value=("step.kind",), density="compact", hide_details=True,
                           update_modelValue=(c.edit_step, "[i, 'kind', $event]"), classes="step-kind")
                v3.VTextField(model_value=("step.duration",), type="number", suffix="s", density="compact",
                              hide_details=True, style="max-width: 100px", classes="step-duration",
                              change=(c.edit_step, "[i, 'duration', $event.target.value]"))
                v3.VBtn(icon="mdi-close", size="x-small", variant="text", click=(c.remove_step, "[i]"),
                        classes="step-remove")
            v3.VBtn("Add step", size="small", click=c.add_step, variant="text", id="add-step")
            _number("Snapshot every (s)", "snapshot_every", "snapshot-every", classes="mt-1",
                    change=(c.set_snapshot_every, "[$event.target.value]"))
            v3.VSelect(label="Solver grid", items=("grid_choices",), v_model=("grid_choice",), density="compact",
                       hide_details=True, classes="mt-1", id="grid-choice")
            with html.Div(classes="d-flex ga-1 mt-2"):
                v3.VBtn("Run freeze", color="primary", size="small", click=c.start_freeze,
                        disabled=("freeze_running",), id="run-freeze")
                v3.VBtn("Cancel", size="small", click=c.cancel_freeze, disabled=("!freeze_running",),
                        id="cancel-freeze")
            v3.VProgressLinear(model_value=("freeze_progress",), height=8, classes="mt-2", color="light-blue",
                               id="freeze-progress")
            html.Div("{{ freeze_status }}", classes="text-caption", id="freeze-status")
            html.Div("{{ preview_status }}", v_if="preview_status", classes="text-caption text-orange",
                     id="preview-status")
            with html.Div(v_if="snapshot_count > 0", classes="mt-2"):
                with html.Div(classes="d-flex align-center ga-2"):
                    v3.VBtn(icon=("playing ? 'mdi-pause' : 'mdi-play'",), size="small", click=c.toggle_play,
                            id="play")
                    html.Span("{{ snapshot_label }}", id="snapshot-label")
                v3.VSlider(v_model=("snapshot_index",), min=0, max=("snapshot_count - 1",), step=1,
                           density="compact", hide_details=True, id="time-slider")


def metrics_panel(c) -> None:
    with v3.VExpansionPanel(title="Metrics", value="metrics"):
        with v3.VExpansionPanelText():
            html.Div("Place a probe for a preview, or run a freeze, to see numbers.", v_if="metrics.length === 0",
                     classes="text-caption")
            with html.Div(v_if="metrics.length > 0", id="metrics"):
                html.Div("{{ metrics_heading }}", classes="text-body-2 font-weight-bold", id="metrics-heading")
                html.Div("{{ shown_caveat }}", v_if="shown_kind === 'preview'", classes="text-caption text-orange",
                         id="metrics-caveat")
                with html.Ul(classes="text-caption pl-4"):
                    html.Li("{{ m.text }}", v_for="(m, i) in metrics", key="i",
                            classes=("m.kind === 'warning' ? 'text-red-lighten-2 metrics-warning' : "
                                     "(m.kind === 'note' ? 'text-medium-emphasis metrics-note' : 'metrics-fact')",))


def export_panel(c) -> None:
    with v3.VExpansionPanel(title="Report", value="report"):
        with v3.VExpansionPanelText():
            html.Div("Runs the full export (pictures, HTML report, data files) for the plan as it is now, into the "
                     "data folder's exports/ (saves the plan first).", classes="text-caption")
            v3.VBtn("Export report", size="small", click=(c.start_export, "[plan_name]"), disabled=("export_running || !can_save",),
                    id="export-report", classes="mt-1")
            v3.VProgressLinear(indeterminate=True, v_if="export_running", height=4, classes="mt-1")
            html.Div("{{ export_status }}", classes="text-caption", id="export-status")
            with html.Div(classes="d-flex flex-wrap ga-1 mt-1"):
                v3.VBtn("{{ f.title }}", v_for="f in export_files", key="f.path", size="x-small", variant="tonal",
                        prepend_icon="mdi-download", classes="export-download",
                        click="utils.download(f.name, trigger('export_file', [f.path]), f.mime)")


def slice_card(c, name: str, title: str) -> None:
    with html.Div(classes="slice-card", style="position: relative; background: #000; min-height: 0;"):
        html.Img(
            v_if=f"slice_{name}",
            src=(f"slice_{name}",),
            id=f"slice-{name}",
            style="width: 100%; height: 100%; object-fit: contain; cursor: crosshair; display: block;",
            click=(c.slice_click, SLICE_CLICK_ARGS.format(name=repr(name))),
            draggable="false",
        )
        html.Div(f"{title}: nothing to show yet", v_if=f"!slice_{name}",
                 classes="text-caption text-medium-emphasis pa-2")
        v3.VBtn(icon="mdi-camera", size="x-small", variant="tonal", title=f"download the {title} picture",
                style="position: absolute; right: 4px; top: 4px;", click=SCREENSHOT_JS.format(name=name),
                id=f"shot-{name}")


def build(server, c, views) -> SinglePageWithDrawerLayout:
    """Lay out the page on ``server``; returns the layout."""
    with SinglePageWithDrawerLayout(server, full_height=True) as layout:
        layout.title.set_text("cryoplan")
        with layout.toolbar:
            html.Span("{{ title }}", classes="text-body-2 ml-2 text-truncate", id="title")
            v3.VSpacer()
            v3.VChip("{{ note }}", color="orange", variant="flat", size="small", classes="mr-2", id="clinical-note",
                     prepend_icon="mdi-alert")
        with layout.drawer as drawer:
            drawer.width = 380
            v3.VAlert(text=("error",), v_if="error", type="error", density="compact", closable=True,
                      classes="ma-2", id="error", click_close="error = ''")
            v3.VAlert(text=("info",), v_if="info && !error", type="info", density="compact", variant="tonal",
                      classes="ma-2", id="info")
            with v3.VExpansionPanels(multiple=True, v_model=("open_panels", ["files", "probes", "freeze", "metrics", "report"]),
                                    variant="accordion"):
                files_panel(c)
                view_panel(c)
                probes_panel(c)
                nerves_panel(c)
                freeze_panel(c)
                metrics_panel(c)
                export_panel(c)
        with layout.content:
            with html.Div(style="display: grid; grid-template-columns: 3fr 2fr; grid-template-rows: 1fr 1fr;"
                                " gap: 4px; height: calc(100vh - 64px); padding: 4px; background: #111;"):
                with html.Div(style="grid-row: 1 / span 2; position: relative; min-height: 0;", id="view3d-box"):
                    view = vtk_widgets.VtkRemoteView(views.plotter.render_window, ref="view3d", interactive_ratio=0.5,
                                                     interactive_quality=60, still_quality=92)
                    c.ctrl.view_update = view.update
                    c.ctrl.view_reset_camera = lambda: None
                    with html.Div(style="position: absolute; left: 8px; bottom: 8px; background: rgba(0,0,0,.6);"
                                        " padding: 4px 8px; border-radius: 4px;", id="legend"):
                        with html.Div(v_for="e in legend", key="e.text", classes="d-flex align-center ga-1"):
                            html.Span(style=("{ background: e.color, width: '12px', height: '12px',"
                                             " display: 'inline-block' }",))
                            html.Span("{{ e.text }}", classes="text-caption", style="color: #eee")
                    html.Div("{{ shown_label }}", v_if="shown_label", id="shown-label",
                             classes=("shown_kind === 'preview' ? 'preview-label' : 'full-label'",),
                             style=("{ position: 'absolute', left: '8px', top: '30px', padding: '2px 8px',"
                                    " borderRadius: '4px', fontSize: '13px', maxWidth: '70%',"
                                    " background: shown_kind === 'preview' ? 'rgba(230,120,0,.85)'"
                                    " : 'rgba(0,0,0,.6)', color: '#fff' }",),
                             title=("shown_caveat",))
                    v3.VBtn(icon="mdi-camera", size="x-small", variant="tonal", title="download the 3D picture",
                            style="position: absolute; right: 4px; top: 4px;", click=SCREENSHOT_JS.format(name="3d"),
                            id="shot-3d")
                with html.Div(style="display: grid; grid-template-columns: 1fr 1fr; gap: 4px; min-height: 0;"):
                    slice_card(c, "axial", "axial")
                    slice_card(c, "coronal", "coronal")
                with html.Div(style="display: grid; grid-template-columns: 1fr 1fr; gap: 4px; min-height: 0;"):
                    slice_card(c, "sagittal", "sagittal")
                    slice_card(c, "probe", "along the probe")
    return layout
