"""Files: the data folders the server may read and write, and nothing else.

The server is given folders on the command line (``--data DIR``); it lists, opens,
saves and stores uploads only inside them. Every path a browser sends is resolved
(symlinks included) and checked against the folders before it is touched, so
``../../etc/passwd`` or a symlink out of a folder is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from planner.errors import InputError

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".vti", ".dcm", ".inv3")
PLAN_SUFFIXES = (".json",)
UPLOAD_FOLDER = "uploads"
PLAN_FOLDER = "plans"
EXPORT_FOLDER = "exports"
"""Reports exported from the page go to ``<first folder>/exports/`` (not listed as plans)."""
MAX_UPLOAD_BYTES = 512 * 1024 * 1024
MAX_LISTED = 500


def file_kind(name: str) -> str | None:
    """``"plan"`` for a ``.json`` file, ``"volume"`` for an image suffix, else None."""
    lower = name.lower()
    if lower.endswith(PLAN_SUFFIXES):
        return "plan"
    if lower.endswith(VOLUME_SUFFIXES):
        return "volume"
    return None


def safe_filename(name: str) -> str:
    """A plain file name from user text: no folders, only letters, digits, ``._-``."""
    base = Path(str(name).replace("\\", "/")).name
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._")
    if not cleaned:
        raise InputError(f"file name {name!r}: no usable characters")
    return cleaned[:120]


@dataclass(frozen=True)
class DataFolders:
    """The folders the server may use. ``roots`` are resolved absolute paths; the first is
    where uploads and saved plans go."""

    roots: tuple[Path, ...]

    @classmethod
    def from_paths(cls, paths) -> "DataFolders":
        roots = []
        for path in paths:
            folder = Path(path).expanduser()
            if not folder.is_dir():
                raise InputError(f"--data {path}: not a folder")
            roots.append(folder.resolve())
        return cls(tuple(roots))

    @property
    def writable(self) -> Path | None:
        """Where uploads and saved plans go (the first folder), None when no folder was given."""
        return self.roots[0] if self.roots else None

    def resolve(self, relative: str) -> Path:
        """The real path of ``"<root index>/<path inside it>"`` or of a path relative to the
        first folder; InputError when it leads outside every data folder."""
        if not self.roots:
            raise InputError("no data folder: start the server with --data DIR to open files")
        text = str(relative).replace("\\", "/")
        root = self.roots[0]
        match = re.match(r"^(\d+):(.*)$", text)
        if match:
            index = int(match.group(1))
            if index >= len(self.roots):
                raise InputError(f"{relative}: no such data folder")
            root, text = self.roots[index], match.group(2)
        candidate = (root / text.lstrip("/")).resolve()
        if not any(candidate == r or candidate.is_relative_to(r) for r in self.roots):
            raise InputError(f"{relative}: outside the data folders")
        return candidate

    def listing(self) -> list[dict]:
        """Plans and volumes in the folders: ``[{"title": shown name, "value": "<i>:<path>",
        "kind": "plan" | "volume"}]``, sorted, at most :data:`MAX_LISTED`. DICOM folders are
        listed as volumes (a folder holding ``.dcm`` files)."""
        items = []
        for index, root in enumerate(self.roots):
            for path in sorted(root.rglob("*")):
                if len(items) >= MAX_LISTED:
                    return items
                try:
                    real = path.resolve()
                except OSError:
                    continue
                if not (real == root or real.is_relative_to(root)):
                    continue  # a symlink out of the folder
                relative = path.relative_to(root).as_posix()
                if index == 0 and (relative == EXPORT_FOLDER or relative.startswith(EXPORT_FOLDER + "/")):
                    continue  # export outputs (JSON, NIfTI) are not plans or volumes to open
                kind = file_kind(path.name) if path.is_file() else None
                if kind == "volume" and path.name.lower().endswith(".dcm"):
                    continue  # single DICOM files are opened through their folder
                if path.is_dir() and any(child.suffix.lower() == ".dcm" for child in path.iterdir()):
                    kind = "volume"
                if kind:
                    label = relative if len(self.roots) == 1 else f"{root.name}/{relative}"
                    items.append({"title": f"{label} ({kind})", "value": f"{index}:{relative}", "kind": kind})
        return items

    def store_upload(self, name: str, content: bytes) -> Path:
        """Write an uploaded file into ``<first folder>/uploads/`` (a new name if taken)."""
        if self.writable is None:
            raise InputError("uploads need a data folder: start the server with --data DIR")
        if len(content) > MAX_UPLOAD_BYTES:
            raise InputError(f"{name}: larger than {MAX_UPLOAD_BYTES // 2**20} MiB")
        folder = self.writable / UPLOAD_FOLDER
        folder.mkdir(exist_ok=True)
        target = folder / safe_filename(name)
        stem, suffix = target.name, ""
        for known in sorted(VOLUME_SUFFIXES + PLAN_SUFFIXES, key=len, reverse=True):
            if stem.lower().endswith(known):
                stem, suffix = stem[: -len(known)], stem[-len(known):]
                break
        counter = 1
        while target.exists():
            target = folder / f"{stem}-{counter}{suffix}"
            counter += 1
        target.write_bytes(content)
        return target

    def plan_path(self, name: str) -> Path:
        """Where a plan called ``name`` is saved: ``<first folder>/plans/<name>.json``."""
        if self.writable is None:
            raise InputError("saving needs a data folder: start the server with --data DIR (or download the plan)")
        filename = safe_filename(name)
        if not filename.lower().endswith(".json"):
            filename += ".json"
        folder = self.writable / PLAN_FOLDER
        folder.mkdir(exist_ok=True)
        return folder / filename

    def export_folder(self) -> Path:
        """``<first folder>/exports/`` (created), where the page's report exports go."""
        if self.writable is None:
            raise InputError("exporting needs a data folder: start the server with --data DIR")
        folder = self.writable / EXPORT_FOLDER
        folder.mkdir(exist_ok=True)
        return folder

    def export_file(self, relative: str) -> Path:
        """The real path of a file inside the exports folder; InputError for anything else."""
        folder = self.export_folder().resolve()
        candidate = (folder / str(relative).replace("\\", "/").lstrip("/")).resolve()
        if not candidate.is_relative_to(folder) or not candidate.is_file():
            raise InputError(f"{relative}: not an exported file")
        return candidate
