"""
Scoring extracted components against the simulator's truth.

Matching is one-to-one: every (detection, truth component) pair closer than the match radius
is considered in order of distance, and each detection and each truth component is used at
most once. A blend of two true sources therefore recovers only one of them, as it should.

Definitions (all reported in ``components.json``):

- completeness: fraction of compact truth components on valid pixels, in a true-S/N range,
  that are matched (``completeness_snr7``: true S/N >= 7);
- reliability: fraction of detections above a measured S/N that are real, i.e. within the
  match radius of any truth component (of any flux) or on the 3-sigma emission mask of a
  truth source (fragments of extended sources are real emission);
- flux ratio: measured flux_int over true flux_int for matched compact components;
- offset: sky separation of matched compact components (``offset_median_arcsec_snr10``:
  true S/N >= 10).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

__all__ = ["match_one_to_one", "truth_emission_mask", "score_tile", "summarise", "evaluate_component_tiles"]

log = logging.getLogger(__name__)

SNR_BINS = np.array([3, 4, 5, 6, 7, 8, 10, 15, 20, 30, 50, 100, 1000, np.inf])
GOALS = {
    "completeness_snr7": (">=", 0.95),
    "reliability_5sigma": (">=", 0.98),
    "flux_ratio_median": ("within", (0.95, 1.05)),
    "offset_median_arcsec_snr10": ("<", 1.0),
}


def match_one_to_one(x_det, y_det, x_true, y_true, radius):
    """
    Greedy one-to-one positional match, closest pairs first.

    Parameters
    ----------
    x_det, y_det : 1D ndarray
        Detected positions (pixels).
    x_true, y_true : 1D ndarray
        True positions (pixels).
    radius : float
        Match radius (pixels).

    Returns
    -------
    det_to_true : 1D int ndarray, len(x_det)
        Index of the matched truth component, -1 when unmatched.
    true_to_det : 1D int ndarray, len(x_true)
        Index of the matched detection, -1 when unmatched.
    """
    det_to_true = np.full(len(x_det), -1, dtype=np.int64)
    true_to_det = np.full(len(x_true), -1, dtype=np.int64)
    if len(x_det) == 0 or len(x_true) == 0:
        return det_to_true, true_to_det
    pairs = cKDTree(np.column_stack([x_det, y_det])).sparse_distance_matrix(
        cKDTree(np.column_stack([x_true, y_true])), radius, output_type="ndarray")
    for k in np.argsort(pairs["v"], kind="stable"):
        i, j = pairs["i"][k], pairs["j"][k]
        if det_to_true[i] < 0 and true_to_det[j] < 0:
            det_to_true[i], true_to_det[j] = j, i
    return det_to_true, true_to_det


def truth_emission_mask(truth_sources, shape):
    """
    Union of the truth sources' 3-sigma emission masks on the tile grid.

    Parameters
    ----------
    truth_sources : pandas.DataFrame
        `skysift.columns.TRUTH_SOURCES` rows (bbox + COCO RLE mask relative to the bbox).
    shape : tuple
        ``(ny, nx)`` of the tile.

    Returns
    -------
    2D bool ndarray, ``(ny, nx)``.
    """
    from .masks import decode_mask

    out = np.zeros(shape, dtype=bool)
    for row in truth_sources.itertuples(index=False):
        if not isinstance(row.mask_rle, str) or not row.mask_rle:  # no emission above 3 sigma
            continue
        m = decode_mask(row.mask_rle)
        out[row.bbox_y_min : row.bbox_y_min + m.shape[0], row.bbox_x_min : row.bbox_x_min + m.shape[1]] |= m
    return out


def score_tile(components, truth_components, truth_sources, shape, beam_fwhm_arcsec, pixel_scale_arcsec,
               match_radius_beams=0.5):
    """
    Match one tile's detections with its truth.

    Parameters
    ----------
    components : pandas.DataFrame
        `skysift.columns.COMPONENTS` rows (detections).
    truth_components, truth_sources : pandas.DataFrame
        The simulator's truth tables of the same tile.
    shape : tuple
        ``(ny, nx)`` of the tile.
    beam_fwhm_arcsec, pixel_scale_arcsec : float
    match_radius_beams : float
        Match radius in beam FWHM.

    Returns
    -------
    truth : pandas.DataFrame
        Truth components with ``matched``, ``flux_ratio``, ``offset_arcsec`` columns.
    detections : pandas.DataFrame
        Detections with ``real`` (bool) and ``matched`` columns.
    """
    from astropy.coordinates import SkyCoord

    radius_pix = match_radius_beams * beam_fwhm_arcsec / pixel_scale_arcsec
    det = components.reset_index(drop=True)
    truth = truth_components.reset_index(drop=True)
    d2t, t2d = match_one_to_one(det.x.to_numpy(float), det.y.to_numpy(float),
                                truth.x.to_numpy(float), truth.y.to_numpy(float), radius_pix)
    truth = truth.assign(matched=t2d >= 0, flux_ratio=np.nan, offset_arcsec=np.nan, det_snr=np.nan)
    m = t2d >= 0
    if m.any():
        d = det.iloc[t2d[m]]
        truth.loc[m, "flux_ratio"] = d.flux_int.to_numpy(float) / truth.flux_int[m].to_numpy(float)
        truth.loc[m, "det_snr"] = d.snr.to_numpy(float)
        sep = SkyCoord(d.ra_deg_cont.to_numpy(), d.dec_deg_cont.to_numpy(), unit="deg").separation(
            SkyCoord(truth.ra[m].to_numpy(), truth.dec[m].to_numpy(), unit="deg"))
        truth.loc[m, "offset_arcsec"] = sep.arcsec
    near_any = np.zeros(len(det), dtype=bool)
    if len(det) and len(truth):
        dist, _ = cKDTree(truth[["x", "y"]].to_numpy(float)).query(det[["x", "y"]].to_numpy(float))
        near_any = dist <= radius_pix
    emission = truth_emission_mask(truth_sources, shape)
    xi = np.clip(np.round(det.x.to_numpy(float)).astype(int), 0, shape[1] - 1)
    yi = np.clip(np.round(det.y.to_numpy(float)).astype(int), 0, shape[0] - 1)
    on_emission = emission[yi, xi] if len(det) else np.zeros(0, dtype=bool)
    det = det.assign(matched=d2t >= 0, real=near_any | on_emission)
    return truth, det


def _fraction(mask):
    n = int(np.size(mask))
    return (float(np.mean(mask)) if n else float("nan")), n


def _binned(values, snr, bins=SNR_BINS):
    """Fraction true per S/N bin, as a list of {snr_min, snr_max, n, fraction}."""
    out = []
    for lo, hi in zip(bins[:-1], bins[1:]):
        sel = (snr >= lo) & (snr < hi)
        frac, n = _fraction(values[sel])
        if n:
            out.append({"snr_min": float(lo), "snr_max": float(hi), "n": n, "fraction": frac})
    return out


def summarise(truth, det):
    """
    Figures of merit from matched tables (one tile or several concatenated).

    Returns
    -------
    dict with completeness_snr7, reliability_5sigma, flux_ratio_median,
    offset_median_arcsec_snr10, their sample sizes, per-bin curves and the goals.
    """
    compact = truth[~truth.extended & truth.in_footprint]
    c7 = compact[compact.snr >= 7]
    completeness, n_c = _fraction(c7.matched.to_numpy())
    d5 = det[det.snr >= 5]
    reliability, n_r = _fraction(d5.real.to_numpy())
    matched = compact[compact.matched]
    fr = matched.flux_ratio.to_numpy(float)
    off10 = matched[matched.snr >= 10].offset_arcsec.to_numpy(float)
    ext = truth[truth.extended & truth.in_footprint & (truth.snr >= 7)]
    summary = {
        "completeness_snr7": completeness,
        "reliability_5sigma": reliability,
        "flux_ratio_median": float(np.median(fr)) if fr.size else float("nan"),
        "offset_median_arcsec_snr10": float(np.median(off10)) if off10.size else float("nan"),
        "n_truth_compact_snr7": n_c,
        "n_detections_5sigma": n_r,
        "n_flux_ratio": int(fr.size),
        "n_offset_snr10": int(off10.size),
        "flux_ratio_median_snr10": float(np.median(matched[matched.snr >= 10].flux_ratio)) if
        (matched.snr >= 10).any() else float("nan"),
        "flux_ratio_mad_snr10": float(np.median(np.abs(matched[matched.snr >= 10].flux_ratio - 1)))
        if (matched.snr >= 10).any() else float("nan"),
        "extended_island_recovery_snr7": _fraction(ext.matched.to_numpy())[0],
        "completeness_by_snr": _binned(compact.matched.to_numpy(), compact.snr.to_numpy(float)),
        "reliability_by_snr": _binned(det.real.to_numpy(), det.snr.to_numpy(float)),
    }
    summary["goals"] = {k: {"rule": f"{op} {target}", "passed": _passes(summary[k], op, target)}
                        for k, (op, target) in GOALS.items()}
    return summary


def _passes(value, op, target):
    if not np.isfinite(value):
        return False
    if op == ">=":
        return bool(value >= target)
    if op == "<":
        return bool(value < target)
    return bool(target[0] <= value <= target[1])


def plot_evaluation(truth, det, png_path, title=""):
    """Completeness, reliability, flux ratio and offset against S/N, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    compact = truth[~truth.extended & truth.in_footprint]
    fig, ax = plt.subplots(2, 2, figsize=(10, 8), constrained_layout=True)
    centres = lambda rows: [np.sqrt(r["snr_min"] * min(r["snr_max"], 2 * r["snr_min"])) for r in rows]  # noqa: E731
    comp = _binned(compact.matched.to_numpy(), compact.snr.to_numpy(float))
    rel = _binned(det.real.to_numpy(), det.snr.to_numpy(float))
    ax[0, 0].semilogx(centres(comp), [r["fraction"] for r in comp], "o-")
    ax[0, 0].axhline(0.95, ls=":", c="grey")
    ax[0, 0].axvline(7, ls=":", c="grey")
    ax[0, 0].set(xlabel="true S/N", ylabel="completeness", ylim=(0, 1.05), title="compact components")
    ax[0, 1].semilogx(centres(rel), [r["fraction"] for r in rel], "o-")
    ax[0, 1].axhline(0.98, ls=":", c="grey")
    ax[0, 1].set(xlabel="measured S/N", ylabel="reliability", ylim=(0, 1.05), title="detections")
    m = compact[compact.matched]
    ax[1, 0].loglog(m.snr, m.flux_ratio, ".", ms=2, alpha=0.5)
    ax[1, 0].axhline(1, c="grey")
    ax[1, 0].set(xlabel="true S/N", ylabel="S_int / S_true", ylim=(0.3, 3))
    ax[1, 1].loglog(m.snr, m.offset_arcsec, ".", ms=2, alpha=0.5)
    ax[1, 1].set(xlabel="true S/N", ylabel="offset (arcsec)")
    fig.suptitle(title)
    fig.savefig(png_path, dpi=110)
    plt.close(fig)


def _good_only(truth, det, regions):
    """Truth components and detections in regions whose true quality class is 'good'."""
    from .regions import locate_regions

    def good(frame):
        idx = locate_regions(frame["x"].to_numpy(float), frame["y"].to_numpy(float), regions)
        cls = regions["quality_class"].to_numpy(dtype=object)
        return np.where(idx >= 0, cls[np.maximum(idx, 0)], None) == "good"

    return truth[good(truth)], det[good(det)]


def evaluate_component_tiles(components_paths, truth_components_paths, truth_sources_paths, info_paths, *,
                             json_path, png_path, match_radius_beams=0.5, truth_regions_paths=None):
    """
    Score the components of several simulated tiles and write the JSON summary and figure.

    Parameters
    ----------
    components_paths, truth_components_paths, truth_sources_paths, info_paths : list of str
        Per tile, in the same order: extract_sources output, truth tables, inspect_tile JSON.
    json_path, png_path : str
        Outputs: ``{"overall": {...}, "tiles": {tile_id: {...}}, "match_radius_arcsec": r}``
        with the overall figures also at the top level.
    match_radius_beams : float
    truth_regions_paths : list of str, optional
        Per tile, the simulator's ``truth_regions.parquet``. When given, matching is done over
        the whole tile but every figure is computed on the truth components and detections
        lying in regions whose true quality class is ``good`` (injected defects such as
        artefacts create spurious sources on purpose); the figures over all regions are
        reported too, under ``all_regions``.
    """
    truths, dets, per_tile = [], [], {}
    goods = []
    regions_paths = truth_regions_paths or [None] * len(components_paths)
    radius = None
    for cp, tcp, tsp, ip, rp in zip(components_paths, truth_components_paths, truth_sources_paths, info_paths,
                                    regions_paths):
        info = json.loads(Path(ip).read_text())
        beam = float(np.sqrt(info["beam"]["bmaj_arcsec"] * info["beam"]["bmin_arcsec"]))
        radius = match_radius_beams * beam
        t, d = score_tile(pd.read_parquet(cp), pd.read_parquet(tcp), pd.read_parquet(tsp), tuple(info["shape"]),
                          beam, info["pixel_scale_arcsec"], match_radius_beams)
        if rp is None:
            per_tile[info["tile_id"]] = summarise(t, d)
        else:
            goods.append(_good_only(t, d, pd.read_parquet(rp)))
            per_tile[info["tile_id"]] = {**summarise(*goods[-1]), "all_regions": summarise(t, d)}
        truths.append(t)
        dets.append(d)
    truth, det = pd.concat(truths, ignore_index=True), pd.concat(dets, ignore_index=True)
    if truth_regions_paths:
        all_regions = summarise(truth, det)
        truth = pd.concat([g[0] for g in goods], ignore_index=True)
        det = pd.concat([g[1] for g in goods], ignore_index=True)
        overall = {**summarise(truth, det), "quality_restriction": "good regions (simulator truth)",
                   "all_regions": all_regions}
    else:
        overall = summarise(truth, det)
    result = {**overall, "match_radius_arcsec": radius, "tiles": per_tile}
    for name, value in overall.items():
        if not isinstance(value, (list, dict)):
            log.info("%s = %s", name, value)
    tmp = Path(json_path).with_name(Path(json_path).name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    plot_evaluation(truth, det, png_path, title=f"{len(per_tile)} tile(s): " + ", ".join(per_tile))
    os.replace(tmp, json_path)
    return result
