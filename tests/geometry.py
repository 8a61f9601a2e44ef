"""Small geometry helpers shared by the tests (importable module, no tests)."""

import numpy as np


def rotation(z_deg: float, y_deg: float, x_deg: float) -> np.ndarray:
    """3x3 rotation matrix Rz @ Ry @ Rx from angles about z, y and x in degrees."""
    a, b, c = np.radians([z_deg, y_deg, x_deg])
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rx = np.array([[1, 0, 0], [0, np.cos(c), -np.sin(c)], [0, np.sin(c), np.cos(c)]])
    return rz @ ry @ rx
