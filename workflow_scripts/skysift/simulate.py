"""
Simulate one EMU-like survey tile with full truth.

The simulation writes what a real survey would give skysift, plus what it never gives:

- a radio image as CASDA writes ASKAP tiles (4-D primary HDU, ``RA---SIN``/``DEC--SIN``,
  float32 big-endian, Jy/beam, NaN outside a rotated square footprint), with
  beam-correlated Gaussian noise whose rms rises smoothly towards the footprint edge;
- a WISE-W1-like infrared image on its own rotated ``TAN`` grid (DN, ``MAGZP``);
- truth tables (``truth_components`` and ``truth_sources`` of :mod:`skysift.columns`) and a
  JSON metadata file.

The sky holds compact sources (Gaussians barely resolved by the beam, Euclidean-like counts
``dN/dS ~ S^-1.7``) and extended radio galaxies (FR-I: core + fading jets, FR-II: lobes with
edge hotspots and an optional core, core-less doubles). Every piece is an elliptical
Gaussian convolved analytically with the restoring beam. Each source is measured on its own
noiseless rendering: 4-sigma islands (RGZ components, Wu et al. 2019), resolved peaks, the
FR class from the peak separation over the 5-sigma extent (Gupta et al. 2023, Sect. 2.3.2),
and its 3-sigma mask (COCO RLE), bounding box and largest angular size.

Conventions: pixel coordinates are 0-based ``(x, y)`` with x along NAXIS1; position angles are
degrees east of north, where north is +y and east is -x on the tile grid (``CDELT1 < 0``);
sizes are FWHM. One :class:`numpy.random.Generator` drives everything, in a fixed order, so the
same inputs give byte-identical files.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS
from scipy import ndimage

from . import columns, defects
from .masks import encode_mask
from .regions import valid_fractions
from .tileio import beam_area_pixels

log = logging.getLogger(__name__)

__all__ = [
    "SimulationSettings",
    "Gaussians",
    "SourceModel",
    "Morphology",
    "FREQUENCY_HZ",
    "FWHM_TO_SIGMA",
    "convolve_gaussians",
    "render_gaussians",
    "footprint_distance",
    "footprint_mask",
    "rms_at",
    "powerlaw_sample",
    "expected_counts",
    "find_peaks",
    "fr_class_from_ratio",
    "measure_morphology",
    "largest_extent",
    "draw_extended_source",
    "extended_source_model",
    "measure_source",
    "radio_header",
    "ir_header",
    "make_radio_noise",
    "simulate_tile",
]

FREQUENCY_HZ = 943.5e6
"""Reference frequency of the radio tile (EMU, ASKAP band 1)."""
BANDWIDTH_HZ = 288e6
FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
"""Multiply a Gaussian FWHM by this to get its standard deviation (1/2.3548)."""

# Compact sources
COMPACT_SIZE_MEDIAN = 2.0  # arcsec, intrinsic major FWHM (lognormal median)
COMPACT_SIZE_LNSIGMA = 0.5
COMPACT_SIZE_MAX = 8.0  # arcsec
COUNT_SLOPE = -1.7  # dN/dS ~ S^COUNT_SLOPE
COMPACT_FLUX_MIN_SIGMA = 2.0  # faintest compact source, in units of rms
COMPACT_FLUX_MAX = 1.0  # Jy
# Extended sources
EXTENDED_FLUX_RANGE = (1e-3, 0.5)  # Jy
EXTENDED_LAS_RANGE = (30.0, 240.0)  # arcsec
EXTENDED_KINDS = ("fr1", "fr2", "double")
EXTENDED_KIND_P = (0.35, 0.45, 0.20)
EXTENDED_LAS_MEDIAN = {"fr1": 110.0, "fr2": 80.0, "double": 60.0}  # arcsec
EXTENDED_LAS_LNSIGMA = 0.5
FR1_MIN_SB_SIGMA = 20.0  # FR-I LAS <= beam * flux / (this * rms): a surface-brightness selection
# Measurement thresholds (in units of the local rms)
ISLAND_SIGMA = 4.0
PEAK_SIGMA = 4.0
EXTENT_SIGMA = 5.0
MASK_SIGMA = 3.0
FR_LIMITS = (0.45, 0.55)
# Infrared image
IR_MAGZP = 20.5
IR_BACKGROUND_DN = 8.0
IR_NOISE_DN = 0.8
IR_MAG_RANGE = (10.0, 17.5)
IR_COUNT_SLOPE = 0.3  # dlogN/dm of the field population
IR_STAR_FRACTION = 0.4
IR_OFFSET_MAX = 20.0  # arcsec, pointing offset of the IR grid centre
IR_MARGIN_PX = 32
HOST_MAG_COMPACT = (13.0, 17.0)
HOST_MAG_EXTENDED = (13.0, 15.5)
HOST_OFFSET_COMPACT = 0.5  # arcsec, 1-sigma per axis
HOST_OFFSET_DOUBLE = 2.0  # arcsec, 1-sigma per axis
GALAXY_SIZE_RANGE = (2.0, 6.0)  # arcsec, intrinsic FWHM of host and field galaxies
STAMP_NSIGMA = 5.0
_STRIP_BYTES = 64 * 2**20


@dataclass(frozen=True)
class SimulationSettings:
    """
    Parameters of a simulated EMU-like tile.

    Attributes
    ----------
    size : int
        Pixels per side of the square tile.
    pixel_scale : float
        arcsec per pixel.
    beam_fwhm : float
        Restoring beam FWHM in arcsec (circular: BMAJ = BMIN, BPA = 0).
    rms : float
        Noise rms in Jy/beam in the footprint interior.
    edge_rms_factor : float
        Noise rms at the footprint edge relative to the interior.
    density_5sigma : float
        Sources per deg^2 with integrated flux density above ``5 * rms`` (compact and
        extended together).
    extended_fraction : float
        Fraction of the sources above ``5 * rms`` that are extended.
    footprint_fraction : float
        Side of the rotated square footprint over the tile side.
    footprint_angle : float
        Rotation of the footprint in degrees.
    ir : bool
        Whether to write the infrared image.
    ir_pixel_scale, ir_psf_fwhm : float
        arcsec per pixel and PSF FWHM (arcsec) of the WISE-W1-like image.
    ir_angle : float
        Rotation of the IR pixel grid relative to north, degrees.
    ir_density : float
        Field objects (stars and galaxies) per deg^2 in the IR image.
    defects : dict
        Image defects per quality region (see `skysift.defects`): ``{"fractions": {class:
        weight}, "mixed_fraction": p}``. Empty: every region is ``good`` (no defect).
    region_size : int
        Side (pixels) of the quality regions the defects and their labels are drawn on.
    """

    size: int = 2048
    pixel_scale: float = 2.0
    beam_fwhm: float = 15.0
    rms: float = 25e-6
    edge_rms_factor: float = 3.0
    density_5sigma: float = 800.0
    extended_fraction: float = 0.07
    footprint_fraction: float = 0.92
    footprint_angle: float = 12.0
    ir: bool = True
    ir_pixel_scale: float = 1.375
    ir_psf_fwhm: float = 6.0
    ir_angle: float = 23.0
    ir_density: float = 10000.0
    defects: dict = field(default_factory=dict)
    region_size: int = 1024

    def __post_init__(self):
        checks = {
            "size": self.size >= 16,
            "pixel_scale": self.pixel_scale > 0,
            "beam_fwhm": self.beam_fwhm > 0,
            "rms": self.rms > 0,
            "edge_rms_factor": self.edge_rms_factor >= 1,
            "density_5sigma": self.density_5sigma >= 0,
            "extended_fraction": 0 <= self.extended_fraction <= 1,
            "footprint_fraction": 0 < self.footprint_fraction,
            "ir_pixel_scale": self.ir_pixel_scale > 0,
            "ir_psf_fwhm": self.ir_psf_fwhm > 0,
            "ir_density": self.ir_density >= 0,
            "region_size": self.region_size >= 1,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(
                f"invalid simulation settings: {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}"
            )
        defects.check_defect_settings(self.defects)

    @property
    def beam_sigma_px(self) -> float:
        """Beam standard deviation in pixels."""
        return self.beam_fwhm * FWHM_TO_SIGMA / self.pixel_scale

    @property
    def beam_area_px(self) -> float:
        """Beam area in pixels (integral of a unit-peak beam)."""
        return beam_area_pixels(self.beam_fwhm * u.arcsec, self.beam_fwhm * u.arcsec, self.pixel_scale * u.arcsec)

    @property
    def area_deg2(self) -> float:
        """Tile area in deg^2 (flat-sky)."""
        return (self.size * self.pixel_scale / 3600.0) ** 2

    @property
    def edge_scale_px(self) -> float:
        """e-folding distance (px) of the rms rise towards the footprint edge."""
        return 0.06 * self.size


@dataclass
class Gaussians:
    """
    A set of beam-convolved elliptical Gaussians in tile pixel coordinates.

    Attributes
    ----------
    x, y : ndarray, shape (n,)
        Centres, 0-based pixels.
    maj, min : ndarray, shape (n,)
        FWHM after beam convolution, pixels.
    pa : ndarray, shape (n,)
        Position angle, degrees east of north.
    peak : ndarray, shape (n,)
        Peak surface brightness, Jy/beam.
    """

    x: np.ndarray
    y: np.ndarray
    maj: np.ndarray
    min: np.ndarray
    pa: np.ndarray
    peak: np.ndarray

    def bounds(self, nsigma: float = STAMP_NSIGMA):
        """Integer half-open box ``(x0, y0, x1, y1)`` holding every Gaussian to ``nsigma``."""
        sxx, _, syy = _covariance(self.maj * FWHM_TO_SIGMA, self.min * FWHM_TO_SIGMA, self.pa)
        hx, hy = nsigma * np.sqrt(sxx), nsigma * np.sqrt(syy)
        x0 = int(math.floor(np.min(self.x - hx)))
        x1 = int(math.ceil(np.max(self.x + hx))) + 1
        y0 = int(math.floor(np.min(self.y - hy)))
        y1 = int(math.ceil(np.max(self.y + hy))) + 1
        return x0, y0, x1, y1


@dataclass
class SourceModel:
    """
    One simulated radio source.

    Attributes
    ----------
    kind : str
        ``compact``, ``fr1``, ``fr2`` or ``double``.
    x, y : float
        Source centre (compact: position; FR-I/FR-II: nucleus; double: midpoint), pixels.
    flux : float
        True integrated flux density, Jy.
    gaussians : Gaussians
        Beam-convolved pieces.
    host_dx, host_dy : float
        Host offset from the centre, arcsec along +x and +y of the tile grid.
    host_mag : float
        W1 (Vega) magnitude of the host.
    host_size : float
        Intrinsic FWHM of the host galaxy, arcsec.
    """

    kind: str
    x: float
    y: float
    flux: float
    gaussians: Gaussians
    host_dx: float
    host_dy: float
    host_mag: float
    host_size: float


@dataclass
class Morphology:
    """
    Measurements of one noiseless source rendering.

    Attributes
    ----------
    n_components : int
        Number of separate ``ISLAND_SIGMA`` islands (8-connectivity).
    n_peaks : int
        Number of resolved local maxima above ``PEAK_SIGMA``.
    rgz_class : str
        ``f"{n_components}C_{n_peaks}P"``.
    fr_class : str
        ``FR-I``, ``FR-II``, ``FR-X`` or ``R``.
    a, b : float
        Peak separation and 5-sigma extent along the major axis, pixels (``a = 0`` for R).
    labels : ndarray of int, shape (ny, nx)
        Island label map (0 = background, 1..n_components).
    peaks : ndarray, shape (n_peaks, 2)
        ``(x, y)`` stamp pixels of the peaks, brightest first.
    mask : ndarray of bool, shape (ny, nx)
        ``model >= MASK_SIGMA * sigma``.
    """

    n_components: int
    n_peaks: int
    rgz_class: str
    fr_class: str
    a: float
    b: float
    labels: np.ndarray = field(repr=False)
    peaks: np.ndarray = field(repr=False)
    mask: np.ndarray = field(repr=False)


# --------------------------------------------------------------------------- geometry


def _covariance(smaj, smin, pa_deg):
    """Pixel-grid covariance ``(sxx, sxy, syy)`` of Gaussians with sigmas and PA (E of N)."""
    t = np.radians(pa_deg)
    s, c = np.sin(t), np.cos(t)
    a2, b2 = np.square(smaj), np.square(smin)
    # major axis along (-sin pa, cos pa) (north = +y, east = -x), minor along (cos pa, sin pa)
    return a2 * s * s + b2 * c * c, (b2 - a2) * s * c, a2 * c * c + b2 * s * s


def _from_covariance(sxx, sxy, syy):
    """Inverse of :func:`_covariance`: ``(smaj, smin, pa_deg)`` with pa in [0, 180)."""
    mean = 0.5 * (sxx + syy)
    half = np.sqrt(np.square(0.5 * (sxx - syy)) + np.square(sxy))
    smaj = np.sqrt(mean + half)
    smin = np.sqrt(np.maximum(mean - half, 0.0))
    phi = 0.5 * np.degrees(np.arctan2(2.0 * sxy, sxx - syy))  # major axis angle from +x
    pa = np.mod(phi - 90.0, 180.0)
    return smaj, smin, pa


def convolve_gaussians(maj, min_, pa, bmaj, bmin, bpa):
    """
    FWHM and position angle of an elliptical Gaussian convolved with another (the beam).

    Covariance matrices add; this handles any pair of orientations.

    Parameters
    ----------
    maj, min_ : array_like, shape (n,) or scalar
        FWHM of the intrinsic Gaussians (any angular unit, the same for the beam).
    pa : array_like, shape (n,) or scalar
        Position angle, degrees east of north.
    bmaj, bmin, bpa : float
        Beam FWHM (same unit) and position angle (degrees).

    Returns
    -------
    maj, min, pa : ndarray
        Convolved FWHM (same unit) and position angle in [0, 180) degrees.
    """
    k = FWHM_TO_SIGMA
    a = _covariance(np.asarray(maj, float) * k, np.asarray(min_, float) * k, np.asarray(pa, float))
    b = _covariance(bmaj * k, bmin * k, bpa)
    smaj, smin, cpa = _from_covariance(a[0] + b[0], a[1] + b[1], a[2] + b[2])
    return smaj / k, smin / k, cpa


def render_gaussians(shape, gaussians: Gaussians, origin=(0, 0), out=None) -> np.ndarray:
    """
    Sample a sum of elliptical Gaussians at pixel centres.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` of the stamp.
    gaussians : Gaussians
        Pixel coordinates refer to the frame in which the stamp starts at ``origin``.
    origin : tuple of int
        ``(x0, y0)`` of the stamp's first pixel.
    out : ndarray, shape (ny, nx), optional
        Array to add into (float32 or float64); a new float64 array when omitted.

    Returns
    -------
    ndarray, shape (ny, nx)
        Surface brightness in the unit of ``gaussians.peak`` (Jy/beam). Each Gaussian is
        evaluated within ``STAMP_NSIGMA`` (5) sigma of its centre along x and y, where it
        has fallen below 4e-6 of its peak (0.15 rms for the brightest, 1 Jy, sources).
    """
    ny, nx = shape
    x0, y0 = origin
    img = np.zeros(shape) if out is None else out
    g = gaussians
    smaj, smin = g.maj * FWHM_TO_SIGMA, g.min * FWHM_TO_SIGMA
    sxx, sxy, syy = _covariance(smaj, smin, g.pa)
    det = sxx * syy - sxy * sxy
    ia, ib, ic = syy / det, -sxy / det, sxx / det
    for i in range(len(g.x)):
        hx, hy = STAMP_NSIGMA * math.sqrt(sxx[i]), STAMP_NSIGMA * math.sqrt(syy[i])
        cx, cy = g.x[i] - x0, g.y[i] - y0
        i0, i1 = max(int(math.floor(cx - hx)), 0), min(int(math.ceil(cx + hx)) + 1, nx)
        j0, j1 = max(int(math.floor(cy - hy)), 0), min(int(math.ceil(cy + hy)) + 1, ny)
        if i0 >= i1 or j0 >= j1:
            continue
        dx = np.arange(i0, i1) - cx
        dy = (np.arange(j0, j1) - cy)[:, None]
        q = ia[i] * dx * dx + (2.0 * ib[i]) * dy * dx + ic[i] * dy * dy
        img[j0:j1, i0:i1] += g.peak[i] * np.exp(-0.5 * q)
    return img


def footprint_distance(x, y, settings: SimulationSettings):
    """
    Signed distance (pixels) from the footprint edge, positive inside.

    The footprint is a square of side ``footprint_fraction * size`` rotated by
    ``footprint_angle`` about the tile centre ``((size-1)/2, (size-1)/2)``.

    Parameters
    ----------
    x, y : array_like
        0-based pixel coordinates (broadcast together).

    Returns
    -------
    ndarray
        ``L/2 - max(|u|, |v|)`` in pixels, where ``(u, v)`` are the coordinates in the
        footprint frame (the Chebyshev distance to the edge).
    """
    c = 0.5 * (settings.size - 1)
    t = math.radians(settings.footprint_angle)
    dx, dy = np.asarray(x, float) - c, np.asarray(y, float) - c
    uu = dx * math.cos(t) + dy * math.sin(t)
    vv = -dx * math.sin(t) + dy * math.cos(t)
    return 0.5 * settings.footprint_fraction * settings.size - np.maximum(np.abs(uu), np.abs(vv))


def footprint_mask(x, y, settings: SimulationSettings):
    """Boolean array: True where pixel ``(x, y)`` lies on the valid (non-NaN) footprint."""
    return footprint_distance(x, y, settings) >= 0


def rms_at(x, y, settings: SimulationSettings):
    """
    Noise rms map value at pixel ``(x, y)``.

    Parameters
    ----------
    x, y : array_like
        0-based pixel coordinates.

    Returns
    -------
    ndarray
        rms in Jy/beam: ``rms * (1 + (f - 1) * exp(-d / d0))`` with ``d`` the distance inside
        the footprint edge (clipped at 0 outside), ``f = edge_rms_factor`` and
        ``d0 = 0.06 * size``.
    """
    d = np.maximum(footprint_distance(x, y, settings), 0.0)
    return settings.rms * (1.0 + (settings.edge_rms_factor - 1.0) * np.exp(-d / settings.edge_scale_px))


# --------------------------------------------------------------------------- populations


def powerlaw_sample(rng: np.random.Generator, n: int, smin: float, smax: float, slope: float = COUNT_SLOPE):
    """
    Draw from ``dN/dS ~ S**slope`` on ``[smin, smax]`` (slope != -1).

    Returns
    -------
    ndarray, shape (n,)
        Samples in the unit of ``smin``/``smax``.
    """
    g = slope + 1.0
    lo, hi = smin**g, smax**g
    return (lo + rng.random(n) * (hi - lo)) ** (1.0 / g)


def _n_above(s, smax, slope=COUNT_SLOPE):
    g = slope + 1.0
    return (smax**g - s**g) / g  # integral of S^slope from s to smax (positive)


def expected_counts(settings: SimulationSettings) -> dict:
    """
    Expected numbers of sources in the tile.

    Returns
    -------
    dict
        ``bright`` (integrated flux above 5 rms, compact + extended), ``extended``,
        ``compact_bright`` and ``compact_faint`` (compact between 2 and 5 rms).
    """
    bright = settings.density_5sigma * settings.area_deg2
    s2, s5 = COMPACT_FLUX_MIN_SIGMA * settings.rms, 5.0 * settings.rms
    faint_ratio = (_n_above(s2, COMPACT_FLUX_MAX) - _n_above(s5, COMPACT_FLUX_MAX)) / _n_above(
        s5, COMPACT_FLUX_MAX
    )
    ext = bright * settings.extended_fraction
    return {
        "bright": bright,
        "extended": ext,
        "compact_bright": bright - ext,
        "compact_faint": (bright - ext) * faint_ratio,
    }


def _compact_gaussians(x, y, flux, maj, ratio, pa, settings: SimulationSettings) -> Gaussians:
    """Beam-convolved Gaussians (pixels) of compact sources with intrinsic sizes in arcsec."""
    b = settings.beam_fwhm
    cmaj, cmin, cpa = convolve_gaussians(maj, maj * ratio, pa, b, b, 0.0)
    peak = flux * (b * b) / (cmaj * cmin)
    ps = settings.pixel_scale
    return Gaussians(np.asarray(x, float), np.asarray(y, float), cmaj / ps, cmin / ps, cpa, peak)


def draw_extended_source(rng: np.random.Generator, kind: str, flux: float, las: float, pa: float):
    """
    Draw the pieces of one extended radio galaxy in its own frame.

    Parameters
    ----------
    rng : numpy.random.Generator
    kind : {'fr1', 'fr2', 'double'}
    flux : float
        Total integrated flux density, Jy.
    las : float
        Intended intrinsic largest angular size, arcsec.
    pa : float
        Position angle of the source axis, degrees east of north.

    Returns
    -------
    dict
        ``u``, ``v`` (arcsec offsets along / across the source axis from the centre),
        ``maj``, ``min`` (intrinsic FWHM, arcsec), ``pa`` (degrees E of N) and ``flux``
        (Jy) arrays of shape (n_pieces,) summing to ``flux``; ``host_u``, ``host_v``
        (arcsec) of the host galaxy.
    """
    half = 0.5 * las
    pieces = []  # (u, v, maj, min, pa_rel, weight)

    if kind == "fr1":
        core_w = rng.uniform(0.08, 0.25)
        pieces.append((0.0, 0.0, 0.5, 0.5, 0.0, core_w))
        peak_at = rng.uniform(0.18, 0.3) * half  # where the jet brightness peaks
        bend = rng.uniform(-0.15, 0.15)
        asym = rng.uniform(0.75, 1.0)
        for side in (1.0, -1.0):
            side_w = (1.0 - core_w) * (asym if side > 0 else 1.0) / (1.0 + asym)
            n = 10
            r = np.linspace(0.3, 1.0, n) * half * (1.0 if side > 0 else rng.uniform(0.85, 1.0))
            prof = (r / peak_at) ** 1.5 * np.exp(-1.5 * (r / peak_at - 1.0))
            prof = prof / prof.sum() * side_w
            width = 3.0 + 0.22 * r
            for rk, wk, sk in zip(r, prof, width):
                vk = bend * half * (rk / half) ** 2
                slope = 2.0 * bend * rk / half
                pieces.append(
                    (side * rk, vk, max(1.6 * sk, 4.0), sk, side * math.degrees(math.atan(slope)), wk)
                )
        host_u, host_v = 0.0, 0.0
    elif kind == "fr2":
        has_core = rng.random() < 0.5
        core_w = rng.uniform(0.02, 0.1) if has_core else 0.0
        if has_core:
            pieces.append((0.0, 0.0, 0.5, 0.5, 0.0, core_w))
        asym = rng.uniform(0.6, 1.0)
        arm2 = rng.uniform(0.8, 1.0)
        for side, arm in ((1.0, 1.0), (-1.0, arm2)):
            side_w = (1.0 - core_w) * (asym if side > 0 else 1.0) / (1.0 + asym)
            hs_w = rng.uniform(0.35, 0.6)
            r_hs = half * arm * rng.uniform(0.93, 1.0)
            lobe_len = half * arm * rng.uniform(0.3, 0.5)
            lobe_wid = lobe_len * rng.uniform(0.5, 0.8)
            hs_size = rng.uniform(2.0, 4.0)
            pieces.append((side * r_hs, 0.0, hs_size, hs_size * 0.8, 0.0, side_w * hs_w))
            pieces.append(
                (side * (r_hs - 0.35 * lobe_len), 0.0, lobe_len, lobe_wid, 0.0, side_w * (1 - hs_w))
            )
        host_u, host_v = 0.0, 0.0
    elif kind == "double":
        asym = rng.uniform(0.6, 1.0)
        for side in (1.0, -1.0):
            side_w = (asym if side > 0 else 1.0) / (1.0 + asym)
            lobe_len = half * rng.uniform(0.5, 0.8)
            r_c = half - 0.5 * lobe_len
            lobe_wid = lobe_len * rng.uniform(0.5, 0.9)
            pieces.append((side * r_c, 0.0, lobe_len, lobe_wid, rng.uniform(-15.0, 15.0), side_w))
        host_u, host_v = rng.normal(0.0, HOST_OFFSET_DOUBLE, 2)
    else:
        raise ValueError(f"unknown extended source kind {kind!r}; expected one of {EXTENDED_KINDS}")

    arr = np.array(pieces, dtype=float)
    w = arr[:, 5] / arr[:, 5].sum()
    return {
        "u": arr[:, 0],
        "v": arr[:, 1],
        "maj": arr[:, 2],
        "min": arr[:, 3],
        "pa": np.mod(pa + arr[:, 4], 180.0),
        "flux": flux * w,
        "host_u": float(host_u),
        "host_v": float(host_v),
    }


def _frame_to_pixels(u_, v_, pa, pixel_scale):
    """Offsets (dx, dy) in pixels of source-frame offsets (u along the axis at pa, v across)."""
    t = math.radians(pa)
    ex, ey = -math.sin(t), math.cos(t)  # axis direction on the grid
    fx, fy = math.cos(t), math.sin(t)
    return (u_ * ex + v_ * fx) / pixel_scale, (u_ * ey + v_ * fy) / pixel_scale


def extended_source_model(rng, kind, x, y, flux, las, pa, settings: SimulationSettings) -> SourceModel:
    """
    One extended radio galaxy, beam-convolved, placed on the tile grid.

    Parameters
    ----------
    rng : numpy.random.Generator
    kind : {'fr1', 'fr2', 'double'}
    x, y : float
        Centre (nucleus, or midpoint of a double), 0-based tile pixels.
    flux : float
        Total flux density, Jy.
    las : float
        Intrinsic largest angular size, arcsec.
    pa : float
        Position angle of the axis, degrees east of north.

    Returns
    -------
    SourceModel
        Host magnitude and size are left at 0 for the caller to set.
    """
    parts = draw_extended_source(rng, kind, flux, las, pa)
    dx, dy = _frame_to_pixels(parts["u"], parts["v"], pa, settings.pixel_scale)
    g = _compact_gaussians(
        x + dx, y + dy, parts["flux"], parts["maj"], parts["min"] / parts["maj"], parts["pa"], settings
    )
    hdx, hdy = _frame_to_pixels(parts["host_u"], parts["host_v"], pa, 1.0)
    return SourceModel(kind, float(x), float(y), float(flux), g, float(hdx), float(hdy), 0.0, 0.0)


def _draw_sources(rng: np.random.Generator, settings: SimulationSettings) -> list:
    """The sky model of one tile: compact sources first, then extended ones."""
    n = settings.size
    exp = expected_counts(settings)
    n_bright = int(rng.poisson(exp["bright"]))
    n_ext = int(rng.binomial(n_bright, settings.extended_fraction))
    n_cb = n_bright - n_ext
    n_cf = int(rng.poisson(exp["compact_faint"]))
    s2, s5 = COMPACT_FLUX_MIN_SIGMA * settings.rms, 5.0 * settings.rms
    flux = np.concatenate(
        [powerlaw_sample(rng, n_cb, s5, COMPACT_FLUX_MAX), powerlaw_sample(rng, n_cf, s2, s5)]
    )
    nc = flux.size
    x = rng.uniform(-0.5, n - 0.5, nc)
    y = rng.uniform(-0.5, n - 0.5, nc)
    maj = np.minimum(
        COMPACT_SIZE_MEDIAN * np.exp(rng.normal(0.0, COMPACT_SIZE_LNSIGMA, nc)), COMPACT_SIZE_MAX
    )
    ratio = rng.uniform(0.4, 1.0, nc)
    pa = rng.uniform(0.0, 180.0, nc)
    hdx = rng.normal(0.0, HOST_OFFSET_COMPACT, nc)
    hdy = rng.normal(0.0, HOST_OFFSET_COMPACT, nc)
    hmag = rng.uniform(*HOST_MAG_COMPACT, nc)
    hsize = rng.uniform(*GALAXY_SIZE_RANGE, nc)
    g = _compact_gaussians(x, y, flux, maj, ratio, pa, settings)
    sources = []
    for i in range(nc):
        gi = Gaussians(
            g.x[i : i + 1],
            g.y[i : i + 1],
            g.maj[i : i + 1],
            g.min[i : i + 1],
            g.pa[i : i + 1],
            g.peak[i : i + 1],
        )
        sources.append(SourceModel("compact", x[i], y[i], flux[i], gi, hdx[i], hdy[i], hmag[i], hsize[i]))

    kinds = rng.choice(len(EXTENDED_KINDS), size=n_ext, p=EXTENDED_KIND_P)
    eflux = powerlaw_sample(rng, n_ext, *EXTENDED_FLUX_RANGE)
    ex = rng.uniform(-0.5, n - 0.5, n_ext)
    ey = rng.uniform(-0.5, n - 0.5, n_ext)
    epa = rng.uniform(0.0, 180.0, n_ext)
    elnlas = rng.normal(0.0, EXTENDED_LAS_LNSIGMA, n_ext)
    emag = rng.uniform(*HOST_MAG_EXTENDED, n_ext)
    esize = rng.uniform(*GALAXY_SIZE_RANGE, n_ext)
    for i in range(n_ext):
        kind = EXTENDED_KINDS[kinds[i]]
        las = EXTENDED_LAS_MEDIAN[kind] * math.exp(elnlas[i])
        if kind == "fr1":  # diffuse jets: faint FR-Is are small (surface-brightness selection)
            las = min(las, settings.beam_fwhm * eflux[i] / (FR1_MIN_SB_SIGMA * settings.rms))
        las = float(np.clip(las, *EXTENDED_LAS_RANGE))
        src = extended_source_model(rng, kind, ex[i], ey[i], eflux[i], las, epa[i], settings)
        src.host_mag, src.host_size = float(emag[i]), float(esize[i])
        sources.append(src)
    log.info("sky model: %d compact (%d above 5 sigma), %d extended sources", nc, n_cb, n_ext)
    return sources


# --------------------------------------------------------------------------- measurement


def find_peaks(model: np.ndarray, threshold: float, min_distance: float) -> np.ndarray:
    """
    Resolved local maxima of a noiseless image.

    Parameters
    ----------
    model : ndarray, shape (ny, nx)
    threshold : float
        Peaks must exceed this value (same unit as ``model``).
    min_distance : float
        Minimum separation of two peaks, pixels; a fainter peak closer than this to a
        brighter one is dropped.

    Returns
    -------
    ndarray, shape (n, 2)
        ``(x, y)`` pixel indices of the peaks, brightest first.
    """
    r = max(int(math.ceil(min_distance)), 1)
    mf = ndimage.maximum_filter(model, size=2 * r + 1, mode="constant", cval=-np.inf)
    jj, ii = np.nonzero((model == mf) & (model > threshold))
    if ii.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    order = np.lexsort((ii, jj, -model[jj, ii]))
    kept = []
    for k in order:
        if all((ii[k] - ii[m]) ** 2 + (jj[k] - jj[m]) ** 2 >= min_distance**2 for m in kept):
            kept.append(k)
    kept = np.array(kept)
    return np.stack([ii[kept], jj[kept]], axis=1)


def fr_class_from_ratio(ratio: float) -> str:
    """FR class from ``a / b``: FR-I below 0.45, FR-II above 0.55, FR-X between, R if not finite."""
    if not np.isfinite(ratio) or ratio <= 0:
        return "R"
    if ratio < FR_LIMITS[0]:
        return "FR-I"
    if ratio > FR_LIMITS[1]:
        return "FR-II"
    return "FR-X"


def measure_morphology(model: np.ndarray, sigma: float, centre, beam_fwhm_px: float) -> Morphology:
    """
    RGZ components/peaks, FR class and 3-sigma mask of a noiseless source rendering.

    Parameters
    ----------
    model : ndarray, shape (ny, nx)
        Beam-convolved, noiseless image of one source (Jy/beam), large enough to hold its
        3-sigma mask.
    sigma : float
        Noise rms (Jy/beam) that the thresholds refer to.
    centre : tuple of float
        ``(x, y)`` stamp pixel of the source centre (nucleus or midpoint).
    beam_fwhm_px : float
        Beam FWHM in pixels: peaks closer than half of it are not resolved, and a peak
        within half of it from the centre is a core.

    Returns
    -------
    Morphology
        Components are 4-sigma islands (8-connectivity), peaks are local maxima above 4 sigma
        at least ``beam_fwhm_px / 2`` apart. Following Gupta et al. (2023, Sect. 2.3.2), ``a``
        is the distance between the brightest non-core peaks on the two sides of the centre
        along the major axis (principal axis of the 5-sigma mask) and ``b`` the length of the
        5-sigma mask along that axis; ``a / b`` gives FR-I (< 0.45), FR-II (> 0.55) or FR-X;
        without non-core peaks on both sides the class is R.
    """
    labels, n_comp = ndimage.label(model >= ISLAND_SIGMA * sigma, structure=np.ones((3, 3), dtype=bool))
    peaks = find_peaks(model, PEAK_SIGMA * sigma, 0.5 * beam_fwhm_px)
    mask = model >= MASK_SIGMA * sigma
    a = b = 0.0
    fr = "R"
    jj, ii = np.nonzero(model >= EXTENT_SIGMA * sigma)
    cx, cy = float(centre[0]), float(centre[1])
    if len(peaks) >= 2 and ii.size >= 3:
        px, py = ii - ii.mean(), jj - jj.mean()
        cov = np.array([[np.mean(px * px), np.mean(px * py)], [np.mean(px * py), np.mean(py * py)]])
        w, v = np.linalg.eigh(cov)
        ax = v[:, np.argmax(w)]
        t_pk = (peaks[:, 0] - cx) * ax[0] + (peaks[:, 1] - cy) * ax[1]
        r_pk = np.hypot(peaks[:, 0] - cx, peaks[:, 1] - cy)
        outer = r_pk > 0.5 * beam_fwhm_px
        pos = np.nonzero(outer & (t_pk > 0))[0]
        neg = np.nonzero(outer & (t_pk < 0))[0]
        if pos.size and neg.size:
            p, q = peaks[pos[0]], peaks[neg[0]]  # peaks are sorted brightest first
            a = float(np.hypot(*(p - q)))
            t_m = (ii - cx) * ax[0] + (jj - cy) * ax[1]
            t_ab = np.array([t_pk[pos[0]], t_pk[neg[0]]])  # a peak below 5 sigma still counts
            b = float(max(t_m.max(), t_ab.max()) - min(t_m.min(), t_ab.min()) + 1.0)
            fr = fr_class_from_ratio(a / b)
    return Morphology(int(n_comp), int(len(peaks)), f"{n_comp}C_{len(peaks)}P", fr, a, b, labels, peaks, mask)


def largest_extent(mask: np.ndarray) -> float:
    """
    Largest extent of a mask: maximum distance between pixel centres plus one pixel.

    Parameters
    ----------
    mask : ndarray of bool, shape (ny, nx)

    Returns
    -------
    float
        Pixels; 0 for an empty mask.
    """
    rows = np.nonzero(mask.any(axis=1))[0]
    if rows.size == 0:
        return 0.0
    sub = mask[rows]
    first = np.argmax(sub, axis=1)
    last = sub.shape[1] - 1 - np.argmax(sub[:, ::-1], axis=1)
    # the convex hull of the mask is spanned by the row extremes
    xs = np.concatenate([first, last]).astype(float)
    ys = np.concatenate([rows, rows]).astype(float)
    d2 = (xs[:, None] - xs[None, :]) ** 2 + (ys[:, None] - ys[None, :]) ** 2
    return float(math.sqrt(d2.max()) + 1.0)


# --------------------------------------------------------------------------- images


def radio_header(tile_id: str, ra: float, dec: float, seed: int, settings: SimulationSettings) -> fits.Header:
    """
    CASDA-like 4-D header of the radio tile (RA---SIN, DEC--SIN, FREQ, STOKES).

    Returns
    -------
    astropy.io.fits.Header
        Without the NAXIS keywords (astropy adds them from the data).
    """
    n = settings.size
    h = fits.Header()
    h["BUNIT"] = ("Jy/beam", "Brightness (pixel) unit")
    h["BMAJ"] = (settings.beam_fwhm / 3600.0, "deg")
    h["BMIN"] = (settings.beam_fwhm / 3600.0, "deg")
    h["BPA"] = (0.0, "deg")
    cards = [
        ("CTYPE1", "RA---SIN"),
        ("CRVAL1", float(ra)),
        ("CDELT1", -settings.pixel_scale / 3600.0),
        ("CRPIX1", 0.5 * (n + 1)),
        ("CUNIT1", "deg"),
        ("CTYPE2", "DEC--SIN"),
        ("CRVAL2", float(dec)),
        ("CDELT2", settings.pixel_scale / 3600.0),
        ("CRPIX2", 0.5 * (n + 1)),
        ("CUNIT2", "deg"),
        ("CTYPE3", "FREQ"),
        ("CRVAL3", FREQUENCY_HZ),
        ("CDELT3", BANDWIDTH_HZ),
        ("CRPIX3", 1.0),
        ("CUNIT3", "Hz"),
        ("CTYPE4", "STOKES"),
        ("CRVAL4", 1.0),
        ("CDELT4", 1.0),
        ("CRPIX4", 1.0),
        ("CUNIT4", ""),
    ]
    for k, v in cards:
        h[k] = v
    h["RADESYS"] = "FK5"
    h["EQUINOX"] = 2000.0
    h["RESTFRQ"] = (FREQUENCY_HZ, "Hz")
    h["SPECSYS"] = "TOPOCENT"
    h["OBJECT"] = tile_id
    h["TELESCOP"] = "ASKAP"
    h["INSTRUME"] = "ASKAP"
    h["ORIGIN"] = "skysift simulation"
    h["SIMSEED"] = (int(seed), "skysift simulation seed")
    h["SIMRMS"] = (settings.rms, "[Jy/beam] simulated interior noise rms")
    return h


def ir_header(ra: float, dec: float, n_ir: int, seed: int, settings: SimulationSettings) -> fits.Header:
    """
    2-D TAN header of the WISE-W1-like image, rotated by ``ir_angle`` via a PC matrix.

    Parameters
    ----------
    ra, dec : float
        ICRS position (deg) of the reference pixel (the image centre).
    n_ir : int
        Pixels per side.
    """
    t = math.radians(settings.ir_angle)
    h = fits.Header()
    h["BUNIT"] = "DN"
    cards = [
        ("CTYPE1", "RA---TAN"),
        ("CRVAL1", float(ra)),
        ("CDELT1", -settings.ir_pixel_scale / 3600.0),
        ("CRPIX1", 0.5 * (n_ir + 1)),
        ("CUNIT1", "deg"),
        ("CTYPE2", "DEC--TAN"),
        ("CRVAL2", float(dec)),
        ("CDELT2", settings.ir_pixel_scale / 3600.0),
        ("CRPIX2", 0.5 * (n_ir + 1)),
        ("CUNIT2", "deg"),
        ("PC1_1", math.cos(t)),
        ("PC1_2", -math.sin(t)),
        ("PC2_1", math.sin(t)),
        ("PC2_2", math.cos(t)),
    ]
    for k, v in cards:
        h[k] = v
    h["RADESYS"] = "ICRS"
    h["MAGZP"] = (IR_MAGZP, "[mag] W1-like zero point (Vega)")
    h["BAND"] = "W1"
    h["PSFFWHM"] = (settings.ir_psf_fwhm, "[arcsec] PSF FWHM")
    h["TELESCOP"] = "WISE-like"
    h["ORIGIN"] = "skysift simulation"
    h["SIMSEED"] = (int(seed), "skysift simulation seed")
    return h


def _strips(n_rows: int, n_cols: int, itemsize: int = 8):
    """Row ranges covering ``n_rows`` with about ``_STRIP_BYTES`` of ``n_cols`` per strip."""
    step = max(1, _STRIP_BYTES // max(1, n_cols * itemsize))
    return [(r, min(r + step, n_rows)) for r in range(0, n_rows, step)]


def make_radio_noise(rng: np.random.Generator, settings: SimulationSettings) -> np.ndarray:
    """
    Beam-correlated Gaussian noise with the position-dependent rms of :func:`rms_at`.

    White float32 noise is convolved with the beam (separable Gaussian, filtered strip by
    strip so that the only full-size array is the result), scaled to unit standard
    deviation by the analytic factor ``2 sqrt(pi) sigma_px`` and multiplied by the rms map.

    Returns
    -------
    ndarray of float32, shape (size, size)
        Noise in Jy/beam.
    """
    n = settings.size
    s = settings.beam_sigma_px
    img = rng.standard_normal((n, n), dtype=np.float32)
    for r0, r1 in _strips(n, n, 4):
        img[r0:r1] = ndimage.gaussian_filter1d(img[r0:r1], s, axis=1, mode="reflect")
    for c0, c1 in _strips(n, n, 4):
        img[:, c0:c1] = ndimage.gaussian_filter1d(img[:, c0:c1], s, axis=0, mode="reflect")
    norm = 2.0 * math.sqrt(math.pi) * s
    xs = np.arange(n, dtype=float)[None, :]
    for r0, r1 in _strips(n, n):
        ys = np.arange(r0, r1, dtype=float)[:, None]
        img[r0:r1] *= (norm * rms_at(xs, ys, settings)).astype(np.float32)
    return img


def _blank_outside(img: np.ndarray, settings: SimulationSettings) -> int:
    """Set pixels outside the footprint to NaN in place; returns how many were blanked."""
    n = settings.size
    xs = np.arange(n, dtype=float)[None, :]
    blanked = 0
    for r0, r1 in _strips(n, n):
        out = ~footprint_mask(xs, np.arange(r0, r1, dtype=float)[:, None], settings)
        img[r0:r1][out] = np.nan
        blanked += int(out.sum())
    return blanked


def _write_fits(path: Path, data: np.ndarray, header: fits.Header):
    tmp = path.with_name(f".{path.name}.tmp")
    fits.PrimaryHDU(data=data, header=header).writeto(tmp, overwrite=True, output_verify="exception")
    os.replace(tmp, path)


def _write_parquet(path: Path, table):
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def _write_text(path: Path, text: str):
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _radio_wcs(header: fits.Header) -> WCS:
    return WCS(header, naxis=2)


def _pix2icrs(wcs2d: WCS, x, y):
    """ICRS (ra, dec) in degrees of 0-based pixels through the celestial WCS (frame from RADESYS)."""
    x, y = np.atleast_1d(np.asarray(x, float)), np.atleast_1d(np.asarray(y, float))
    if x.size == 0:
        return np.zeros(0), np.zeros(0)
    lon, lat = wcs2d.all_pix2world(x, y, 0)
    frame = wcs2d.wcs.radesys.strip().lower() or "icrs"
    if frame == "icrs":
        return np.asarray(lon, float), np.asarray(lat, float)
    c = SkyCoord(lon * u.deg, lat * u.deg, frame=frame, equinox=f"J{wcs2d.wcs.equinox:.1f}").icrs
    return c.ra.deg, c.dec.deg


def _render_ir(rng, settings: SimulationSettings, ra, dec, host_ra, host_dec, host_mag, host_size, seed):
    """IR image (float32, DN) and header; hosts first, then the field population, then noise."""
    side_arcsec = settings.size * settings.pixel_scale
    t = math.radians(settings.ir_angle)
    n_ir = (
        int(math.ceil(side_arcsec * (abs(math.cos(t)) + abs(math.sin(t))) / settings.ir_pixel_scale))
        + 2 * IR_MARGIN_PX
    )
    off = rng.uniform(-IR_OFFSET_MAX, IR_OFFSET_MAX, 2)
    centre = SkyCoord(ra * u.deg, dec * u.deg, frame="icrs")
    cen = centre.spherical_offsets_by(off[0] * u.arcsec, off[1] * u.arcsec)
    header = ir_header(cen.ra.deg, cen.dec.deg, n_ir, seed, settings)
    wcs = WCS(header)
    img = np.zeros((n_ir, n_ir), dtype=np.float32)
    ps = settings.ir_pixel_scale
    psf = settings.ir_psf_fwhm

    def add(xp, yp, mag, size, pa):
        flux = 10.0 ** (-0.4 * (np.asarray(mag) - IR_MAGZP))  # DN
        maj, mn, cpa = convolve_gaussians(size, size * 0.8, pa, psf, psf, 0.0)
        # peak of a Gaussian of total flux F in DN per pixel
        peak = flux / (2.0 * math.pi * (maj * FWHM_TO_SIGMA / ps) * (mn * FWHM_TO_SIGMA / ps))
        g = Gaussians(np.asarray(xp, float), np.asarray(yp, float), maj / ps, mn / ps, cpa, peak)
        ok = (g.x > -20) & (g.x < n_ir + 20) & (g.y > -20) & (g.y < n_ir + 20)
        g = Gaussians(g.x[ok], g.y[ok], g.maj[ok], g.min[ok], g.pa[ok], g.peak[ok])
        render_gaussians(img.shape, g, out=img)

    hx, hy = wcs.all_world2pix(host_ra, host_dec, 0)
    add(hx, hy, host_mag, host_size, rng.uniform(0.0, 180.0, len(host_mag)))
    area = (n_ir * ps / 3600.0) ** 2
    nf = int(rng.poisson(settings.ir_density * area))
    g0, g1 = 10 ** (IR_COUNT_SLOPE * IR_MAG_RANGE[0]), 10 ** (IR_COUNT_SLOPE * IR_MAG_RANGE[1])
    mag = np.log10(g0 + rng.random(nf) * (g1 - g0)) / IR_COUNT_SLOPE
    fx = rng.uniform(-0.5, n_ir - 0.5, nf)
    fy = rng.uniform(-0.5, n_ir - 0.5, nf)
    star = rng.random(nf) < IR_STAR_FRACTION
    size = np.where(star, 0.0, rng.uniform(*GALAXY_SIZE_RANGE, nf))
    add(fx, fy, mag, size, rng.uniform(0.0, 180.0, nf))
    img += IR_BACKGROUND_DN
    for r0, r1 in _strips(n_ir, n_ir, 4):
        img[r0:r1] += rng.normal(0.0, IR_NOISE_DN, (r1 - r0, n_ir)).astype(np.float32)
    log.info("IR image: %d x %d px, %d hosts, %d field objects", n_ir, n_ir, len(host_mag), nf)
    return img, header


# --------------------------------------------------------------------------- driver


def measure_source(src: SourceModel, settings: SimulationSettings, sigma: float):
    """
    Render one source alone (noiseless) in a padded stamp and measure it.

    Parameters
    ----------
    src : SourceModel
    settings : SimulationSettings
    sigma : float
        Local noise rms (Jy/beam) the thresholds refer to.

    Returns
    -------
    stamp : ndarray of float64, shape (ny, nx)
        The source in Jy/beam; its first pixel is tile pixel ``(x0, y0)``.
    x0, y0 : int
    morphology : Morphology
    """
    pad = int(math.ceil(2.0 * settings.beam_fwhm / settings.pixel_scale))
    x0, y0, x1, y1 = src.gaussians.bounds()
    x0, y0, x1, y1 = x0 - pad, y0 - pad, x1 + pad, y1 + pad
    stamp = render_gaussians((y1 - y0, x1 - x0), src.gaussians, origin=(x0, y0))
    morph = measure_morphology(
        stamp, sigma, (src.x - x0, src.y - y0), settings.beam_fwhm / settings.pixel_scale
    )
    return stamp, x0, y0, morph


def simulate_tile(
    tile_id: str,
    ra: float,
    dec: float,
    seed: int,
    settings: SimulationSettings,
    radio_path,
    ir_path,
    truth_components_path,
    truth_sources_path,
    meta_path,
    *,
    truth_regions_path=None,
) -> dict:
    """
    Simulate one tile and write its radio image, IR image, truth tables and metadata.

    Parameters
    ----------
    tile_id : str
        Tile name (FITS OBJECT, prefix of the truth ids).
    ra, dec : float
        Tile centre (FK5 J2000, deg): CRVAL of the radio image.
    seed : int
        Seed of the single :class:`numpy.random.Generator` behind everything.
    settings : SimulationSettings
    radio_path, ir_path, truth_components_path, truth_sources_path, meta_path : path-like
        Outputs (FITS, FITS, Parquet, Parquet, JSON). ``ir_path`` is required when
        ``settings.ir`` is True and ignored (may be None) when it is False. Each file is
        written under a temporary name in the same folder and renamed into place.
    truth_regions_path : path-like, optional
        Parquet output: the quality regions with their defect class and parameters
        (`skysift.columns.TRUTH_REGIONS`); not written when None.

    Returns
    -------
    dict
        The metadata written to ``meta_path``.
    """
    if settings.ir and ir_path is None:
        raise ValueError(f"tile {tile_id}: settings.ir is True but no ir_path was given")
    if not settings.ir and ir_path is not None:
        log.warning("tile %s: settings.ir is False, no IR image is written to %s", tile_id, ir_path)
    if not (-90.0 < dec < 90.0):
        raise ValueError(f"tile {tile_id}: dec={dec} out of range")
    rng = np.random.default_rng(seed)
    n = settings.size
    ps = settings.pixel_scale
    beam_px = settings.beam_area_px
    log.info("simulating tile %s: %d^2 px at (%.4f, %.4f), seed %d", tile_id, n, ra, dec, seed)

    header = radio_header(tile_id, ra, dec, seed, settings)
    wcs2d = _radio_wcs(header)

    sources = _draw_sources(rng, settings)
    img = make_radio_noise(rng, settings)
    # defects draw from their own generator: a tile without defects is unchanged by them
    plan = defects.inject_defects(np.random.default_rng([seed, defects.SEED_STREAM]), settings, sources, img)

    src_rows = {k: [] for k in (c.name for c in columns.TABLES["truth_sources"])}
    comp_rows = {k: [] for k in (c.name for c in columns.TABLES["truth_components"])}
    comp_xy = []  # (x, y) per component, for the vectorised WCS afterwards
    host_xy = []
    src_xy = []
    for serial, src in enumerate(sources):
        sid = f"{tile_id}_t{serial:06d}"
        rms_c = float(rms_at(src.x, src.y, settings) * defects.rms_factor_at(src.x, src.y, plan))
        stamp, x0, y0, morph = measure_source(src, settings, rms_c)
        # add into the tile
        sy0, sy1, sx0, sx1 = max(y0, 0), min(y0 + stamp.shape[0], n), max(x0, 0), min(x0 + stamp.shape[1], n)
        if sy0 < sy1 and sx0 < sx1:
            img[sy0:sy1, sx0:sx1] += stamp[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0].astype(np.float32)
        # components
        cids = []
        if src.kind == "compact":
            g = src.gaussians
            cids.append(f"{sid}_0")
            comp_xy.append((src.x, src.y))
            rms_k = rms_c
            comp_rows["flux_int"].append(src.flux * 1e3)
            comp_rows["flux_peak"].append(float(g.peak[0]) * 1e3)
            comp_rows["rms"].append(rms_k * 1e3)
            comp_rows["snr"].append(float(g.peak[0]) / rms_k)
            comp_rows["maj_axis"].append(float(g.maj[0]) * ps)
            comp_rows["min_axis"].append(float(g.min[0]) * ps)
            comp_rows["pos_ang"].append(float(g.pa[0]))
            comp_rows["extended"].append(False)
        else:
            idx = np.arange(1, morph.n_components + 1)
            if morph.n_components:
                lab = morph.labels
                sums = ndimage.sum_labels(stamp, lab, idx)
                peaks = ndimage.maximum(stamp, lab, idx)
                yy, xx = np.indices(stamp.shape)
                cxs = ndimage.sum_labels(stamp * xx, lab, idx) / sums + x0
                cys = ndimage.sum_labels(stamp * yy, lab, idx) / sums + y0
                for k in range(morph.n_components):
                    cids.append(f"{sid}_{k}")
                    comp_xy.append((float(cxs[k]), float(cys[k])))
                    rms_k = float(rms_at(cxs[k], cys[k], settings) * defects.rms_factor_at(cxs[k], cys[k], plan))
                    comp_rows["flux_int"].append(float(sums[k]) / beam_px * 1e3)
                    comp_rows["flux_peak"].append(float(peaks[k]) * 1e3)
                    comp_rows["rms"].append(rms_k * 1e3)
                    comp_rows["snr"].append(float(peaks[k]) / rms_k)
                    comp_rows["maj_axis"].append(math.nan)
                    comp_rows["min_axis"].append(math.nan)
                    comp_rows["pos_ang"].append(math.nan)
                    comp_rows["extended"].append(True)
        for cid in cids:
            comp_rows["component_id"].append(cid)
            comp_rows["source_id"].append(sid)
        # source row
        ys, xs = np.nonzero(morph.mask)
        if xs.size:
            bx0, bx1 = max(int(xs.min()) + x0, 0), min(int(xs.max()) + 1 + x0, n)
            by0, by1 = max(int(ys.min()) + y0, 0), min(int(ys.max()) + 1 + y0, n)
        else:
            bx0 = bx1 = int(np.clip(round(src.x), 0, n))
            by0 = by1 = int(np.clip(round(src.y), 0, n))
        if bx0 < bx1 and by0 < by1:
            rle = encode_mask(morph.mask[by0 - y0 : by1 - y0, bx0 - x0 : bx1 - x0])
        else:
            rle = None
        src_rows["source_id"].append(sid)
        src_rows["morphology"].append(src.kind)
        src_rows["fr_class"].append(morph.fr_class)
        src_rows["rgz_class"].append(morph.rgz_class)
        src_rows["n_components"].append(morph.n_components)
        src_rows["n_peaks"].append(morph.n_peaks)
        src_rows["x"].append(float(src.x))
        src_rows["y"].append(float(src.y))
        src_rows["flux_int"].append(src.flux * 1e3)
        src_rows["las"].append(largest_extent(morph.mask) * ps)
        src_rows["host_w1_mag"].append(src.host_mag)
        src_rows["bbox_x_min"].append(bx0)
        src_rows["bbox_y_min"].append(by0)
        src_rows["bbox_x_max"].append(bx1)
        src_rows["bbox_y_max"].append(by1)
        src_rows["mask_rle"].append(rle)
        src_rows["component_ids"].append(cids)
        src_xy.append((src.x, src.y))
        host_xy.append((src.x + src.host_dx / ps, src.y + src.host_dy / ps))

    nan_count = _blank_outside(img, settings)
    nan_fraction = nan_count / float(n * n)
    region_valid = valid_fractions(img, settings.region_size)

    def valid(xy):
        xy = np.asarray(xy, float).reshape(-1, 2)
        xi, yi = np.rint(xy[:, 0]).astype(np.int64), np.rint(xy[:, 1]).astype(np.int64)
        inside = (xi >= 0) & (xi < n) & (yi >= 0) & (yi < n)
        out = np.zeros(len(xy), dtype=bool)
        out[inside] = np.isfinite(img[yi[inside], xi[inside]])
        return out

    cxy = np.asarray(comp_xy, float).reshape(-1, 2)
    sxy = np.asarray(src_xy, float).reshape(-1, 2)
    hxy = np.asarray(host_xy, float).reshape(-1, 2)
    comp_rows["x"], comp_rows["y"] = cxy[:, 0], cxy[:, 1]
    comp_rows["ra"], comp_rows["dec"] = _pix2icrs(wcs2d, cxy[:, 0], cxy[:, 1])
    comp_rows["in_footprint"] = valid(cxy)
    comp_rows["tile_id"] = [tile_id] * len(cxy)
    src_rows["ra"], src_rows["dec"] = _pix2icrs(wcs2d, sxy[:, 0], sxy[:, 1])
    src_rows["host_ra"], src_rows["host_dec"] = _pix2icrs(wcs2d, hxy[:, 0], hxy[:, 1])
    src_rows["in_footprint"] = valid(sxy)
    src_rows["tile_id"] = [tile_id] * len(sxy)

    radio_path = Path(radio_path)
    _write_fits(radio_path, img.reshape(1, 1, n, n), header)
    del img

    ir_info = None
    if settings.ir:
        host_size = np.array([s.host_size for s in sources])
        ir_img, ir_hdr = _render_ir(
            rng,
            settings,
            float(header["CRVAL1"]),
            float(header["CRVAL2"]),
            np.asarray(src_rows["host_ra"]),
            np.asarray(src_rows["host_dec"]),
            np.asarray(src_rows["host_w1_mag"]),
            host_size,
            seed,
        )
        _write_fits(Path(ir_path), ir_img, ir_hdr)
        ir_info = {"size": int(ir_img.shape[0]), "crval": [ir_hdr["CRVAL1"], ir_hdr["CRVAL2"]]}
        del ir_img

    _write_parquet(
        Path(truth_components_path), columns.table_from_columns(comp_rows, columns.TABLES["truth_components"])
    )
    _write_parquet(
        Path(truth_sources_path), columns.table_from_columns(src_rows, columns.TABLES["truth_sources"])
    )
    if truth_regions_path is not None:
        region_rows = defects.truth_region_rows(plan, tile_id, region_valid, src_rows["source_id"], ps)
        _write_parquet(
            Path(truth_regions_path), columns.table_from_columns(region_rows, columns.TABLES["truth_regions"])
        )

    kinds = [s.kind for s in sources]
    meta = {
        "tile_id": tile_id,
        "ra": float(ra),
        "dec": float(dec),
        "size": int(n),
        "pixel_scale": float(ps),
        "beam": {"bmaj": settings.beam_fwhm, "bmin": settings.beam_fwhm, "bpa": 0.0},
        "rms": float(settings.rms),
        "seed": int(seed),
        "frequency": FREQUENCY_HZ,
        "settings": asdict(settings),
        "n_sources": len(sources),
        "n_components": len(cxy),
        "n_extended": int(sum(k != "compact" for k in kinds)),
        "n_by_morphology": {k: int(kinds.count(k)) for k in ("compact",) + EXTENDED_KINDS},
        "nan_fraction": float(nan_fraction),
        "ir": ir_info,
        "quality_regions": {
            "region_size": int(settings.region_size),
            "classes": {k: sum(d.quality_class == k for d in plan) for k in defects.QUALITY_CLASSES},
        },
        "origin": "skysift simulation",
    }
    _write_text(Path(meta_path), json.dumps(meta, indent=2, sort_keys=True) + "\n")
    log.info(
        "tile %s: %d sources, %d components, NaN fraction %.4f", tile_id, len(sources), len(cxy), nan_fraction
    )
    return meta
