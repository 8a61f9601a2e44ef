"""Locate real data sets that the test command installs (not part of the repository).

Import from a test module as ``from realdata import invesalius_ct_path`` (pytest puts
``tests/`` on ``sys.path``). Each helper returns the path when the data is there. When
it is absent the calling test is skipped, unless ``CRYOPLAN_REQUIRE_REALDATA=1`` is set
(as in CI, where the data is installed on purpose): then the test fails and says what
is missing and how to install it.

Nothing here is GPL data; the data sets themselves are never committed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Debian package ``invesalius-examples`` (GPL-2): a real head CT in InVesalius's
# project format, int16 HU, shape (108, 256, 256), spacing 0.957 x 0.957 x 1.5 mm.
INVESALIUS_CT_DEFAULT = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")


def realdata_required() -> bool:
    """True when ``CRYOPLAN_REQUIRE_REALDATA=1``: missing real data is then a failure."""
    return os.environ.get("CRYOPLAN_REQUIRE_REALDATA", "").strip() == "1"


def require_realdata(path: Path | None, what: str, *, how_to_install: str) -> Path:
    """Return ``path`` if it exists; otherwise skip the calling test (or fail it when
    real data is required).

    Parameters
    ----------
    path : Path or None
        Where the data should be; ``None`` when it could not be located at all.
    what : str
        Short description of the data set for the message.
    how_to_install : str
        The command or step that installs it.
    """
    if path is not None and Path(path).exists():
        return Path(path)
    message = f"{what} not found at {path}; install it with: {how_to_install}"
    if realdata_required():
        pytest.fail(f"CRYOPLAN_REQUIRE_REALDATA=1 but {message}", pytrace=False)
    pytest.skip(message)


def invesalius_ct_path() -> Path:
    """Path of Debian's InVesalius example head CT (``Cranium.inv3``).

    ``CRYOPLAN_INVESALIUS_CT`` overrides the default location
    ``/usr/share/doc/invesalius-examples/examples/Cranium.inv3``. Skips the calling test
    when the file is absent, or fails it when ``CRYOPLAN_REQUIRE_REALDATA=1``.
    """
    override = os.environ.get("CRYOPLAN_INVESALIUS_CT")
    path = Path(override) if override else INVESALIUS_CT_DEFAULT
    return require_realdata(
        path,
        "InVesalius example head CT (Cranium.inv3)",
        how_to_install="sudo apt-get install invesalius-examples",
    )
