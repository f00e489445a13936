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
from scipy.spatial import cKDTree

from .columns import COMPONENTS
from .cutouts import core_edges, grid_starts
from .tileio import FWHM_PER_SIGMA

__all__ = [
    "ExtractSettings",
    "FLAG_NAN_APERTURE",
    "FLAG_STRIP_SEAM",
    "FLAG_SEP_LIMIT",
    "FLAG_RESIDUAL",
    "fit_gaussian",
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
FLAG_RESIDUAL = 8


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
    residual_pass : detect again after subtracting Gaussian fits of bright compact objects.
    residual_min_snr : S/N above which compact objects are fitted and subtracted.
    residual_fit_radius_beams : radius of the fitted region, in beam FWHM.
    residual_model_error : fraction of the subtracted model added to the residual threshold.
    """

    thresh_sigma: float = 5.0
    minarea: int = 5
    back_size: int = 128
    back_filter: int = 3
    subtract_background: bool = True
    deblend_nthresh: int = 32
    deblend_cont: float = 1e-4
    filter_kernel: str = "none"
    kron_factor: float = 2.5
    min_aperture_beams: float = 1.25
    strip_rows: int = 2048
    strip_overlap: int = 256
    residual_pass: bool = True
    residual_min_snr: float = 20.0
    residual_fit_radius_beams: float = 0.8
    residual_model_error: float = 0.02

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


def fit_gaussian(data, mask, x, y, radius, sigma_guess, companions=()):
    """
    Least-squares elliptical Gaussian around one position, optionally with point companions.

    Parameters
    ----------
    data : 2D ndarray, ``(ny, nx)``
        Background-subtracted image.
    mask : 2D bool ndarray
        True where pixels are blank.
    x, y : float
        Starting centre (0-based pixels).
    radius : float
        Pixels within this distance of ``(x, y)`` or of a companion are fitted (pixels).
    sigma_guess : float
        Starting sigma (pixels), e.g. the beam's.
    companions : sequence of (x, y)
        Starting centres of fainter sources fitted at the same time with the same shape
        (both are convolved with the same beam), so that they do not bias the main fit.

    Returns
    -------
    params : tuple ``(amplitude, xc, yc, cxx, cyy, cxy)`` or None
        Amplitude in the image unit, centre in pixels and the inverse-covariance coefficients
        of ``amplitude * exp(-(cxx dx^2 + cyy dy^2 + 2 cxy dx dy) / 2)``; None when the fit
        fails, wanders off, or has fewer pixels than parameters.
    companion_params : list of such tuples, one per companion.
    """
    from scipy.optimize import least_squares

    ny, nx = data.shape
    centres = [(x, y), *companions]
    cx, cy = np.array([c[0] for c in centres]), np.array([c[1] for c in centres])
    x0, x1 = max(0, int(np.floor(cx.min() - radius))), min(nx, int(np.ceil(cx.max() + radius)) + 1)
    y0, y1 = max(0, int(np.floor(cy.min() - radius))), min(ny, int(np.ceil(cy.max() + radius)) + 1)
    if x0 >= x1 or y0 >= y1:
        return None, []
    yy, xx = np.mgrid[y0:y1, x0:x1]
    near = np.zeros(xx.shape, dtype=bool)
    for px, py in centres:
        near |= (xx - px) ** 2 + (yy - py) ** 2 <= radius**2
    sel = near & ~mask[y0:y1, x0:x1]
    z, xs, ys = data[y0:y1, x0:x1][sel].astype(float), xx[sel].astype(float), yy[sel].astype(float)
    n_comp = len(companions)
    if z.size < 6 + 3 * n_comp + 6:
        return None, []

    def parts(p):
        """Per Gaussian: amplitude, u, v, exp(-Q/2), with Q the quadratic form."""
        sx, sy, r = np.exp(p[3]), np.exp(p[4]), np.tanh(p[5])
        for i in range(1 + n_comp):
            amp, xc, yc = p[0:3] if i == 0 else p[6 + 3 * (i - 1) : 9 + 3 * (i - 1)]
            u, v = (xs - xc) / sx, (ys - yc) / sy
            q = (u * u + v * v - 2 * r * u * v) / (1 - r * r)
            yield i, amp, u, v, q, np.exp(-0.5 * q), sx, sy, r

    def residual(p):
        out = -z
        for _, amp, _, _, _, e, *_ in parts(p):
            out = out + amp * e
        return out

    def jacobian(p):
        # analytic derivatives: least_squares would otherwise spend most of its time in
        # finite differences (one model evaluation per parameter per iteration)
        jac = np.zeros((z.size, p.size))
        for i, amp, u, v, q, e, sx, sy, r in parts(p):
            d = 1 - r * r
            a_e = amp * e
            cols = [0, 1, 2] if i == 0 else [6 + 3 * (i - 1), 7 + 3 * (i - 1), 8 + 3 * (i - 1)]
            jac[:, cols[0]] = e
            jac[:, cols[1]] = a_e * (u - r * v) / (d * sx)
            jac[:, cols[2]] = a_e * (v - r * u) / (d * sy)
            jac[:, 3] += a_e * (u * u - r * u * v) / d
            jac[:, 4] += a_e * (v * v - r * u * v) / d
            jac[:, 5] += a_e * (u * v - r * q)
        return jac

    ls = np.log(sigma_guess)
    start = [z.max(), x, y, ls, ls, 0.0]
    for px, py in companions:
        start += [0.1 * z.max(), px, py]
    fit = least_squares(residual, np.asarray(start, dtype=float), jac=jacobian, method="lm",
                        xtol=1e-6, ftol=1e-6, max_nfev=200 * (1 + n_comp))
    if not fit.success:
        return None, []
    p = fit.x
    sx, sy, r = np.exp(p[3]), np.exp(p[4]), np.tanh(p[5])
    if not (0.5 < sx / sigma_guess < 3 and 0.5 < sy / sigma_guess < 3):
        return None, []
    d = 1 - r * r
    shape = (1 / (sx * sx * d), 1 / (sy * sy * d), -r / (sx * sy * d))
    pieces = [tuple(p[0:3])] + [tuple(p[6 + 3 * i : 9 + 3 * i]) for i in range(n_comp)]
    for (amp, xc, yc), (px, py) in zip(pieces, centres):
        if amp <= 0 or np.hypot(xc - px, yc - py) > radius:
            return None, []
    params = [(*piece, *shape) for piece in pieces]
    return params[0], params[1:]


def _render_gaussians(shape, params, nsigma=6.0, out=None):
    """Image of a sum of fitted Gaussians (`fit_gaussian` parameters), ``shape`` = ``(ny, nx)``;
    written into ``out`` (float32, overwritten) when given."""
    model = np.zeros(shape, dtype=np.float32) if out is None else out
    model[...] = 0
    ny, nx = shape
    for amp, xc, yc, cxx, cyy, cxy in params:
        det = cxx * cyy - cxy * cxy
        hx, hy = nsigma * np.sqrt(cyy / det), nsigma * np.sqrt(cxx / det)  # half extents
        x0, x1 = max(0, int(xc - hx)), min(nx, int(xc + hx) + 2)
        y0, y1 = max(0, int(yc - hy)), min(ny, int(yc + hy) + 2)
        if x0 >= x1 or y0 >= y1:
            continue
        dy, dx = np.mgrid[y0:y1, x0:x1]
        dx, dy = dx - xc, dy - yc
        model[y0:y1, x0:x1] += amp * np.exp(-0.5 * (cxx * dx * dx + cyy * dy * dy + 2 * cxy * dx * dy))
    return model


def _residual_objects(data, mask, rms, objects, segmap, beam_sigma, settings):
    """
    Second detection pass on the image minus Gaussian fits of the bright compact objects.

    A faint source within about one beam of a source tens of times brighter shows no peak of
    its own, so SEP cannot deblend it; once the bright source is subtracted it stands out.
    The threshold is raised by ``residual_model_error`` times the subtracted model, so model
    imperfections around bright sources are not taken for sources; objects SEP left
    unmodelled (faint or extended) are masked; new objects closer than half a beam to an
    existing one are dropped.

    Returns
    -------
    objects2 : structured ndarray (SEP objects measured on the residual)
    residual : 2D float32 ndarray
    """
    snr = objects["peak"] / np.maximum(rms[np.clip(objects["ycpeak"], 0, rms.shape[0] - 1),
                                           np.clip(objects["xcpeak"], 0, rms.shape[1] - 1)], 1e-30)
    size = np.sqrt(objects["a"] * objects["b"])
    candidates = np.flatnonzero((snr >= settings.residual_min_snr) & (size < 2.5 * beam_sigma))
    radius = settings.residual_fit_radius_beams * beam_sigma * FWHM_PER_SIGMA
    params, modelled = [], np.zeros(len(objects) + 1, dtype=bool)
    for k in candidates:
        p, _ = fit_gaussian(data, mask, objects["x"][k], objects["y"][k], radius, beam_sigma)
        if p is not None:
            params.append(p)
            modelled[k + 1] = True
    empty = np.zeros(0, dtype=objects.dtype)
    if not params:
        return empty, None
    # memory: one strip-sized float32 array each for the residual and the error map (built in
    # the model's buffer), one bool for the mask
    model = _render_gaussians(data.shape, params)
    residual = data - model
    err = model
    np.abs(err, out=err)
    err *= settings.residual_model_error / settings.thresh_sigma
    err += rms
    search_mask = (segmap > 0) & ~modelled[segmap]  # objects left unmodelled are not searched again
    search_mask |= mask
    objects2 = sep.extract(residual, settings.thresh_sigma, err=err, mask=search_mask,
                           minarea=settings.minarea, filter_kernel=_sep_filter(settings),
                           deblend_nthresh=settings.deblend_nthresh, deblend_cont=settings.deblend_cont)
    del err, search_mask
    if len(objects2) == 0:
        return empty, residual
    fwhm = beam_sigma * FWHM_PER_SIGMA
    dist, _ = cKDTree(np.column_stack([objects["x"], objects["y"]])).query(
        np.column_stack([objects2["x"], objects2["y"]]))
    objects2 = objects2[dist > 0.5 * fwhm].copy()
    if len(objects2) == 0:
        return objects2, residual
    # refit each bright source together with the faint ones found beside it: the single fit
    # leaned towards them, which biased their residual positions and fluxes
    centres = np.array([p[1:3] for p in params])
    _, nearest = cKDTree(centres).query(np.column_stack([objects2["x"], objects2["y"]]))
    for j in np.unique(nearest):
        mine = np.flatnonzero(nearest == j)
        if np.hypot(*(centres[j] - [objects2["x"][mine].mean(), objects2["y"][mine].mean()])) > 2 * fwhm:
            continue
        main, comps = fit_gaussian(data, mask, *centres[j], radius, beam_sigma,
                                   companions=list(zip(objects2["x"][mine], objects2["y"][mine])))
        if main is not None:
            params[j] = main
            objects2["x"][mine] = [c[1] for c in comps]
            objects2["y"][mine] = [c[2] for c in comps]
    residual = _render_gaussians(data.shape, params, out=residual)
    np.subtract(data, residual, out=residual)
    return objects2, residual


def _measure(data, mask, rms, obj, beam_sigma, settings):
    """Positions, fluxes, shapes and flags of SEP objects measured on ``data``."""
    x, y, a, b = obj["x"], obj["y"], obj["a"], obj["b"]
    # SEP returns theta in float32: pi/2 rounds to 1.5707963705, which its own aperture
    # functions then reject ("invalid aperture parameters"); clip to their [-pi/2, pi/2]
    theta = np.clip(obj["theta"].astype(np.float64), -np.pi / 2, np.pi / 2)
    xw, yw, wflag = sep.winpos(data, x, y, np.full(len(obj), beam_sigma), mask=mask)
    # a converged windowed centroid is kept while it stays on the object (a bright hot spot at
    # the end of a lopsided lobe is legitimately far from the isophotal centre)
    inside = (xw >= obj["xmin"] - 0.5) & (xw <= obj["xmax"] + 0.5) & (yw >= obj["ymin"] - 0.5) & (yw <= obj["ymax"] + 0.5)
    bad_win = (wflag != 0) | ~np.isfinite(xw) | ~inside
    xw, yw = np.where(bad_win, x, xw), np.where(bad_win, y, yw)

    kron, _ = sep.kron_radius(data, x, y, a, b, theta, 6.0, mask=mask)
    kron = np.where(np.isfinite(kron) & (kron > 0), kron, 0.0)
    r_min = settings.min_aperture_beams * beam_sigma * FWHM_PER_SIGMA
    a_ap = np.maximum(settings.kron_factor * kron * a, r_min)
    b_ap = np.maximum(settings.kron_factor * kron * b, r_min)
    flux_sum, _, fflag = sep.sum_ellipse(data, xw, yw, a_ap, b_ap, theta, 1.0, mask=mask, subpix=1)
    yi = np.clip(np.round(yw).astype(int), 0, data.shape[0] - 1)
    xi = np.clip(np.round(xw).astype(int), 0, data.shape[1] - 1)
    size_factor = isophote_size_correction(obj["thresh"] / np.maximum(obj["peak"], 1e-30))
    flags = np.where((fflag & sep.APER_HASMASKED) != 0, FLAG_NAN_APERTURE, 0).astype(np.int32)
    return dict(
        x=xw, y=yw, peak=obj["peak"], flux_sum=flux_sum, flux_iso=obj["flux"], n_ap=np.pi * a_ap * b_ap,
        a=a * size_factor, b=b * size_factor, theta=theta, kron=kron, rms=rms[yi, xi],
        sep_flags=obj["flag"].astype(np.int32), flags=flags,
        touches_top=obj["ymin"] <= 0, touches_bottom=obj["ymax"] >= data.shape[0] - 1,
    )


def _measure_strip(tile, r0, r1, own0, own1, settings):
    """SEP on rows [r0, r1) of a tile; measurements of the objects centred in [own0, own1)."""
    data = tile.read_rows(r0, r1)
    mask = ~np.isfinite(data)
    data[mask] = 0.0
    objects, rms, segmap, limit_raised = detect_objects(data, mask, settings, segmentation=True)
    beam_sigma = np.sqrt(tile.bmaj * tile.bmin) / tile.pixel_scale / FWHM_PER_SIGMA

    # islands: connected groups of detected pixels; objects deblended from one island share it
    islands, _ = ndimage.label(segmap > 0, structure=np.ones((3, 3), dtype=bool))
    detected = segmap > 0
    obj_island = np.zeros(len(objects) + 1, dtype=np.int64)
    obj_island[segmap[detected]] = islands[detected]  # all pixels of an object lie in one island
    npix = np.bincount(segmap[detected], minlength=len(objects) + 1)[1:]
    del detected

    m = _measure(data, mask, rms, objects, beam_sigma, settings)
    m["npix"], m["island"] = npix, obj_island[1:]
    if settings.residual_pass and len(objects):
        objects2, residual = _residual_objects(data, mask, rms, objects, segmap, beam_sigma, settings)
        if len(objects2):
            m2 = _measure(residual, mask, rms, objects2, beam_sigma, settings)
            m2["flags"] |= FLAG_RESIDUAL
            m2["npix"] = objects2["npix"].astype(np.int64)
            yi = np.clip(np.round(m2["y"]).astype(int), 0, data.shape[0] - 1)
            xi = np.clip(np.round(m2["x"]).astype(int), 0, data.shape[1] - 1)
            m2["island"] = islands[yi, xi]  # the island of the source it hid behind
            log.info("residual pass: %d objects found next to %d bright ones", len(objects2), len(objects))
            m = {k: np.concatenate([m[k], m2[k]]) for k in m}
        del residual
    del islands, segmap

    own = np.floor(m["y"] + r0 + 0.5)
    keep = (own >= own0) & (own < own1)
    m = {k: v[keep] for k, v in m.items()}
    seam = np.zeros(keep.sum(), dtype=bool)
    if r0 > 0:
        seam |= m["touches_top"]
    if r1 < tile.shape[0]:
        seam |= m["touches_bottom"]
    m["flags"] = m["flags"] | np.where(seam, FLAG_STRIP_SEAM, 0).astype(np.int32)
    if limit_raised:
        m["flags"] |= FLAG_SEP_LIMIT
    del m["touches_top"], m["touches_bottom"]
    m["y"] = m["y"] + r0
    m["strip"] = np.full(keep.sum(), r0)
    return m


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
