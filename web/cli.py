"""The ``planner serve`` command, registered with the planner CLI through the
``cryoplan.commands`` entry point (see pyproject.toml) so that the core library never
imports the web layer. Importing this module loads no trame.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def serve(
    target: Optional[str] = typer.Argument(
        None, help="Case or demo name, plan file, or volume (file or DICOM folder) to open."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8080, "--port", help="Port to listen on (0: any free port)."),
    data: list[Path] = typer.Option([], "--data", help="Folder the browser may open files from and save into "
                                    "(repeatable); nothing outside these folders is served or written."),
    open_browser: bool = typer.Option(False, "--open", help="Open a browser tab on the viewer."),
) -> None:
    """Open the planner in a browser (trame)."""
    from web.app import serve as serve_app

    serve_app(resolve_serve_target(target), host=host, port=port, data_dirs=tuple(data),
              open_browser=open_browser)


def resolve_serve_target(target: str | None) -> str | None:
    """A case-library name becomes its plan file; anything else is passed on as given."""
    if target is None or Path(target).exists():
        return target
    from planner.cases import list_cases, load_case

    if target in {case.name for case in list_cases()}:
        _, path = load_case(target)
        return str(path)
    return target
