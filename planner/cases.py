"""The case library: ready plans in ``data/cases/``, each with a short teaching note.

A case is an ordinary plan file (:mod:`planner.plan`); its ``name`` is the title shown in
menus, its ``description`` the teaching note (what the nerve is, why it is frozen, where
to aim, what to spare) and its ``notes`` where the anatomy and the placement come from.
Cases on the built-in demo anatomy always work; a case on an installed image (the head CT
of Debian's ``invesalius-examples``) is listed but marked unavailable, with the reason,
when the image is missing or is not the file the plan was made on (sha256).

>>> from planner.cases import list_cases, load_case
>>> [case.name for case in list_cases()]            # doctest: +SKIP
['head_supraorbital', 'intercostal_t7', 'lfcn_asis', 'morton_neuroma']
>>> plan, path = load_case("intercostal_t7")        # doctest: +SKIP

Research and education only; not for clinical use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from planner.errors import InputError
from planner.plan import PLAN_SUFFIX, DemoVolume, Plan, VolumeFile, file_problems, load_plan

CASES_DIR = Path(__file__).resolve().parent.parent / "data" / "cases"


@dataclass(frozen=True)
class CaseInfo:
    """One case of the library.

    Attributes
    ----------
    name : str
        The key (the plan file's stem), e.g. ``"intercostal_t7"``.
    title : str
        One line for menus (the plan's ``name``).
    note : str
        The teaching note (the plan's ``description``).
    path : Path
        The plan file.
    available : bool
        False when the case's image is missing or changed.
    reason : str
        Why it is unavailable (empty when available).
    anatomy : str
        ``"demo: intercostal"`` for built-in anatomy, else the image file's path.
    target_nerves : tuple of str
        Names of the nerves to freeze.
    probes : int
        Number of probes in the plan.
    """

    name: str
    title: str
    note: str
    path: Path
    available: bool
    reason: str
    anatomy: str
    target_nerves: tuple[str, ...]
    probes: int

    def to_dict(self) -> dict:
        """JSON-ready dict (for ``planner cases --json``)."""
        return {
            "name": self.name,
            "title": self.title,
            "note": self.note,
            "path": str(self.path),
            "available": self.available,
            "reason": self.reason,
            "anatomy": self.anatomy,
            "target_nerves": list(self.target_nerves),
            "probes": self.probes,
        }


def _case_paths(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix == PLAN_SUFFIX and p.is_file())


def _availability(plan: Plan, path: Path) -> tuple[bool, str]:
    problems = file_problems(plan, path)
    if not problems:
        return True, ""
    reason = "; ".join(problems)
    if isinstance(plan.volume, VolumeFile) and "invesalius" in plan.volume.path:
        reason += " (install the Debian package invesalius-examples: apt-get install invesalius-examples)"
    return False, reason


def _info(plan: Plan, path: Path) -> CaseInfo:
    available, reason = _availability(plan, path)
    if isinstance(plan.volume, DemoVolume):
        anatomy = f"demo: {plan.volume.demo}"
    elif isinstance(plan.volume, VolumeFile):
        anatomy = plan.volume.path
    else:
        anatomy = "homogeneous block"
    return CaseInfo(
        name=path.stem,
        title=plan.name,
        note=plan.description,
        path=path,
        available=available,
        reason=reason,
        anatomy=anatomy,
        target_nerves=tuple(n.name for n in plan.nerves if n.target),
        probes=len(plan.probes),
    )


def list_cases(*, folder=None) -> list[CaseInfo]:
    """Every case in the library, sorted by name.

    Parameters
    ----------
    folder : str or Path, optional
        Where the case plans are (default ``data/cases``).

    Raises
    ------
    InputError
        When a case file is not a valid plan (the message names the file): the library
        is part of the program and must stay valid.
    """
    folder = CASES_DIR if folder is None else Path(folder)
    return [_info(load_plan(path, check_files=False), path) for path in _case_paths(folder)]


def case_path(name: str, *, folder=None) -> Path:
    """The plan file of case ``name`` (InputError naming the known cases if there is none)."""
    folder = CASES_DIR if folder is None else Path(folder)
    key = str(name).strip()
    if key.endswith(PLAN_SUFFIX):
        key = key[: -len(PLAN_SUFFIX)]
    for path in _case_paths(folder):
        if path.stem == key or path.stem.lower() == key.lower():
            return path
    known = ", ".join(p.stem for p in _case_paths(folder)) or "none"
    raise InputError(f"unknown case {name!r}; known cases: {known}")


def load_case(name: str, *, folder=None) -> tuple[Plan, Path]:
    """Load case ``name``: its plan and the plan file's path (to resolve relative paths).

    Raises
    ------
    InputError
        Unknown case (the message lists the known ones), or a case whose image is not
        available (the message says why and how to install it).
    """
    path = case_path(name, folder=folder)
    plan = load_plan(path, check_files=False)
    available, reason = _availability(plan, path)
    if not available:
        raise InputError(f"case {path.stem}: not available: {reason}")
    return plan, path


def cases_table(cases: list[CaseInfo] | None = None) -> list[str]:
    """Human lines for ``planner cases``: name, title, availability, then the note, indented."""
    cases = list_cases() if cases is None else cases
    lines = []
    for case in cases:
        state = "" if case.available else "  [unavailable]"
        lines.append(f"{case.name}: {case.title}{state}")
        if not case.available:
            lines.append(f"    unavailable: {case.reason}")
        lines.append(f"    {case.note}")
    return lines


__all__ = ["CASES_DIR", "CaseInfo", "case_path", "cases_table", "list_cases", "load_case"]
