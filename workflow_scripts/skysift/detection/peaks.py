"""
Radio peaks counted inside a detection's mask, and the RGZ class probabilities updated by them.

The RGZ classes ``iC_jP`` count a source's components and its peaks. Wu et al. (2019, CLARAN,
Sect. 6) found that the detector groups components well but confuses the number of peaks
(1C_1P / 1C_2P / 1C_3P, 2C_2P / 2C_3P), and that "in practice, we can recover ground-truth peaks
by rerunning the same peak calculation algorithm ... on each RoI detected". `count_peaks` runs
that algorithm, the one that defines the peaks of the simulator's truth
(`skysift.simulate.find_peaks`: local maxima above 4 sigma, resolved when at least half a beam
apart), on the noisy image, and keeps the peaks inside the mask, with one addition for the noise: a fainter peak
counts only where the image dips by ``min_dip`` sigma on the way to every brighter one.
`peak_class_probs` then treats the count as evidence on the number of peaks within each
component group (the detector's ``1C_*``, ``2C_*``, ``3C_*``), wrong with probability
``count_error``: the count decides unless the detector is confident enough to outweigh it.
With a perfect detector's classes (truth masks, one class at >= 0.85) nothing changes; with the
demo's CPU model the count corrects most of its peak confusions.
"""

from __future__ import annotations

import math
import re

import numpy as np
from scipy import ndimage

from ..simulate import PEAK_SIGMA, find_peaks  # the truth's definition of a peak

__all__ = ["PEAK_SIGMA", "PEAK_MIN_DIP", "PEAK_COUNT_ERROR", "count_peaks", "rgz_groups", "peak_class_probs"]

PEAK_MIN_DIP = 0.5  # sigma; chosen on the demo's two training tiles with their truth masks
# how often the count misses a multi-peak source's class there (9 of 61 1C_2P and 1C_3P sources)
PEAK_COUNT_ERROR = 0.15
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
    resolved = find_peaks(v, min_snr * sigma, 0.5 * beam_fwhm_px)  # (x, y), brightest first
    usable = mask
    if not finite.all():  # beside blanked pixels a maximum is unknown: the rim of a hole is no peak
        r = max(int(math.ceil(0.5 * beam_fwhm_px)), 1)
        usable = mask & ~ndimage.maximum_filter(~finite, size=2 * r + 1, mode="constant", cval=False)
    kept = []
    for x, y in resolved:
        if usable[y, x] and all(_dips(v, (y, x), p, sigma, min_dip) for p in kept):
            kept.append((y, x))
    return len(kept)


def _dips(v, faint, bright, sigma, min_dip):
    """The image falls ``min_dip`` sigma below a fainter peak on the straight line to a brighter one."""
    (y, x), (by, bx) = faint, bright
    n = int(math.ceil(math.hypot(x - bx, y - by))) + 1
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


def peak_class_probs(probs, categories, n_peaks, count_error=PEAK_COUNT_ERROR):
    """
    Class probabilities updated by the counted peaks.

    Within each component count ``i``, the count is evidence on the number of peaks ``j``:
    ``p(iC_jP | count) ∝ p(iC_jP) L(count | j)``, the count giving the group's class nearest to
    it (at least ``i`` peaks, as `skysift.detection.labels.rgz_category`) with probability
    ``1 - count_error`` and each other class of the group with ``count_error / (k - 1)``
    (``k`` classes in the group). The group's total, the detector's probability of ``i``
    components, is unchanged: the count decides the peaks unless the detector is confident
    enough to outweigh its error.

    Parameters
    ----------
    probs : 1D float ndarray, ``(n_classes,)``
        The detector's probability of every class (background excluded: they may sum below 1).
    categories : sequence of str
        Class names, in the order of ``probs``.
    n_peaks : int
        Peaks counted in the detection's mask (`count_peaks`).
    count_error : float
        Probability that the count misses the true class, in ``[0, 1)``; 0 puts each group's
        whole probability on the counted class.

    Returns
    -------
    1D float32 ndarray, same shape
        For RGZ classes, the updated probabilities (same total); other schemes: ``probs``
        unchanged.
    """
    if not 0.0 <= count_error < 1.0:
        raise ValueError(f"count_error must lie in [0, 1), got {count_error!r}")
    probs = np.asarray(probs, dtype=np.float64)
    groups = rgz_groups(categories)
    if groups is None:
        return probs.astype(np.float32)
    out = np.zeros_like(probs)
    for members in groups.values():
        peaks = np.array(sorted(members))
        idx = np.array([members[j] for j in peaks])
        counted = int(np.argmin(np.abs(peaks - max(int(n_peaks), int(peaks.min())))))
        likelihood = np.full(len(peaks), count_error / max(1, len(peaks) - 1))
        likelihood[counted] = 1.0 - count_error if len(peaks) > 1 else 1.0
        post = probs[idx] * likelihood
        total = probs[idx].sum()
        if post.sum() > 0:
            out[idx] = total * post / post.sum()
        else:  # the detector gives the group nothing but the counted class: the count decides
            out[idx[counted]] = total
    return out.astype(np.float32)
