"""Records of what an export wrote: one per plan (for resuming) and one for the whole run.

Per plan, ``<out>/<plan>/export.json`` is written last, once every file of the plan is
in place: the plan's sha256, the export settings, and every file with its sha256. A
later run skips the plan when that record matches the plan, the settings and the files
on disk (:func:`finished_record`).

For the run, ``<out>/manifest.json`` lists every plan (ok, skipped as up to date, or
failed with its message) and every file with its plan, view, time and sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from planner import NOT_FOR_CLINICAL_USE, __version__

PLAN_RECORD_NAME = "export.json"
MANIFEST_NAME = "manifest.json"
PLAN_RECORD_FORMAT = "cryoplan.export.plan"
MANIFEST_FORMAT = "cryoplan.export.manifest"
MANIFEST_VERSION = 1
FILE_KEYS = ("path", "plan", "plan_name", "kind", "view", "time_s", "level_c", "format", "sha256", "bytes")


def sha256_file(path, *, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_entry(out_dir: Path, relative: str, **facts) -> dict:
    """Manifest entry of a written file: ``path`` (relative to ``out_dir``, ``/`` separators),
    the given facts (``kind``, ``view``, ``time_s``, ...), ``sha256`` and ``bytes``."""
    path = Path(out_dir) / relative
    entry = {"path": Path(relative).as_posix(), **facts}
    entry["sha256"] = sha256_file(path)
    entry["bytes"] = path.stat().st_size
    return entry


def write_json_atomic(path: Path, payload) -> Path:
    """Write ``payload`` as indented JSON (sorted keys off, ``\\n`` at the end) through a
    temporary file and a rename, so a reader never sees half a file."""
    path = Path(path)
    text = json.dumps(payload, indent=1, ensure_ascii=False, allow_nan=False) + "\n"
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) through a temporary file and a rename."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
    return path


def read_json(path: Path) -> dict | None:
    """The JSON object in ``path``, or None when it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            value = json.load(handle)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def plan_record_path(out_dir: Path, slug: str) -> Path:
    return Path(out_dir) / slug / PLAN_RECORD_NAME


def finished_record(out_dir: Path, slug: str, plan_sha256: str, settings: dict) -> dict | None:
    """The plan's record when its outputs are complete and current, else None.

    Current means: the record names the same plan sha256 and settings, and every file it
    lists exists with the recorded size and sha256 (a truncated or edited file redoes the
    plan).
    """
    record = read_json(plan_record_path(out_dir, slug))
    if record is None or record.get("format") != PLAN_RECORD_FORMAT:
        return None
    if record.get("plan", {}).get("sha256") != plan_sha256 or record.get("settings") != settings:
        return None
    for entry in record.get("files", []):
        path = Path(out_dir) / entry["path"]
        try:
            if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
                return None
        except OSError:
            return None
    return record


def remove_stale_files(out_dir: Path, old_record: dict | None, keep: set[str]) -> None:
    """Delete the files an earlier record of this plan listed that the new run did not write
    (only files the export itself wrote are touched)."""
    if not old_record:
        return
    for entry in old_record.get("files", []):
        if entry.get("path") in keep:
            continue
        path = Path(out_dir) / entry["path"]
        try:
            path.unlink()
        except OSError:
            pass


def run_manifest(settings: dict, plans: list[dict], files: list[dict]) -> dict:
    """The run's manifest: settings, per-plan status and every file."""
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "disclaimer": NOT_FOR_CLINICAL_USE,
        "cryoplan_version": __version__,
        "coordinates": "world LPS millimetres (DICOM patient coordinates)",
        "settings": settings,
        "plans": plans,
        "files": files,
    }
