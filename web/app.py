"""The cryoplan browser viewer: wiring only (session, views, solver worker, files, page).

Start it with ``planner serve [CASE|PLAN|VOLUME] --host --port --data DIR`` or
``python -m web.app [CASE|PLAN|VOLUME] [--host H] [--port P] [--data DIR ...]``.

Sessions: one per server process, shared by every browser tab connected to it (see
:mod:`web.state`). Research and education only; not for clinical use.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from planner.errors import InputError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


def main(server=None, *, target: str | None = None, data_dirs=(), **kwargs):
    """Build the app on a trame ``server`` (a new one by default) and return it, not started.

    Parameters
    ----------
    server : trame server, optional
    target : str, optional
        A demo case name, or a plan / volume path inside one of ``data_dirs`` (or anywhere,
        when given on the command line by the person starting the server).
    data_dirs : sequence of path
        Folders the page may list, open, upload into and save into.

    Returns
    -------
    trame server, with ``server.cryoplan`` the :class:`web.controller.Controller`.
    """
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    from trame.app import get_server

    from web.controller import Controller
    from web.files import DataFolders
    from web.freeze import SolverWorker
    from web.state import Session
    from web.ui import build
    from web.views import Views

    if server is None:
        server = get_server(name="cryoplan", client_type="vue3")
    folders = DataFolders.from_paths(data_dirs)
    session = Session()
    views = Views(session)
    worker = SolverWorker()
    preview_worker = SolverWorker()  # previews while probes move; a freeze runs beside them
    controller = Controller(server, session, views, folders, worker, preview_worker)
    controller.declare_state()
    server.trigger("plan_json")(controller.plan_json)
    server.trigger("screenshot")(controller.screenshot)
    server.trigger("export_file")(controller.export_file)
    build(server, controller, views)
    server.cryoplan = controller

    if target:
        _load_target(controller, target)
    else:
        from planner.demo import list_demo_cases

        controller.load_demo(list_demo_cases()[0])
    # One render before the first page opens: the first frame of a new OpenGL context pays for
    # shader compilation (seconds on a software renderer), not the person opening the page.
    views.plotter.render_window.Render()

    @server.controller.add("on_server_ready")
    def _ready(**_):
        worker.start()  # import the solver in the background before the first freeze
        preview_worker.start()
        controller.schedule_preview()  # a plan opened from the command line

    @server.controller.add("on_server_exited")
    def _exited(**_):
        worker.close()
        preview_worker.close()

    return server


def _load_target(controller, target: str) -> None:
    from planner.demo import list_demo_cases

    if target.lower() in list_demo_cases():
        controller.session.load_demo(target.lower())
        controller.refresh_all()
        return
    path = Path(target).expanduser()
    if not path.exists():
        raise InputError(f"{target}: not a demo case ({', '.join(list_demo_cases())}) and no such file")
    controller._open_path(path.resolve())


def serve(target: str | None = None, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, data_dirs=(),
          open_browser: bool = False) -> None:
    """Run the viewer until interrupted.

    Parameters
    ----------
    target : str, optional
        Demo case name, plan file or volume (file or DICOM folder) to open first.
    host : str
        Interface to listen on; ``127.0.0.1`` (this machine only) by default.
    port : int
        TCP port; 0 picks a free one (printed at start).
    data_dirs : sequence of path
        Folders the page may read and write (open, upload, save). Nothing outside them is
        served or written.
    open_browser : bool
        Open the system browser at start.

    Raises
    ------
    InputError
        A data folder that does not exist, or a target that cannot be opened.
    """
    # Trame would otherwise parse sys.argv (the planner CLI's own arguments) again.
    os.environ.setdefault("TRAME_ARGS", "")
    server = main(target=target, data_dirs=data_dirs)
    print(f"cryoplan viewer: {server.state.note}", flush=True)
    server.start(host=host, port=int(port), open_browser=open_browser, show_connection_info=True)


def _parse(argv=None):
    parser = argparse.ArgumentParser(prog="python -m web.app", description="cryoplan browser viewer")
    parser.add_argument("target", nargs="?", help="demo case, plan or volume to open")
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--data", action="append", default=[], metavar="DIR", help="data folder (repeatable)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    import sys

    args = _parse()
    try:
        serve(args.target, host=args.host, port=args.port, data_dirs=args.data)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
