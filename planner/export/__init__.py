"""Batch export of plans: pictures, HTML reports and data files for whole folders.

``planner export`` is :func:`export_plans`::

    from planner.export import export_plans
    report = export_plans(["data/plans"], "out", views="3d,axial,probe", times="end", workers=2)
    print("\\n".join(report.describe()))
    raise SystemExit(report.exit_code)

Modules: :mod:`~planner.export.settings` (options), :mod:`~planner.export.screenshots`
(annotated pictures), :mod:`~planner.export.data` (STL/VTP/NIfTI/CSV),
:mod:`~planner.export.report` (HTML), :mod:`~planner.export.svgplot` (the growth plot),
:mod:`~planner.export.manifest` (records, checksums, resume), :mod:`~planner.export.batch`
(plans, workers, Dask). Headless: nothing here imports the web app; pyvista loads only
when a 3D picture is rendered.

Research and education only; not for clinical use.
"""

from planner.export.batch import ExportReport, PlanOutcome, PlanTask, export_one_plan, export_plans, find_plans
from planner.export.settings import VIEWS, ExportSettings, make_settings, parse_size, parse_times, parse_views

__all__ = [
    "VIEWS",
    "ExportReport",
    "ExportSettings",
    "PlanOutcome",
    "PlanTask",
    "export_one_plan",
    "export_plans",
    "find_plans",
    "make_settings",
    "parse_size",
    "parse_times",
    "parse_views",
]
