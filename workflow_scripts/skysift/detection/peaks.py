"""
Radio peaks counted inside a detection's mask, and RGZ classes made to agree with them.

The RGZ classes ``iC_jP`` count a source's components and its peaks. Wu et al. (2019, CLARAN,
Sect. 6) found that the detector groups components well but confuses the number of peaks
(1C_1P / 1C_2P / 1C_3P, 2C_2P / 2C_3P), and that "in practice, we can recover ground-truth peaks
by rerunning the same peak calculation algorithm ... on each RoI detected". `count_peaks` is
that algorithm, the one that defines the peaks of the simulator's truth
(`skysift.simulate.find_peaks`: local maxima above 4 sigma, resolved when at least half a beam
apart) run on the noisy image inside the mask, with one addition for the noise: a fainter peak
counts only where the image dips by ``min_dip`` sigma on the way to every brighter one.
`peak_class_probs` then gives each component group's probability (the detector's ``1C_*``,
``2C_*``, ``3C_*``) to the class of that group with the counted peaks.
"""

from __future__ import annotations

import math
import re

import numpy as np
from scipy import ndimage

__all__ = ["PEAK_SIGMA", "PEAK_MIN_DIP", "count_peaks", "rgz_groups", "peak_class_probs"]

PEAK_SIGMA = 4.0  # as the simulator's truth (skysift.simulate.PEAK_SIGMA)
PEAK_MIN_DIP = 0.5  # sigma; chosen on the demo's two training tiles with their truth masks
_RGZ = re.compile(r"^([1-9])C_([1-9])P$")


def count_peaks(image, mask, sigma, beam_fwhm_px, *, min_snr=PEAK_SIGMA, min_dip=PEAK_MIN_DIP):
    """
    Resolved radio peaks inside a mask.

    Parameters
    ----------
    image : 2D ndarray, ``(ny, nx)``
        Radio (Jy/beam) around the mask; NaN pixels, and maxima with NaN pixels in their
        square, are never peaks.
    mask : 2D bool ndarray, same shape
        The source's pixels: peaks are counted inside it.
    sigma : float
        Noise rms (Jy/beam).
    beam_fwhm_px : float
        Beam FWHM in pixels: a peak is a maximum of its ``2 ceil(FWHM / 2) + 1`` px square and
        lies at least half a beam from every brighter peak.
    min_snr : float
        Peaks exceed ``min_snr * sigma``.
    min_dip : float
        Sigma by which the image must fall below a peak, along the straight line to each brighter
        peak, for the two to be separate (0: any two resolved maxima count).

    Returns
    -------
    int
        Number of peaks (0 when nothing in the mask exceeds ``min_snr * sigma``, or ``sigma`` is
        not a positive number).
    """
    v = np.asarray(image, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if v.shape != mask.shape:
        raise ValueError(f"image shape {v.shape} differs from mask shape {mask.shape}")
    if not (np.isfinite(sigma) and sigma > 0) or not mask.any():
        return 0
    finite = np.isfinite(v)
    v = np.where(finite, v, -np.inf)
    r = max(int(math.ceil(0.5 * beam_fwhm_px)), 1)
    local_max = v == ndimage.maximum_filter(v, size=2 * r + 1, mode="constant", cval=-np.inf)
    if not finite.all():  # beside blanked pixels a maximum is unknown: the rim of a hole is no peak
        local_max &= ~ndimage.maximum_filter(~finite, size=2 * r + 1, mode="constant", cval=False)
    jj, ii = np.nonzero(local_max & mask & (v > min_snr * sigma))
    kept = []
    for k in np.argsort(-v[jj, ii], kind="stable"):
        y, x = int(jj[k]), int(ii[k])
        if all(_separate(v, (y, x), p, sigma, beam_fwhm_px, min_dip) for p in kept):
            kept.append((y, x))
    return len(kept)


def _separate(v, faint, bright, sigma, beam_fwhm_px, min_dip):
    """A fainter peak is resolved from a brighter one and dips by ``min_dip`` sigma towards it."""
    (y, x), (by, bx) = faint, bright
    d = math.hypot(x - bx, y - by)
    if d < 0.5 * beam_fwhm_px:
        return False
    n = int(math.ceil(d)) + 1
    ys = np.rint(np.linspace(y, by, n)).astype(int)
    xs = np.rint(np.linspace(x, bx, n)).astype(int)
    return bool(v[y, x] - v[ys, xs].min() >= min_dip * sigma)


def rgz_groups(categories):
    """
    The classes of each component count, when every category is an RGZ ``iC_jP`` class.

    Parameters
    ----------
    categories : sequence of str

    Returns
    -------
    dict or None
        Component count -> {peak count: index into ``categories``}; None for another scheme
        (e.g. FR-I / FR-II / FR-X / R, which counts no peaks).
    """
    groups = {}
    for k, name in enumerate(categories):
        m = _RGZ.match(str(name))
        if m is None:
            return None
        groups.setdefault(int(m.group(1)), {})[int(m.group(2))] = k
    return groups


def peak_class_probs(probs, categories, n_peaks):
    """
    Class probabilities that agree with the counted peaks.

    Parameters
    ----------
    probs : 1D float ndarray, ``(n_classes,)``
        The detector's probability of every class (background excluded: they may sum below 1).
    categories : sequence of str
        Class names, in the order of ``probs``.
    n_peaks : int
        Peaks counted in the detection's mask (`count_peaks`).

    Returns
    -------
    1D float32 ndarray, same shape
        For RGZ classes: the summed probability of each component count ``i`` on the class
        ``iC_jP`` whose ``j`` is the nearest to ``n_peaks`` among that group's classes (at
        least ``i`` peaks, as `skysift.detection.labels.rgz_category`), 0 on the others; the
        total is unchanged. Other schemes: ``probs`` unchanged.
    """
    probs = np.asarray(probs, dtype=np.float32)
    groups = rgz_groups(categories)
    if groups is None:
        return probs.copy()
    out = np.zeros_like(probs)
    for members in groups.values():
        peaks = np.array(sorted(members))
        j = int(peaks[np.argmin(np.abs(peaks - max(int(n_peaks), int(peaks.min()))))])
        out[members[j]] = probs[list(members.values())].sum()
    return out
