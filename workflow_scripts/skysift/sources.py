"""
Physical radio sources from detections and SEP components (the merge of a tile's catalogue).

1. Detections come per cutout; cutouts overlap. Each detection is kept only by the cutout
   that owns its box centre (`skysift.cutouts`: the owned cores tile the image), then a
   non-maximum suppression across cutouts removes what is left twice: two detections from
   different cutouts are the same source when their masks agree on the sky both cutouts see
   (intersection over union of the masks within the shared area >= the threshold; a compact
   source on a lobe of another is therefore not merged with it).
   Complete masks win over masks cut by a cutout edge, then the higher score; the winner
   absorbs the pixels of each suppressed mask that lie outside its own cutout (sky it could not
   see), so a source larger than a cutout core, or a double whose lobe falls off one cutout,
   is neither split nor cut.
2. Each SEP component whose position lies in a detection mask joins that source; a component
   inside several masks joins the highest-scoring one. Detections below ``min_score`` form no
   source. Components left over become single-component sources.
3. Source quantities: flux-weighted centroid of the components (the mask centroid when there
   is none), summed and peak fluxes, largest angular size of the mask, and the infrared host:
   the maximum of the infrared weighted by the source mask (Gupta et al. 2023, Sect. 3.2.3),
   found at inference from the soft mask (`ir_host`).

Flags (OR-ed with the components' flags, which use bits 1-8): `FLAG_LOW_SCORE` (the detector's
probability is below ``flag_score``, CLARAN's P < 0.8: kept, flagged), `FLAG_NAN` (the mask
touches blanked pixels), `FLAG_CUT` (the mask is cut by a cutout edge and no neighbour
completed it), `FLAG_NO_COMPONENT` (a detection without SEP component).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.spatial import cKDTree

from .masks import decode_mask, encode_mask

__all__ = [
    "EDGE_LEFT",
    "EDGE_RIGHT",
    "EDGE_BOTTOM",
    "EDGE_TOP",
    "FLAG_LOW_SCORE",
    "FLAG_NAN",
    "FLAG_CUT",
    "FLAG_NO_COMPONENT",
    "edge_contacts",
    "ir_background",
    "ir_host",
    "ir_matched_filter",
    "read_detections",
    "select_detections",
    "associate_components",
    "sources_from_detections",
    "undetected_source_columns",
]

log = logging.getLogger(__name__)

EDGE_LEFT, EDGE_RIGHT, EDGE_BOTTOM, EDGE_TOP = 1, 2, 4, 8
FLAG_LOW_SCORE = 16
FLAG_NAN = 32
FLAG_CUT = 64
FLAG_NO_COMPONENT = 128
HOST_MIN_SNR = 3.0
HOST_CLIP_SNR = 10.0
HOST_PEAK_SEPARATION = 3  # pixels between distinct host candidates


# --------------------------------------------------------------------------- infrared host


def edge_contacts(mask, origin=(0, 0), shape=None):
    """
    Bit mask of the cutout edges a boolean mask touches (`EDGE_LEFT`, ...).

    ``mask`` is the whole ``(ny, nx)`` cutout, or a crop of it whose first pixel is cutout pixel
    ``origin`` ``(y0, x0)`` in a cutout of ``shape`` ``(ny, nx)``.
    """
    (y0, x0), (ny, nx) = origin, shape or mask.shape
    y1, x1 = y0 + mask.shape[0], x0 + mask.shape[1]
    return ((EDGE_LEFT if x0 == 0 and mask[:, 0].any() else 0) | (EDGE_RIGHT if x1 == nx and mask[:, -1].any() else 0)
            | (EDGE_BOTTOM if y0 == 0 and mask[0].any() else 0) | (EDGE_TOP if y1 == ny and mask[-1].any() else 0))


def ir_background(ir):
    """Median and MAD-clipped rms of an infrared cutout (NaN, NaN without valid pixel)."""
    from .noise import clipped_rms

    ir = np.asarray(ir, dtype=np.float32)
    finite = np.isfinite(ir)
    if not finite.any():
        return np.nan, np.nan
    return float(np.median(ir[finite])), clipped_rms(ir[::2, ::2])


def ir_matched_filter(ir, psf_sigma):
    """
    Infrared cutout smoothed by its point-spread function: the matched filter for point-like hosts.

    A host galaxy of WISE W1 is a PSF-sized blob (6.1 arcsec FWHM, 3 cutout pixels at 2 arcsec):
    convolving with the PSF sums its pixels with the weights that maximise its S/N (by
    ``sqrt(4 pi sigma^2)``, ~4.5 at 1.3 px, for white noise), so hosts too faint for any single
    pixel to reach `HOST_MIN_SNR` are still found. `ir_background` of the result gives the
    smoothed noise that `ir_host` then counts significance in.

    Parameters
    ----------
    ir : 2D ndarray, ``(ny, nx)``
        Infrared on the cutout grid, NaN outside its coverage.
    psf_sigma : float
        Gaussian sigma of the infrared PSF on this grid (pixels); 0 returns ``ir`` unchanged.

    Returns
    -------
    2D float32 ndarray, ``(ny, nx)``: NaN where ``ir`` is NaN (they are filled with the median
    for the convolution, so a coverage edge adds no signal).
    """
    ir = np.asarray(ir, dtype=np.float32)
    if not psf_sigma > 0:
        return ir
    finite = np.isfinite(ir)
    if not finite.any():
        return ir
    filled = np.where(finite, ir, np.median(ir[finite]))
    out = ndimage.gaussian_filter(filled, psf_sigma, mode="nearest").astype(np.float32)
    out[~finite] = np.nan
    return out


def ir_host(ir, soft, binary, *, background=None, radio=None, beam_sigma=None, min_prior_sigma=1.0):
    """
    Infrared host of one detection: the maximum of the infrared weighted by the source mask.

    Following Gupta et al. (2023, Sect. 3.2.3), where an attention map of the radio source
    weights the infrared, the weight here is the detector's soft mask (at least 1/2 over the
    ellipse of the binary mask's second moments at 2 sigma, so a host between the two lobes of
    a core-less double can be chosen) times a Gaussian prior centred on the radio centroid of
    the mask (flux-weighted when ``radio`` is given). Its sigma is, given ``radio`` and
    ``beam_sigma``, half the source's deconvolved size (the square root of the largest
    eigenvalue of the flux-weighted second moments less ``beam_sigma``²), at least
    ``min_prior_sigma``: an unresolved source's host lies at its radio position, however far
    its 3-sigma mask reaches, so a brighter neighbour inside the mask does not win; the lobes
    of a double lie at 2 sigma. Otherwise it is a quarter of the mask's extent (at least 2
    pixels). The infrared enters as its significance, counted from `HOST_MIN_SNR` and
    clipped at `HOST_CLIP_SNR`: every clearly detected object counts the same, and the weight
    decides which one hosts the source (a bright star at the edge of a large mask does not beat
    a faint galaxy at its centre). The clip makes a bright object a plateau, so the position is
    then refined within ``HOST_PEAK_SEPARATION`` pixels of the winner, on the unclipped
    significance times the weight and the prior once more.

    Pass the infrared through `ir_matched_filter` first (``infer_shard`` does, with the PSF of
    ``detection.host_ir_psf_fwhm``) to find hosts fainter than a pixel's noise.

    Parameters
    ----------
    ir : 2D ndarray, ``(ny, nx)``
        Infrared on the cutout grid (any unit), NaN outside its coverage.
    soft : 2D ndarray, same shape
        Soft mask of the detection, in [0, 1].
    binary : 2D bool ndarray, same shape
        Binary mask of the detection.
    background : tuple of float, optional
        `ir_background` of the cutout (computed when omitted; pass it for many detections).
    radio : 2D ndarray, same shape, optional
        The radio cutout, for the flux-weighted centroid and size.
    beam_sigma : float, optional
        Gaussian sigma of the radio beam's major axis (pixels; `skysift.tileio.gaussian_sigma_pixels`).
    min_prior_sigma : float
        Smallest sigma of the prior (pixels): the positional uncertainty of a host (the IR PSF's
        sigma is the natural choice).

    Returns
    -------
    x, y : float
        Cutout pixel of the host (intensity-weighted over its 3x3 neighbourhood); NaN when no
        pixel of the weighted region reaches ``HOST_MIN_SNR`` times the infrared noise.
    score : float
        ``p1 / (p1 + p2)`` of the highest weighted peak ``p1`` and the next one at least
        ``HOST_PEAK_SEPARATION`` pixels away (``p2 = 0``: 1.0); NaN without host.
    """
    ir = np.asarray(ir, dtype=np.float32)
    med, sigma = ir_background(ir) if background is None else background
    if not (np.isfinite(sigma) and sigma > 0) or not binary.any():
        return np.nan, np.nan, np.nan
    ys, xs = np.nonzero(binary)
    w_rad = np.ones(len(xs))
    if radio is not None:
        w_rad = np.nan_to_num(np.clip(np.asarray(radio, dtype=float)[ys, xs], 0, None))
        if w_rad.sum() <= 0:
            w_rad = np.ones(len(xs))
    cx, cy = np.average(xs, weights=w_rad), np.average(ys, weights=w_rad)
    extent = max(xs.max() - xs.min(), ys.max() - ys.min()) + 1
    pad = int(np.ceil(0.25 * extent)) + 2
    by0, by1 = max(ys.min() - pad, 0), min(ys.max() + pad + 1, ir.shape[0])
    bx0, bx1 = max(xs.min() - pad, 0), min(xs.max() + pad + 1, ir.shape[1])
    gy, gx = np.mgrid[by0:by1, bx0:bx1]
    # ellipse of the mask's second moments (2 sigma): covers the gap between two lobes
    mx, my = xs.mean(), ys.mean()
    cov = np.cov(np.vstack([xs - mx, ys - my])) + np.eye(2) * 0.25 if len(xs) > 1 else np.eye(2)
    inv = np.linalg.inv(cov)
    dx, dy = gx - mx, gy - my
    inside = inv[0, 0] * dx * dx + 2 * inv[0, 1] * dx * dy + inv[1, 1] * dy * dy <= 4.0
    s = max(2.0, 0.25 * extent)
    if radio is not None and beam_sigma is not None:
        d = np.vstack([xs - cx, ys - cy])
        c = (d * w_rad) @ d.T / w_rad.sum()  # flux-weighted second moments (px^2)
        size = np.sqrt(max(float(np.linalg.eigvalsh(c).max()) - float(beam_sigma) ** 2, 0.0))
        s = max(float(min_prior_sigma), 0.5 * size)
    prior = np.exp(-((gx - cx) ** 2 + (gy - cy) ** 2) / (2 * s * s))
    weight = np.maximum(np.asarray(soft[by0:by1, bx0:bx1], dtype=np.float32), 0.5 * inside) * prior
    sub = ir[by0:by1, bx0:bx1]
    signal = np.where(np.isfinite(sub), (sub - med) / sigma, 0.0)
    w = np.where(signal >= HOST_MIN_SNR, np.minimum(signal, HOST_CLIP_SNR), 0.0) * weight  # candidates only
    j = int(np.argmax(w))
    y, x = divmod(j, w.shape[1])
    if w[y, x] <= 0:
        return np.nan, np.nan, np.nan
    p1 = float(w[y, x])
    peaks = (w == ndimage.maximum_filter(w, size=2 * HOST_PEAK_SEPARATION + 1)) & (w > 0)
    yy, xx = np.nonzero(peaks)
    far = (xx - x) ** 2 + (yy - y) ** 2 > HOST_PEAK_SEPARATION**2
    p2 = float(w[yy[far], xx[far]].max()) if far.any() else 0.0
    # the clip makes a bright object a plateau, whose weighted maximum is the plateau pixel nearest
    # the radio centroid. Near the winner, the host is the maximum of the unclipped significance
    # times the weight and the prior once more: the peak of an isolated object, and for objects
    # the PSF blends, the one nearest the radio centroid.
    near = (gx - bx0 - x) ** 2 + (gy - by0 - y) ** 2 <= HOST_PEAK_SEPARATION**2
    y, x = divmod(int(np.argmax(np.where(near, np.maximum(signal, 0.0) * weight * prior, -1.0))), w.shape[1])
    y0, y1, x0, x1 = max(y - 1, 0), min(y + 2, w.shape[0]), max(x - 1, 0), min(x + 2, w.shape[1])
    patch = np.maximum(signal[y0:y1, x0:x1], 0)
    py, px = np.mgrid[y0:y1, x0:x1]
    total = patch.sum()
    return (float((px * patch).sum() / total) + bx0, float((py * patch).sum() / total) + by0, p1 / (p1 + p2))


# --------------------------------------------------------------------------- detections


def read_detections(paths):
    """
    The detections of every shard of a tile, the tile's WCS and the inference metadata.

    Parameters
    ----------
    paths : list of str
        infer_shard outputs (`skysift.columns.DETECTIONS`) of one tile.

    Returns
    -------
    detections : pandas.DataFrame
    wcs : `~astropy.wcs.WCS`
        Celestial WCS of the tile (from the ``wcs_header`` file metadata).
    meta : dict of str
        File metadata of the first shard (``model_id``, ``categories``, ``fusion``, ``device``).
    """
    import warnings

    import pyarrow.parquet as pq
    from astropy.io import fits
    from astropy.wcs import WCS, FITSFixedWarning

    tables = [pq.read_table(p) for p in paths]
    meta = {k.decode(): v.decode() for k, v in (tables[0].schema.metadata or {}).items()}
    ids = {(t.schema.metadata or {}).get(b"model_id") for t in tables}
    if len(ids) > 1:
        raise ValueError(f"detections of one tile come from different models {sorted(map(str, ids))}: {list(paths)}")
    frames = [t.to_pandas() for t in tables if t.num_rows]
    detections = pd.concat(frames, ignore_index=True) if frames else tables[0].to_pandas()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(fits.Header.fromstring(meta["wcs_header"]))
    return detections, wcs, meta


def _truncated(det, cut, nx, ny):
    """True where a mask touches an edge of its cutout that is not the tile's edge."""
    e = det["edges"].to_numpy(int)
    return (((e & EDGE_LEFT) > 0) & (cut.x_min.to_numpy() > 0)) | (((e & EDGE_RIGHT) > 0) & (cut.x_max.to_numpy() < nx)) \
        | (((e & EDGE_BOTTOM) > 0) & (cut.y_min.to_numpy() > 0)) | (((e & EDGE_TOP) > 0) & (cut.y_max.to_numpy() < ny))


def _overlap_on_shared_sky(a, b, shared):
    """IoU of two masks within the shared rectangle ``(x0, x1, y0, y1)`` (0 when it is empty)."""
    (ax, ay, am), (bx, by, bm) = a, b
    sx0, sx1, sy0, sy1 = shared

    def clip(x, y, m):
        out = np.zeros((sy1 - sy0, sx1 - sx0), dtype=bool)
        xs, xe = max(x, sx0), min(x + m.shape[1], sx1)
        ys, ye = max(y, sy0), min(y + m.shape[0], sy1)
        if xs < xe and ys < ye:
            out[ys - sy0 : ye - sy0, xs - sx0 : xe - sx0] = m[ys - y : ye - y, xs - x : xe - x]
        return out

    if sx0 >= sx1 or sy0 >= sy1:
        return 0.0
    ca, cb = clip(ax, ay, am), clip(bx, by, bm)
    union = (ca | cb).sum()
    return float((ca & cb).sum() / union) if union else 0.0


def _absorb(a, b, rect):
    """Mask ``a`` plus the pixels of mask ``b`` outside rectangle ``rect`` (what ``a`` could not see)."""
    (ax, ay, am), (bx, by, bm) = a, b
    rx0, rx1, ry0, ry1 = rect
    x0, y0 = min(ax, bx), min(ay, by)
    x1, y1 = max(ax + am.shape[1], bx + bm.shape[1]), max(ay + am.shape[0], by + bm.shape[0])
    out = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    extra = bm.copy()
    gy, gx = np.mgrid[by : by + bm.shape[0], bx : bx + bm.shape[1]]
    extra &= ~((gx >= rx0) & (gx < rx1) & (gy >= ry0) & (gy < ry1))
    out[by - y0 : by - y0 + bm.shape[0], bx - x0 : bx - x0 + bm.shape[1]] |= extra
    out[ay - y0 : ay - y0 + am.shape[0], ax - x0 : ax - x0 + am.shape[1]] |= am
    ys, xs = np.nonzero(out)
    return x0 + int(xs.min()), y0 + int(ys.min()), out[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def _cut_by_view(mask, rects, nx, ny):
    """True when the mask touches the edge of the sky its cutouts saw, away from the tile edge."""
    x0, y0, m = mask
    seen = np.zeros((m.shape[0] + 2, m.shape[1] + 2), dtype=bool)
    for rx0, rx1, ry0, ry1 in rects:
        xs, xe = max(rx0 - (x0 - 1), 0), max(min(rx1 - (x0 - 1), seen.shape[1]), 0)
        ys, ye = max(ry0 - (y0 - 1), 0), max(min(ry1 - (y0 - 1), seen.shape[0]), 0)
        seen[ys:ye, xs:xe] = True
    gy, gx = np.mgrid[y0 - 1 : y0 + m.shape[0] + 1, x0 - 1 : x0 + m.shape[1] + 1]
    seen |= (gx < 0) | (gx >= nx) | (gy < 0) | (gy >= ny)  # beyond the tile is no cut
    grown = ndimage.binary_dilation(np.pad(m, 1), structure=ndimage.generate_binary_structure(2, 1))
    return bool((grown & ~seen).any())


def select_detections(detections, cutouts, *, overlap_threshold=0.5):
    """
    One detection per source: ownership of the box centre, then NMS across cutouts.

    Parameters
    ----------
    detections : pandas.DataFrame
        `skysift.columns.DETECTIONS` rows of one tile (all shards).
    cutouts : pandas.DataFrame
        `skysift.columns.CUTOUTS` rows of the tile (geometry and owned cores).
    overlap_threshold : float
        Two detections from different cutouts whose masks have at least this IoU on the sky
        both cutouts cover are the same source.

    Returns
    -------
    kept : pandas.DataFrame
        The kept detections (index reset), by decreasing score, with ``cut`` (bool: the mask is
        still cut by a cutout edge) and ``n_merged`` (detections absorbed).
    masks : list of (x0, y0, 2D bool ndarray)
        Tile pixel origin and mask of each kept detection (merged with what it absorbed).
    """
    if len(detections) == 0:
        return detections.assign(cut=pd.Series(dtype=bool), n_merged=pd.Series(dtype=int)), []
    det = detections.reset_index(drop=True)
    cut = cutouts.set_index("cutout_id").loc[det["cutout_id"]].reset_index()
    nx, ny = int(cutouts.x_max.max()), int(cutouts.y_max.max())
    cx = np.floor(0.5 * (det.tile_box_x_min.to_numpy(float) + det.tile_box_x_max.to_numpy(float)))
    cy = np.floor(0.5 * (det.tile_box_y_min.to_numpy(float) + det.tile_box_y_max.to_numpy(float)))
    owned = ((cx >= cut.core_x_min) & (cx < cut.core_x_max) & (cy >= cut.core_y_min) & (cy < cut.core_y_max)).to_numpy()
    truncated = _truncated(det, cut, nx, ny)
    det, cut, truncated = det[owned].reset_index(drop=True), cut[owned].reset_index(drop=True), truncated[owned]
    n = len(det)
    masks = [(int(x), int(y), decode_mask(r)) for x, y, r in zip(det.mask_x_min, det.mask_y_min, det.mask_rle)]
    order = np.lexsort((det.detection_id.to_numpy(), -det.score.to_numpy(float), truncated))
    centre = np.column_stack([cx[owned], cy[owned]])
    half = 0.5 * np.hypot(det.tile_box_x_max - det.tile_box_x_min, det.tile_box_y_max - det.tile_box_y_min).to_numpy()
    pairs = cKDTree(centre).query_pairs(2 * float(half.max()) + 1.0, output_type="ndarray") if n > 1 else \
        np.zeros((0, 2), dtype=int)
    partners = [[] for _ in range(n)]
    for i, j in pairs:
        if det.cutout_id[i] != det.cutout_id[j]:
            partners[i].append(j)
            partners[j].append(i)
    suppressed = np.zeros(n, dtype=bool)
    n_merged = np.zeros(n, dtype=int)
    rect = [(cut.x_min[i], cut.x_max[i], cut.y_min[i], cut.y_max[i]) for i in range(n)]
    views = [[rect[i]] for i in range(n)]
    kept, is_kept = [], np.zeros(n, dtype=bool)
    for i in order:
        if suppressed[i]:
            continue
        kept.append(i)
        is_kept[i] = True
        for j in partners[i]:
            if suppressed[j] or is_kept[j]:
                continue
            shared = (max(rect[i][0], rect[j][0]), min(rect[i][1], rect[j][1]),
                      max(rect[i][2], rect[j][2]), min(rect[i][3], rect[j][3]))
            if _overlap_on_shared_sky(masks[i], masks[j], shared) >= overlap_threshold:
                suppressed[j] = True
                n_merged[i] += 1
                masks[i] = _absorb(masks[i], masks[j], rect[i])  # what only the other cutout saw
                views[i].append(rect[j])
    kept = np.array(kept, dtype=int)
    kept = kept[np.lexsort((det.detection_id.to_numpy()[kept], -det.score.to_numpy(float)[kept]))]
    cut_left = np.array([_cut_by_view(masks[k], views[k], nx, ny) for k in kept], dtype=bool)
    log.info("%d detections: %d owned by their cutout, %d kept after NMS across cutouts", len(detections), n, len(kept))
    out = det.iloc[kept].reset_index(drop=True).assign(cut=cut_left, n_merged=n_merged[kept])
    for row, k in enumerate(kept):  # a mask that absorbed sky its cutout missed: box = mask's box
        if n_merged[k]:
            x0, y0, m = masks[k]
            out.loc[row, ["tile_box_x_min", "tile_box_y_min"]] = (min(out.tile_box_x_min[row], x0),
                                                                  min(out.tile_box_y_min[row], y0))
            out.loc[row, ["tile_box_x_max", "tile_box_y_max"]] = (max(out.tile_box_x_max[row], x0 + m.shape[1]),
                                                                  max(out.tile_box_y_max[row], y0 + m.shape[0]))
    return out, [masks[k] for k in kept]


def associate_components(components, kept, masks, *, min_score=0.5):
    """
    The detection each SEP component joins.

    Parameters
    ----------
    components : pandas.DataFrame
        `skysift.columns.COMPONENTS` rows (``x``, ``y`` tile pixels).
    kept : pandas.DataFrame
        Output of `select_detections` (``score``).
    masks : list of (x0, y0, mask)
    min_score : float
        Detections scoring below this claim no component.

    Returns
    -------
    1D int ndarray, one per component: index into ``kept``, -1 for none. A component inside
    several masks joins the highest-scoring detection.
    """
    owner = np.full(len(components), -1, dtype=np.int64)
    if len(components) == 0 or len(kept) == 0:
        return owner
    xi = np.floor(components.x.to_numpy(float) + 0.5).astype(np.int64)
    yi = np.floor(components.y.to_numpy(float) + 0.5).astype(np.int64)
    by_x = np.argsort(xi, kind="stable")
    xs = xi[by_x]
    for k in np.argsort(-kept.score.to_numpy(float), kind="stable"):
        if kept.score.iloc[k] < min_score:
            break
        x0, y0, m = masks[k]
        lo, hi = np.searchsorted(xs, x0), np.searchsorted(xs, x0 + m.shape[1])
        cand = by_x[lo:hi]
        cand = cand[(owner[cand] < 0) & (yi[cand] >= y0) & (yi[cand] < y0 + m.shape[0])]
        if cand.size:
            inside = m[yi[cand] - y0, xi[cand] - x0]
            owner[cand[inside]] = k
    return owner


# --------------------------------------------------------------------------- sources


def undetected_source_columns(n):
    """Values of the detection columns of `skysift.columns.SOURCES` for ``n`` lone components."""
    nan32 = np.full(n, np.nan, dtype=np.float32)
    none = np.full(n, None, dtype=object)
    return {
        "origin": np.full(n, "component", dtype=object), "n_islands": np.ones(n, dtype=np.int32),
        "n_peaks": np.ones(n, dtype=np.int32), "morph_class": none, "morph_score": nan32,
        "morph_probs": [None] * n, "las": nan32, "host_ra": np.full(n, np.nan), "host_dec": np.full(n, np.nan),
        "host_score": nan32, "bbox_x_min": np.full(n, None, dtype=object), "bbox_y_min": none.copy(),
        "bbox_x_max": none.copy(), "bbox_y_max": none.copy(), "mask_rle": none.copy(), "model_id": none.copy(),
    }


def _pixel_to_icrs(wcs, x, y):
    x, y = np.atleast_1d(np.asarray(x, float)), np.atleast_1d(np.asarray(y, float))
    if x.size == 0:
        return np.zeros(0), np.zeros(0)
    sky = wcs.pixel_to_world(x, y)
    icrs = sky.icrs
    return icrs.ra.deg, icrs.dec.deg


def sources_from_detections(components, detections, cutouts, wcs, tile_id, *, min_score=0.5, flag_score=0.8,
                            overlap_threshold=0.5, model_id=None):
    """
    The sources of one tile: detections that own SEP components, and lone components.

    Parameters
    ----------
    components : pandas.DataFrame
        `skysift.columns.COMPONENTS` rows of the tile.
    detections : pandas.DataFrame
        `skysift.columns.DETECTIONS` rows of the tile (every shard).
    cutouts : pandas.DataFrame
        `skysift.columns.CUTOUTS` rows of the tile.
    wcs : `~astropy.wcs.WCS`
        Celestial WCS of the tile (0-based pixels).
    tile_id : str
    min_score : float
        Detections below this probability form no source.
    flag_score : float
        Sources from detections below this probability get `FLAG_LOW_SCORE`.
    overlap_threshold : float
        See `select_detections`.
    model_id : str, optional
        Id of the detector model, stored per detected source.

    Returns
    -------
    sources : pandas.DataFrame
        `skysift.columns.SOURCES` columns, sorted by (y, x) of the position.
    source_id : ndarray of str
        The source of each component, in component order.
    """
    from .extract import iau_names
    from .simulate import largest_extent
    from .tileio import pixel_scale_arcsec

    kept, masks = select_detections(detections, cutouts, overlap_threshold=overlap_threshold)
    owner = associate_components(components, kept, masks, min_score=min_score)
    pixel_arcsec = pixel_scale_arcsec(wcs)
    comp = components.reset_index(drop=True)
    rows = []
    for k, det in enumerate(kept.itertuples(index=False)):
        if det.score < min_score:
            continue
        x0, y0, m = masks[k]
        mine = comp[owner == k]
        w = np.clip(mine.flux_int.to_numpy(float), 0, None) if len(mine) else np.zeros(0)
        if len(mine) and np.nansum(w) > 0:
            w = np.nan_to_num(w)
            x, y = float(np.sum(w * mine.x) / w.sum()), float(np.sum(w * mine.y) / w.sum())
        else:
            ys, xs = np.nonzero(m)
            x, y = float(xs.mean() + x0), float(ys.mean() + y0)
        ys, xs = np.nonzero(m)
        flags = int(np.bitwise_or.reduce(mine["flags"].to_numpy(int))) if len(mine) else FLAG_NO_COMPONENT
        flags |= (FLAG_LOW_SCORE if det.score < flag_score else 0) | (FLAG_NAN if det.touches_nan else 0)
        flags |= FLAG_CUT if det.cut else 0
        bx0, by0, bx1, by1 = x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1
        rows.append({
            "x": x, "y": y, "n_components": len(mine), "flux_int": float(mine.flux_int.sum()) if len(mine) else np.nan,
            "flux_peak": float(mine.flux_peak.max()) if len(mine) else np.nan,
            "component_ids": list(mine.component_id), "flags": flags, "origin": "detection",
            "n_islands": int(mine.island_id.nunique()), "n_peaks": len(mine), "morph_class": det.morph_class,
            "morph_score": det.score, "morph_probs": np.asarray(det.class_probs, dtype=np.float32),
            "las": largest_extent(m) * pixel_arcsec, "host_x": det.host_x, "host_y": det.host_y,
            "host_score": det.host_score, "bbox_x_min": bx0, "bbox_y_min": by0, "bbox_x_max": bx1, "bbox_y_max": by1,
            "mask_rle": encode_mask(m[by0 - y0 : by1 - y0, bx0 - x0 : bx1 - x0]), "model_id": model_id,
            "_members": np.nonzero(owner == k)[0],
        })
    lone = np.nonzero(owner < 0)[0]
    for i in lone:
        c = comp.iloc[i]
        rows.append({"x": float(c.x), "y": float(c.y), "n_components": 1, "flux_int": float(c.flux_int),
                     "flux_peak": float(c.flux_peak), "component_ids": [c.component_id], "flags": int(c["flags"]),
                     **{k: v[0] for k, v in undetected_source_columns(1).items()},
                     "host_x": np.nan, "host_y": np.nan, "_members": np.array([i])})
    if not rows:
        from .columns import SOURCES

        return pd.DataFrame({c.name: pd.Series([], dtype=object) for c in SOURCES}), np.zeros(0, dtype=object)
    table = pd.DataFrame(rows)
    table = table.iloc[np.lexsort((table.x.to_numpy(float), table.y.to_numpy(float)))].reset_index(drop=True)
    n = len(table)
    ids = np.array([f"{tile_id}_s{i:06d}" for i in range(n)], dtype=object)
    ra, dec = _pixel_to_icrs(wcs, table.x, table.y)
    host = np.isfinite(table.host_x.to_numpy(float))
    hra, hdec = np.full(n, np.nan), np.full(n, np.nan)
    hra[host], hdec[host] = _pixel_to_icrs(wcs, table.host_x[host], table.host_y[host])
    table = table.assign(source_id=ids, source_name=iau_names(ra, dec), tile_id=tile_id, ra=ra, dec=dec,
                         host_ra=hra, host_dec=hdec)
    source_id = np.empty(len(comp), dtype=object)
    for sid, members in zip(ids, table["_members"]):
        source_id[members] = sid
    lone_rows = (table.origin == "component").to_numpy(bool)
    n_det = int((~lone_rows).sum())
    log.info("%s: %d sources, %d from detections (%d components), %d lone components", tile_id, n, n_det,
             int((owner >= 0).sum()), len(lone))
    return table.drop(columns=["x", "y", "host_x", "host_y", "_members"]), source_id
