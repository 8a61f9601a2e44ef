"""Turn a painted material map into a CT-like image and a B-mode-like ultrasound image.

Both are deterministic: every random field comes from ``numpy.random.default_rng(seed)``
with a fixed seed, so the same case always gives the same bytes.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from planner.demo._materials import (
    ATTENUATION_DB_PER_MM_OF,
    BACKSCATTER_OF,
    HU_OF,
    HU_TEXTURE_OF,
    IMPEDANCE_OF,
    Material,
)

CT_BLUR_SIGMA_MM = 0.45
"""Gaussian point-spread of the synthetic scanner (FWHM about 1.1 mm): the partial-volume blur."""
CT_NOISE_HU = 14.0
"""Standard deviation of the (slightly correlated) quantum noise, HU."""
CT_TEXTURE_SIGMA_MM = 0.7
"""Grain of the tissue texture (trabeculae, lung parenchyma, fat septa), mm."""


def _unit_std(field: np.ndarray) -> np.ndarray:
    field = field - field.mean()
    return (field / max(float(field.std()), 1e-12)).astype(np.float32)


def synthesize_ct(materials: np.ndarray, *, spacing_mm: float, seed: int) -> np.ndarray:
    """CT numbers for a material map.

    Parameters
    ----------
    materials : (nk, nj, ni) uint8 ndarray
        :class:`Material` values.
    spacing_mm : float
        Isotropic voxel size, mm.
    seed : int
        Seed of the texture and noise fields.

    Returns
    -------
    (nk, nj, ni) int16 ndarray, HU
        Mean HU per material plus a smooth texture, blurred by the scanner's
        point-spread (partial volume at every boundary), plus correlated noise,
        clipped to [-1024, 3071].
    """
    rng = np.random.default_rng(seed)
    hu = HU_OF[materials]
    texture = ndimage.gaussian_filter(
        rng.standard_normal(materials.shape, dtype=np.float32), CT_TEXTURE_SIGMA_MM / spacing_mm
    )
    hu += HU_TEXTURE_OF[materials] * _unit_std(texture)
    del texture
    blur = CT_BLUR_SIGMA_MM / spacing_mm
    if blur >= 0.25:
        hu = ndimage.gaussian_filter(hu, blur, mode="nearest")
    noise = ndimage.gaussian_filter(rng.standard_normal(materials.shape, dtype=np.float32), 0.6)
    hu += CT_NOISE_HU * _unit_std(noise)
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16)


# ----------------------------------------------------------------------------- ultrasound
US_DYNAMIC_RANGE_DB = 52.0
"""Displayed dynamic range: a perfect reflector maps to 255, 52 dB below it to 0."""
US_TGC_DB_PER_MM = 0.72
"""Time-gain compensation (one way); a little less than soft tissue loses, so the image
darkens slowly with depth as on a real scanner."""
US_DIFFUSE_GAIN = 0.09
"""Scale of diffuse scattering relative to a perfect specular reflector."""
US_AXIAL_PSF_MM = 0.12
"""Axial and lateral resolution (Gaussian sigma, mm) that sets the speckle grain."""
US_LATERAL_PSF_MM = 0.30
US_PULSE_MM = 0.28
"""Axial spread (sigma, mm) of a specular echo: pulse length plus ring-down, so a bone
or pleural line shows about 0.7 mm thick, as on a scanner."""


def _first_true(mask: np.ndarray, axis: int = 0) -> np.ndarray:
    """Index of the first True along ``axis`` (the axis length where there is none)."""
    return np.where(mask.any(axis=axis), mask.argmax(axis=axis), mask.shape[axis])


def synthesize_ultrasound(materials: np.ndarray, *, pixel_mm: float, seed: int) -> np.ndarray:
    """A B-mode-like image of a 2D material map seen by a linear probe at its top edge.

    Parameters
    ----------
    materials : (n_rows, n_columns) uint8 ndarray
        :class:`Material` values; rows go down from the probe face (depth), columns
        across it. Air above the first tissue of each column is taken as coupling gel.
    pixel_mm : float
        Pixel size, mm (square pixels).
    seed : int
        Seed of the speckle and texture fields.

    Returns
    -------
    (n_rows, n_columns) uint8 ndarray
        Log-compressed echo amplitude. Modelled: specular echoes at impedance steps
        (strongest where the boundary faces the probe), diffuse speckle (Rayleigh
        statistics from a filtered complex Gaussian field) scaled per material, fat
        septa and muscle striations, round-trip attenuation with time-gain compensation,
        acoustic shadows behind bone and air, and reverberation A-lines below a pleural
        (tissue-air) line.
    """
    rng = np.random.default_rng(seed)
    materials = np.array(materials, dtype=np.uint8, copy=True)
    n_rows, n_columns = materials.shape
    rows = np.arange(n_rows)[:, None]
    # Coupling gel fills the gap between the flat probe face and a curved skin.
    first_tissue = _first_true(materials != Material.AIR)
    materials[(rows < first_tissue[None, :]) & (materials == Material.AIR)] = Material.GEL

    impedance = IMPEDANCE_OF[materials]
    # Amplitude reflection coefficient at each step down a column.
    reflection = np.zeros((n_rows, n_columns), dtype=np.float32)
    upper, lower = impedance[:-1], impedance[1:]
    reflection[1:] = np.abs(lower - upper) / (lower + upper)
    # Specular echoes come back only from boundaries that face the probe.
    log_z = ndimage.gaussian_filter(np.log(impedance), 0.3 / pixel_mm)
    grad_depth, grad_lateral = np.gradient(log_z)
    facing = grad_depth**2 / np.maximum(grad_depth**2 + grad_lateral**2, 1e-12)
    specular = reflection * (0.15 + 0.85 * facing)

    # Round trip losses: each boundary passes (1 - r^2) of the energy, tissue attenuates.
    pass_fraction = np.cumprod(1.0 - reflection.astype(np.float64) ** 2, axis=0)
    pass_before = np.vstack([np.ones((1, n_columns)), pass_fraction[:-1]])
    loss_db = np.cumsum(ATTENUATION_DB_PER_MM_OF[materials] * pixel_mm, axis=0, dtype=np.float64)
    depth_mm = (np.arange(n_rows) * pixel_mm)[:, None]
    round_trip = pass_before * 10.0 ** ((-2.0 * loss_db + 2.0 * US_TGC_DB_PER_MM * depth_mm) / 20.0)

    # Speckle: complex Gaussian scatterers blurred by the point-spread, envelope-detected.
    psf = (US_AXIAL_PSF_MM / pixel_mm, US_LATERAL_PSF_MM / pixel_mm)
    field = ndimage.gaussian_filter(rng.standard_normal((n_rows, n_columns)), psf) + 1j * ndimage.gaussian_filter(
        rng.standard_normal((n_rows, n_columns)), psf
    )
    speckle = np.abs(field)
    speckle /= speckle.mean()

    def smooth_noise(sigma_mm):
        sigma = tuple(s / pixel_mm for s in sigma_mm)
        return _unit_std(ndimage.gaussian_filter(rng.standard_normal((n_rows, n_columns)), sigma))

    # Tissue texture: fibres along the muscle with brighter perimysium streaks, short
    # bright septa between dark fat lobules, dark fascicles in a bright epineurium.
    striation = smooth_noise((0.12, 1.6))
    septa = np.clip((smooth_noise((0.12, 1.4)) - 1.2) / 0.6, 0.0, 1.0)
    fascicles = smooth_noise((0.12, 0.12)) > 0.2
    texture = np.ones((n_rows, n_columns), dtype=np.float32)
    muscle = materials == Material.MUSCLE
    texture[muscle] = np.exp(0.45 * striation[muscle]) + 1.8 * np.clip(striation[muscle] - 1.6, 0.0, None)
    fat = materials == Material.FAT
    texture[fat] = 0.45 + 7.0 * septa[fat]
    nerve = materials == Material.NERVE
    # A nerve in cross-section: a bright epineurial rim around dark fascicles.
    rim = nerve & ~ndimage.binary_erosion(nerve, iterations=max(int(round(0.3 / pixel_mm)), 1))
    texture[nerve] = np.where(fascicles[nerve], 0.3, 1.4)
    texture[rim] = 3.5
    diffuse = US_DIFFUSE_GAIN * BACKSCATTER_OF[materials] * texture * speckle

    # A specular echo is a short pulse: spread it over the axial pulse length (peak kept)
    # and the lateral beam width (energy kept).
    pulse_sigma = US_PULSE_MM / pixel_mm
    pulse = ndimage.gaussian_filter1d(specular, pulse_sigma, axis=0) * np.sqrt(2.0 * np.pi) * pulse_sigma
    pulse = ndimage.gaussian_filter1d(np.minimum(pulse, 1.0), US_LATERAL_PSF_MM / pixel_mm, axis=1)
    amplitude = round_trip * (pulse + diffuse)

    # Reverberations between the probe and a tissue-air line (A-lines): copies of the
    # pleural line at multiples of its depth, fading.
    air_below_tissue = np.isin(materials, (Material.AIR, Material.LUNG)) & (rows > first_tissue[None, :])
    pleura_row = _first_true(air_below_tissue)
    columns = np.arange(n_columns)
    line_row = np.minimum(pleura_row, n_rows - 1)
    line_strength = round_trip[line_row, columns] * reflection[line_row, columns] * (pleura_row < n_rows)
    reverb = np.zeros((n_rows, n_columns), dtype=np.float64)
    for multiple in (2, 3, 4):
        echo_row = multiple * pleura_row
        # Only a bare line reverberates cleanly; one shadowed by bone above does not.
        echoing = (echo_row < n_rows) & (line_strength >= 0.05)
        reverb[echo_row[echoing], columns[echoing]] = line_strength[echoing] * 0.45 ** (multiple - 1)
    # Below a bare pleural line the image is reverberation haze, not anatomy: faint
    # speckle fading with distance from the line.
    below = np.clip((rows - pleura_row[None, :]) * pixel_mm, 0.0, None)
    amplitude += 0.01 * line_strength[None, :] * np.exp(-below / 5.0) * speckle * air_below_tissue
    axial = US_AXIAL_PSF_MM * 2.0 / pixel_mm
    reverb = ndimage.gaussian_filter1d(reverb, axial, axis=0) * np.sqrt(2.0 * np.pi) * axial
    amplitude += ndimage.gaussian_filter1d(reverb, US_LATERAL_PSF_MM / pixel_mm, axis=1)
    # Electronic noise floor, also speckled.
    noise = np.abs(rng.standard_normal((n_rows, n_columns)) + 1j * rng.standard_normal((n_rows, n_columns)))
    amplitude = amplitude + 0.0015 * noise
    decibels = 20.0 * np.log10(np.maximum(amplitude, 1e-9))
    grey = np.clip((decibels + US_DYNAMIC_RANGE_DB) / US_DYNAMIC_RANGE_DB, 0.0, 1.0)
    return np.rint(255.0 * grey).astype(np.uint8)
