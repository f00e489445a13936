"""
Radio + infrared input fusion for the detector: one implementation for training and inference.

Every mode turns one cutout (radio in Jy/beam, optionally the infrared resampled onto the same
grid) into a ``(3, ny, nx)`` float32 image with values in ``[0, 1]`` (channels R, G, B):

- ``radio`` (Wu et al. 2019, D1): the radio after min-max normalisation and the DS9 log
  stretch ``log10(a x + 1)`` with ``a = 1000`` (divided by ``log10(a + 1)`` to end at 1), in
  all three channels; no infrared.
- ``d3`` (Wu et al. 2019, D3): the infrared (background-subtracted, same log min-max stretch)
  in all three channels, with the radio contours at 5 sigma and every factor of 2 above drawn
  on it in green (``(0, 1, 0)``).
- ``d4`` (Wu et al. 2019, D4): ``d3``, with every pixel outside the convex hull of the radio
  contours replaced by the training-set mean of each channel (``fill``).
- ``rgb`` (Gupta et al. 2023, Sect. 3.1): each image keeps only its islands (radio: above 3
  sigma of the MAD-clipped noise; infrared: above median + 3 MAD) of at least 5 pixels, scaled
  by log + min-max to [0, 1], the rest 0; the radio, quantised to 16 bits, goes to B (bits 8-16)
  and G (bits 0-8), the infrared's bits 8-16 to R.

A cutout without infrared (``ir`` None or all NaN) falls back to ``radio`` with a
`MissingIRWarning`. Blanked (NaN) pixels become 0 in every mode.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage

from .noise import clipped_rms

__all__ = [
    "MODES",
    "MissingIRWarning",
    "log_minmax",
    "contour_mask",
    "island_scale",
    "fuse",
    "fill_values",
]

MODES = ("radio", "d3", "d4", "rgb")
DS9_LOG_A = 1000.0
CONTOUR_SIGMA = 5.0
CONTOUR_COLOUR = np.array([0.0, 1.0, 0.0], dtype=np.float32)
GUPTA_RADIO_SIGMA = 3.0
GUPTA_MIN_PIXELS = 5


class MissingIRWarning(UserWarning):
    """A fusion mode needing the infrared got none: the cutout is fused as ``radio``."""


def log_minmax(image, *, a=DS9_LOG_A):
    """
    DS9 "log min-max" scaling.

    Parameters
    ----------
    image : 2D ndarray, ``(ny, nx)``
        Any unit; NaN pixels are ignored and returned as 0.
    a : float
        Log exponent (DS9 default 1000).

    Returns
    -------
    2D float32 ndarray, same shape, in ``[0, 1]``: ``log10(a x + 1) / log10(a + 1)`` with
    ``x = (v - min) / (max - min)`` over the finite pixels (0 everywhere for a constant image).
    """
    v = np.asarray(image, dtype=np.float32)
    finite = np.isfinite(v)
    out = np.zeros(v.shape, dtype=np.float32)
    if not finite.any():
        return out
    lo, hi = float(v[finite].min()), float(v[finite].max())
    if hi <= lo:
        return out
    x = (v[finite] - lo) / (hi - lo)
    out[finite] = np.log10(a * x + 1.0) / np.log10(a + 1.0)
    return out


def contour_mask(radio, sigma, *, base_sigma=CONTOUR_SIGMA, factor=2.0, max_levels=10):
    """
    Pixels on the radio contours at ``base_sigma * sigma * factor**k``.

    A pixel is on the contour of a level when it is at or above the level and one of its four
    neighbours is below it (the inner boundary of the region above the level).

    Parameters
    ----------
    radio : 2D ndarray, ``(ny, nx)``
        Radio cutout (Jy/beam); NaN counts as below every level.
    sigma : float
        Noise rms, same unit as ``radio``.
    base_sigma, factor : float
        First level in units of sigma and the ratio between levels.
    max_levels : int

    Returns
    -------
    contours : 2D bool ndarray, same shape
    above : 2D bool ndarray, same shape
        Pixels at or above the first level.
    """
    r = np.nan_to_num(np.asarray(radio, dtype=np.float32), nan=-np.inf)
    contours = np.zeros(r.shape, dtype=bool)
    above = np.zeros(r.shape, dtype=bool)
    if not np.isfinite(sigma) or sigma <= 0:
        return contours, above
    level = base_sigma * sigma
    for k in range(max_levels):
        region = r >= level
        if k == 0:
            above = region
        if not region.any():
            break
        contours |= region & ~ndimage.binary_erosion(region, border_value=1)
        level *= factor
    return contours, above


def island_scale(image, threshold, *, min_pixels=GUPTA_MIN_PIXELS):
    """
    Islands above a threshold, log + min-max scaled (Gupta et al. 2023, Sect. 3.1).

    Parameters
    ----------
    image : 2D ndarray, ``(ny, nx)``
    threshold : float
        Same unit as ``image``, positive.
    min_pixels : int
        Islands (8-connected) with fewer pixels are dropped.

    Returns
    -------
    2D float32 ndarray in ``[0, 1]``: ``log(v)`` min-max normalised over the kept island pixels,
    0 elsewhere (1 on the islands when they hold a single value).
    """
    v = np.nan_to_num(np.asarray(image, dtype=np.float32), nan=-np.inf)
    out = np.zeros(v.shape, dtype=np.float32)
    if not np.isfinite(threshold) or threshold <= 0:
        return out
    labels, n = ndimage.label(v > threshold, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return out
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = (sizes >= min_pixels)[labels]
    keep &= labels > 0
    if not keep.any():
        return out
    lv = np.log(v[keep])
    lo, hi = float(lv.min()), float(lv.max())
    out[keep] = (lv - lo) / (hi - lo) if hi > lo else 1.0
    return out


def _ir_base(ir):
    """Infrared for d3/d4: background (median) subtracted, log min-max scaled."""
    finite = np.isfinite(ir)
    return log_minmax(np.where(finite, ir - np.median(ir[finite]), np.nan))


def _has_ir(ir):
    return ir is not None and bool(np.isfinite(ir).any())


def fuse(radio, ir=None, mode="radio", *, fill=None, sigma=None):
    """
    The detector's input image of one cutout.

    Parameters
    ----------
    radio : 2D ndarray, ``(ny, nx)``
        Radio cutout in Jy/beam, NaN where blanked.
    ir : 2D ndarray, ``(ny, nx)``, optional
        Infrared resampled onto the radio grid (any unit), NaN outside its coverage.
    mode : {'radio', 'd3', 'd4', 'rgb'}
    fill : sequence of 3 float, optional
        Per-channel value outside the convex hull of the radio contours; required by ``d4``
        (the training-set mean of the ``d3`` images, see `fill_values`).
    sigma : float, optional
        Radio noise rms (Jy/beam); the MAD-clipped rms of the cutout when omitted.

    Returns
    -------
    3D float32 ndarray, ``(3, ny, nx)`` in ``[0, 1]``, channels R, G, B.

    Warns
    -----
    MissingIRWarning
        ``mode`` needs the infrared and ``ir`` is None or all NaN: the radio mode is used.
    """
    if mode not in MODES:
        raise ValueError(f"fusion mode must be one of {MODES}, got {mode!r}")
    radio = np.asarray(radio, dtype=np.float32)
    if radio.ndim != 2:
        raise ValueError(f"radio must be a 2-D image, got shape {radio.shape}")
    if ir is not None and np.shape(ir) != radio.shape:
        raise ValueError(f"ir shape {np.shape(ir)} differs from radio shape {radio.shape}")
    if mode == "d4" and (fill is None or len(fill) != 3):
        raise ValueError(f"fusion mode 'd4' needs fill = 3 per-channel values, got {fill!r}")
    if mode != "radio" and not _has_ir(ir):
        warnings.warn(f"fusion mode {mode!r} needs an infrared image; using 'radio'", MissingIRWarning,
                      stacklevel=2)
        mode = "radio"
    if mode == "radio":
        d1 = log_minmax(radio)
        return np.stack([d1, d1, d1])
    ir = np.asarray(ir, dtype=np.float32)
    if sigma is None:
        sigma = clipped_rms(radio[::2, ::2])
    if mode == "rgb":
        r = island_scale(radio, GUPTA_RADIO_SIGMA * sigma)
        finite = ir[np.isfinite(ir)]
        med = float(np.median(finite))
        mad = float(np.median(np.abs(finite - med)))
        i = island_scale(ir, med + 3.0 * mad) if mad > 0 else np.zeros_like(r)
        r16 = np.round(r * 65535.0).astype(np.int64)
        i16 = np.round(i * 65535.0).astype(np.int64)
        return np.stack([(i16 >> 8) / 255.0, (r16 & 255) / 255.0, (r16 >> 8) / 255.0]).astype(np.float32)
    base = _ir_base(ir)
    img = np.stack([base, base, base])
    contours, above = contour_mask(radio, sigma)
    img[:, contours] = CONTOUR_COLOUR[:, None]
    if mode == "d4":
        from skimage.morphology import convex_hull_image

        hull = convex_hull_image(contours) if contours.any() else np.zeros(contours.shape, dtype=bool)
        outside = ~hull
        img[:, outside] = np.asarray(fill, dtype=np.float32)[:, None]
    return img


def fill_values(images):
    """
    Per-channel mean of fused images: the ``fill`` of mode ``d4`` (from the ``d3`` images).

    Parameters
    ----------
    images : iterable of 3D ndarray, ``(3, ny, nx)``

    Returns
    -------
    list of 3 float (0.0 each when there is no image).
    """
    total, n = np.zeros(3), 0
    for img in images:
        total += np.asarray(img, dtype=np.float64).reshape(3, -1).sum(axis=1)
        n += img[0].size
    return [float(v) for v in (total / n if n else total)]

