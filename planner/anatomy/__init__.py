"""Anatomy for planning: tissue maps, tissue surfaces, nerves, probe placement and
trajectory safety checks.

Plain data and functions; no rendering is imported until a surface or tube is asked for.

- Tissue maps: :func:`tissue_from_label_file` / :func:`tissue_from_label_map` (label
  values through a table of ``data/label_tables.toml``), :func:`tissue_for_ultrasound`;
  CT goes through :func:`planner.tissue_map.tissue_from_ct`.
- Surfaces: :func:`tissue_surfaces` (one ``pyvista.PolyData`` per class, world mm).
- Nerves: :class:`Nerve`, :func:`nerves_from_labels`, :func:`trace_nerve`,
  :func:`nerve_from_polyline`.
- Skin: :func:`distance_to_skin`, :func:`skin_crossing`, :func:`skin_normal`.
- Placement: :class:`ProbePlacement`, :func:`place_probe`, :func:`placement_from_plan_probe`.
- Safety: :func:`check_trajectory`, :func:`check_placement`,
  :func:`check_plan_trajectories` returning :class:`PlanWarning` lists.
"""

from planner.anatomy.nerves import Nerve, nerve_from_polyline, nerves_from_labels, trace_nerve
from planner.anatomy.placement import (
    ProbePlacement,
    entry_from_direction,
    place_probe,
    placement_from_plan_probe,
)
from planner.anatomy.skin import distance_to_skin, inside_body, skin_crossing, skin_normal
from planner.anatomy.surfaces import tissue_surfaces
from planner.anatomy.tissues import (
    LabelTable,
    body_mask_from_tissue,
    get_label_table,
    label_names_from_header,
    load_label_tables,
    tissue_for_ultrasound,
    tissue_from_label_file,
    tissue_from_label_map,
)
from planner.anatomy.trajectory import (
    WARNING_CODES,
    Crossing,
    PlanWarning,
    check_placement,
    check_plan_trajectories,
    check_trajectory,
    nerve_crossings,
    shaft_crossings,
)

__all__ = [
    "WARNING_CODES",
    "Crossing",
    "LabelTable",
    "Nerve",
    "PlanWarning",
    "ProbePlacement",
    "body_mask_from_tissue",
    "check_placement",
    "check_plan_trajectories",
    "check_trajectory",
    "distance_to_skin",
    "entry_from_direction",
    "get_label_table",
    "inside_body",
    "label_names_from_header",
    "load_label_tables",
    "nerve_crossings",
    "nerve_from_polyline",
    "nerves_from_labels",
    "place_probe",
    "placement_from_plan_probe",
    "shaft_crossings",
    "skin_crossing",
    "skin_normal",
    "tissue_for_ultrasound",
    "tissue_from_label_file",
    "tissue_from_label_map",
    "tissue_surfaces",
]
