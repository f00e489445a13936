"""
Source extraction with SEP on whole radio tiles, in Selavy-style columns.

Radio images differ from the optical frames SEP was written for in two ways that matter:

- the noise is correlated on the scale of the restoring beam, so SEP's default matched filter
  (which assumes independent pixels) lifts noise peaks over the threshold; the image is
  already beam-convolved, so no filter is applied (``filter_kernel=None``);
- isophotal fluxes miss the wings of the beam, so integrated fluxes are measured in Kron
  ellipses (2.5 Kron radii) that are never smaller than ``min_aperture_beams`` beam FWHM.

A tile is processed in horizontal strips with an overlap, each strip keeping the objects whose
centre lies in its own rows (the same ownership rule as the cutout grid): memory scales with
the strip, not the tile, and SEP's pixel-stack and sub-object limits are raised, and flagged,
when a dense strip overflows them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import sep
from astropy.coordinates import SkyCoord
from scipy import ndimage

from .columns import COMPONENTS
from .cutouts import core_edges, grid_starts
from .tileio import native_float32

__all__ = [
    "ExtractSettings",
    "FLAG_NAN_APERTURE",
    "FLAG_STRIP_SEAM",
    "FLAG_SEP_LIMIT",
    "detect_objects",
    "extract_components",
    "position_angle_east_of_north",
    "iau_names",
    "isophote_size_correction",
]

log = logging.getLogger(__name__)

FLAG_NAN_APERTURE = 1
FLAG_STRIP_SEAM = 2
FLAG_SEP_LIMIT = 4

FWHM_PER_SIGMA = 2 * np.sqrt(2 * np.log(2))


@dataclass(frozen=True)
class ExtractSettings:
    """
    SEP settings (pixels unless stated).

    thresh_sigma : detection threshold in units of the local rms map.
    minarea : minimum number of pixels above threshold.
    back_size, back_filter : background mesh side and median-filter size (meshes).
    subtract_background : subtract SEP's background map (radio images are near zero-mean).
    deblend_nthresh, deblend_cont : SEP deblending levels and minimum contrast.
    filter_kernel : "none" (radio default, see module notes) or "default" (SEP's 3x3 pyramid).
    kron_factor : Kron aperture size in Kron radii.
    min_aperture_beams : smallest semi-axis of the flux aperture in beam FWHM.
    strip_rows, strip_overlap : rows per extraction strip and overlap between strips.
    """

    thresh_sigma: float = 5.0
    minarea: int = 5
    back_size: int = 128
    back_filter: int = 3
    subtract_background: bool = True
    deblend_nthresh: int = 32
    deblend_cont: float = 0.005
    filter_kernel: str = "none"
    kron_factor: float = 2.5
    min_aperture_beams: float = 1.25
    strip_rows: int = 4096
    strip_overlap: int = 256

    def __post_init__(self):
        if self.thresh_sigma <= 0:
            raise ValueError(f"thresh_sigma must be positive, got {self.thresh_sigma!r}")
        if self.filter_kernel not in ("none", "default"):
            raise ValueError(f"filter_kernel must be 'none' or 'default', got {self.filter_kernel!r}")
        if not 0 <= self.strip_overlap < self.strip_rows:
            raise ValueError(f"need 0 <= strip_overlap < strip_rows, got {self.strip_overlap!r}, {self.strip_rows!r}")


def _sep_filter(settings):
    if settings.filter_kernel == "none":
        return None
    return np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float32)


def detect_objects(data, mask, settings, *, segmentation=False):
    """
    Background and SEP detection on one image in native float32.

    Parameters
    ----------
    data : 2D float32 ndarray, ``(ny, nx)``
        Native byte order; blanked pixels set to 0 and flagged in ``mask``. Modified in place:
        the background is subtracted when ``settings.subtract_background``.
    mask : 2D bool ndarray, same shape
        True where pixels are blank.
    settings : ExtractSettings
    segmentation : bool
        Also return SEP's segmentation map.

    Returns
    -------
    objects : structured ndarray
        SEP's object table (pixel units, image unit).
    rms : 2D float32 ndarray
        Background rms map, same shape and unit as ``data``.
    segmap : 2D int32 ndarray or None
        Object number (1-based) of each pixel, 0 for background.
    limit_raised : bool
        True when SEP's pixel-stack or sub-object limit had to be raised.
    """
    bkg = sep.Background(data, mask=mask, bw=settings.back_size, bh=settings.back_size,
                         fw=settings.back_filter, fh=settings.back_filter)
    rms = bkg.rms()
    if settings.subtract_background:
        bkg.subfrom(data)
    kw = dict(err=rms, mask=mask, minarea=settings.minarea, filter_kernel=_sep_filter(settings),
              deblend_nthresh=settings.deblend_nthresh, deblend_cont=settings.deblend_cont,
              segmentation_map=segmentation)
    limit_raised = False
    sep.set_extract_pixstack(max(300_000, data.size // 16))
    sep.set_sub_object_limit(4096)
    for attempt in range(4):
        try:
            out = sep.extract(data, settings.thresh_sigma, **kw)
            break
        except Exception as err:  # sep raises a bare Exception on internal overflows
            text = str(err)
            if "pixel stack" in text or "overflow" in text or "limit" in text:
                limit_raised = True
                sep.set_extract_pixstack(min(data.size, sep.get_extract_pixstack() * 4))
                sep.set_sub_object_limit(sep.get_sub_object_limit() * 4)
                log.warning("SEP limit hit (%s): raised to pixstack=%d, sub-objects=%d", text,
                            sep.get_extract_pixstack(), sep.get_sub_object_limit())
                continue
            raise
    else:
        raise RuntimeError("SEP still overflows after raising its limits 4 times")
    objects, segmap = out if segmentation else (out, None)
    return objects, rms, segmap, limit_raised


def position_angle_east_of_north(wcs, x, y, theta):
    """
    Sky position angle of a pixel-frame direction.

    Parameters
    ----------
    wcs : `~astropy.wcs.WCS`
        Celestial WCS (0-based pixels).
    x, y : 1D ndarray
        Pixel positions.
    theta : 1D ndarray
        Direction angle in radians, counter-clockwise from the +x axis (SEP's convention).

    Returns
    -------
    pa : 1D ndarray, degrees east of north in ``[0, 180)`` (an axis, not a vector).
    """
    x, y, theta = (np.asarray(v, dtype=float) for v in (x, y, theta))
    if x.size == 0:
        return np.zeros(0)
    c0 = wcs.pixel_to_world(x, y)
    c1 = wcs.pixel_to_world(x + np.cos(theta), y + np.sin(theta))
    return np.mod(c0.position_angle(c1).deg, 180.0)


def iau_names(ra, dec):
    """
    IAU-style names ``JHHMMSS.s+DDMMSS`` (truncated, not rounded, as the IAU asks).

    Parameters
    ----------
    ra, dec : array-like, degrees (ICRS)

    Returns
    -------
    list of str
    """
    ra = np.mod(np.asarray(ra, dtype=float), 360.0)
    dec = np.asarray(dec, dtype=float)
    t = np.floor(ra / 15.0 * 36000 + 1e-6).astype(np.int64)  # tenths of seconds of time
    hh, mm, ss = t // 36000, (t // 600) % 60, t % 600
    sign = np.where(dec < 0, "-", "+")
    d = np.floor(np.abs(dec) * 3600 + 1e-6).astype(np.int64)
    dd, dm, ds = d // 3600, (d // 60) % 60, d % 60
    return [f"J{a:02d}{b:02d}{c // 10:02d}.{c % 10:d}{s}{e:02d}{f:02d}{g:02d}"
            for a, b, c, s, e, f, g in zip(hh, mm, ss, sign, dd, dm, ds)]


def isophote_size_correction(q, max_factor=3.0):
    """
    Factor from isophotal second moments to the sigma of a Gaussian profile.

    The second moment of a 2-D Gaussian measured only inside the isophote at a fraction ``q``
    of its peak is ``sigma**2 * (1 - k q / (1 - q))`` with ``k = -ln q``; faint sources, seen
    only near their peak, would otherwise look smaller than the beam.

    Parameters
    ----------
    q : ndarray
        Threshold over peak, in (0, 1).
    max_factor : float
        Upper bound of the factor (noise makes it diverge as ``q -> 1``).

    Returns
    -------
    ndarray, same shape as ``q``, >= 1.
    """
    q = np.clip(np.asarray(q, dtype=float), 1e-12, 1 - 1e-9)
    k = -np.log(q)
    inner = 1 - k * q / (1 - q)
    return np.minimum(1 / np.sqrt(np.maximum(inner, 1 / max_factor**2)), max_factor)


def _strips(ny, settings):
    """(read_start, read_stop, own_start, own_stop) row ranges of each strip."""
    if ny <= settings.strip_rows:
        return [(0, ny, 0, ny)]
    starts = grid_starts(ny, settings.strip_rows, settings.strip_overlap)
    edges = core_edges(starts, settings.strip_rows, ny)
    return [(s, s + settings.strip_rows, edges[i], edges[i + 1]) for i, s in enumerate(starts)]


def _measure_strip(tile, r0, r1, own0, own1, settings):
    """SEP on rows [r0, r1) of a tile; measurements of the objects centred in [own0, own1)."""
    data = native_float32(tile.data[r0:r1])
    mask = ~np.isfinite(data)
    data[mask] = 0.0
    objects, rms, segmap, limit_raised = detect_objects(data, mask, settings, segmentation=True)
    n_all = len(objects)
    yc = objects["y"] + r0
    keep = (np.floor(yc + 0.5) >= own0) & (np.floor(yc + 0.5) < own1)
    idx = np.flatnonzero(keep)
    obj = objects[idx]

    # islands: connected groups of detected pixels; objects deblended from one island share it
    islands, _ = ndimage.label(segmap > 0, structure=np.ones((3, 3), dtype=bool))
    detected = segmap > 0
    obj_island = np.zeros(n_all + 1, dtype=np.int64)
    obj_island[segmap[detected]] = islands[detected]  # all pixels of an object lie in one island
    npix = np.bincount(segmap[detected], minlength=n_all + 1)
    del islands, detected, segmap
    seam = np.zeros(len(obj), dtype=bool)
    if r0 > 0:
        seam |= obj["ymin"] <= 0
    if r1 < tile.shape[0]:
        seam |= obj["ymax"] >= (r1 - r0 - 1)

    beam_sigma = np.sqrt(tile.bmaj * tile.bmin) / tile.pixel_scale / FWHM_PER_SIGMA
    x, y, a, b, theta = obj["x"], obj["y"], obj["a"], obj["b"], obj["theta"]
    xw, yw, wflag = sep.winpos(data, x, y, np.full(len(obj), beam_sigma), mask=mask)
    bad_win = (wflag != 0) | ~np.isfinite(xw) | (np.hypot(xw - x, yw - y) > 2 * beam_sigma)
    xw, yw = np.where(bad_win, x, xw), np.where(bad_win, y, yw)

    kron, _ = sep.kron_radius(data, x, y, a, b, theta, 6.0, mask=mask)
    kron = np.where(np.isfinite(kron) & (kron > 0), kron, 0.0)
    r_min = settings.min_aperture_beams * beam_sigma * FWHM_PER_SIGMA
    a_ap = np.maximum(settings.kron_factor * kron * a, r_min)
    b_ap = np.maximum(settings.kron_factor * kron * b, r_min)
    flux_sum, _, fflag = sep.sum_ellipse(data, xw, yw, a_ap, b_ap, theta, 1.0, mask=mask, subpix=1)
    n_ap = np.pi * a_ap * b_ap
    yi = np.clip(np.round(yw).astype(int), 0, data.shape[0] - 1)
    xi = np.clip(np.round(xw).astype(int), 0, data.shape[1] - 1)
    local_rms = rms[yi, xi]

    size_factor = isophote_size_correction(obj["thresh"] / np.maximum(obj["peak"], 1e-30))

    flags = np.zeros(len(obj), dtype=np.int32)
    flags |= np.where((fflag & sep.APER_HASMASKED) != 0, FLAG_NAN_APERTURE, 0).astype(np.int32)
    flags |= np.where(seam, FLAG_STRIP_SEAM, 0).astype(np.int32)
    if limit_raised:
        flags |= FLAG_SEP_LIMIT
    return dict(
        x=xw, y=yw + r0, peak=obj["peak"], flux_sum=flux_sum, flux_iso=obj["flux"], n_ap=n_ap,
        a=a * size_factor, b=b * size_factor, theta=theta, kron=kron, rms=local_rms, npix=npix[idx + 1],
        island=obj_island[idx + 1], sep_flags=obj["flag"].astype(np.int32), flags=flags,
        strip=np.full(len(obj), r0),
    )


def extract_components(tile, tile_id, settings=ExtractSettings()):
    """
    SEP components of a whole radio tile.

    Parameters
    ----------
    tile : `skysift.tileio.Tile`
        Radio tile with a celestial WCS and a restoring beam; pixels in Jy/beam (or mJy/beam).
    tile_id : str
    settings : ExtractSettings

    Returns
    -------
    pandas.DataFrame
        One row per component with the `skysift.columns.COMPONENTS` columns, sorted by
        (y, x); empty (with the right columns) when nothing is found.

    Notes
    -----
    flux_int = sum of the background-subtracted pixels in the Kron ellipse / beam area (pix);
    flux_int_err = rms * sqrt(2 * N_aperture / beam area), the error of a sum over beam-correlated
    noise (the noise correlation area of an image convolved with its beam is twice the beam
    area); positional errors follow Condon (1997) for a point source: sigma_beam * sqrt(2) / snr.
    """
    parts = [_measure_strip(tile, *s, settings) for s in _strips(tile.shape[0], settings)]
    m = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.lexsort((m["x"], m["y"]))
    m = {k: v[order] for k, v in m.items()}
    n = len(order)
    if n == 0:
        log.warning("%s: SEP found no component", tile_id)
        return pd.DataFrame({c.name: pd.Series(dtype=object) for c in COMPONENTS})

    to_mjy = tile.mjy_per_unit
    beam_area = tile.beam_area
    beam_fwhm = np.sqrt(tile.bmaj * tile.bmin)
    sky = tile.wcs.pixel_to_world(m["x"], m["y"])
    icrs = sky.icrs if isinstance(sky, SkyCoord) else sky
    ra, dec = icrs.ra.deg, icrs.dec.deg
    snr = m["peak"] / m["rms"]
    pos_err = beam_fwhm / FWHM_PER_SIGMA * np.sqrt(2) / np.maximum(snr, 1e-3)
    # islands numbered in order of first appearance along (y, x); labels are per strip
    island_ids, _ = pd.factorize(pd.Series(m["strip"] * (1 << 32) + m["island"]))
    serial = np.arange(n)
    return pd.DataFrame({
        "component_id": [f"{tile_id}_c{i:06d}" for i in serial],
        "component_name": iau_names(ra, dec),
        "island_id": [f"{tile_id}_i{i:06d}" for i in island_ids],
        "tile_id": tile_id,
        "ra_deg_cont": ra,
        "dec_deg_cont": dec,
        "ra_err": pos_err.astype(np.float32),
        "dec_err": pos_err.astype(np.float32),
        "x": m["x"],
        "y": m["y"],
        "flux_peak": (m["peak"] * to_mjy).astype(np.float32),
        "flux_peak_err": (m["rms"] * to_mjy).astype(np.float32),
        "flux_int": (m["flux_sum"] / beam_area * to_mjy).astype(np.float32),
        "flux_int_err": (m["rms"] * np.sqrt(2 * m["n_ap"] / beam_area) * to_mjy).astype(np.float32),
        "flux_iso": (m["flux_iso"] / beam_area * to_mjy).astype(np.float32),
        "maj_axis": (m["a"] * FWHM_PER_SIGMA * tile.pixel_scale).astype(np.float32),
        "min_axis": (m["b"] * FWHM_PER_SIGMA * tile.pixel_scale).astype(np.float32),
        "pos_ang": position_angle_east_of_north(tile.wcs, m["x"], m["y"], m["theta"]).astype(np.float32),
        "kron_radius": m["kron"].astype(np.float32),
        "rms_image": (m["rms"] * to_mjy).astype(np.float32),
        "snr": snr.astype(np.float32),
        "npix": m["npix"].astype(np.int32),
        "sep_flags": m["sep_flags"],
        "flags": m["flags"],
    })
