"""
Scoring the detector and the source association against the simulator's truth.

Each simulated tile is one COCO image (tile pixels). Ground truth: every truth source with a
3-sigma mask, in its class (`skysift.detection.labels.truth_categories`), the mask clipped to
the valid (non-NaN) pixels; sources whose brightest component is below ``min_snr``, or with
less than half of their mask on valid pixels, are ignore regions (``iscrowd``: finding them is
neither rewarded nor punished). Scored, with pycocotools at IoU 0.5:

- the detector: the tile's detections after ownership + NMS across cutouts
  (`skysift.sources.select_detections`, as the merge does), every score. Each detection enters
  once per class whose probability reaches ``min_prob``, scored by that probability
  (`class_hypotheses`): pycocotools' convention for a detector with class probabilities, as
  torchvision's Mask R-CNN and CLARAN (Wu et al. 2019, Sect. 5.2: each class's list ranked by
  its P-values) are scored. ``*_top1`` keys score the catalogue's single class per source,
  ``*_model_probs`` keys the detector's own probabilities, before infer_shard's peak recount
  (`skysift.detection.peaks`);
- the baseline: SEP islands as boxes and masks (the connected 5-sigma pixels of
  `skysift.extract.detect_objects` on the whole tile, score = peak S/N, class from the number
  of deblended objects: ``1C_{n}P`` / ``R`` for one object, ``FR-II`` for more).

Completeness by S/N (`completeness_by_snr`, detector and baseline): the fraction of the scored
truth sources that some detection's box overlaps at IoU 0.5, in bins of their peak S/N.

Association of SEP components with sources: each catalogued component gets the truth source
whose 3-sigma mask holds its position (the smallest when masks overlap). Completeness is the
fraction of truth sources with >= 2 such components whose components all share one catalogue
source; purity the fraction of catalogue sources with >= 2 truth-assigned components whose
components all come from one truth source.

Hosts: a catalogued detected source is matched to the truth source covering most of its mask;
the fraction of matched sources whose host lies within 3" of the true host (no host found
counts as a miss).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..masks import decode_mask
from .cocoeval import coco_average_precision
from .labels import SCHEMES, _source_peak_snr, truth_categories

__all__ = ["GOALS", "SNR_EDGES", "truth_ground_truth", "class_hypotheses", "sep_island_baseline", "component_truth",
           "completeness_edges", "completeness_by_snr", "association_scores", "host_scores",
           "evaluate_detection_tiles"]

log = logging.getLogger(__name__)

SNR_EDGES = (5.0, 6.0, 7.0, 8.0, 10.0, 15.0, np.inf)

GOALS = {"box_map50": 0.90, "mask_map50": 0.80, "host_within_3arcsec": 0.95, "association_completeness": 0.95,
         "association_purity": 0.95}


def _tile_rle(x0, y0, m, shape):
    """
    COCO RLE (str counts) of a mask placed at tile pixel (x0, y0) on a tile of ``shape``.

    The runs are built from the mask's own columns (COCO counts run down the columns, x-major),
    so a small mask on a large tile costs its own size, not the tile's.
    """
    from pycocotools import mask as mask_utils

    ny, nx = shape
    ys, ye = max(y0, 0), min(y0 + m.shape[0], ny)
    xs, xe = max(x0, 0), min(x0 + m.shape[1], nx)
    if ys >= ye or xs >= xe:
        runs = [ny * nx]
    else:
        sub = np.asarray(m[ys - y0 : ye - y0, xs - x0 : xe - x0], dtype=bool)
        # the columns xs..xe-1 of the full image, flattened column by column
        cols = np.zeros((xe - xs, ny), dtype=bool)
        cols[:, ys:ye] = sub.T
        flat = cols.ravel()
        change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
        bounds = np.concatenate([[0], change, [flat.size]])
        lengths = np.diff(bounds)
        if flat[0]:
            lengths = np.concatenate([[0], lengths])
        lengths[0] += xs * ny
        tail = (nx - xe) * ny
        if not flat[-1]:
            lengths[-1] += tail
        elif tail:
            lengths = np.concatenate([lengths, [tail]])
        runs = [int(v) for v in lengths]
    rle = mask_utils.frPyObjects({"size": [ny, nx], "counts": runs}, ny, nx)
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _label_map(truth_sources, shape):
    """
    int32 map of the truth source index (+1) owning each pixel (0: none).

    Where masks overlap, the smaller mask is on top: a compact source on the lobe of a radio
    galaxy owns its own pixels.
    """
    out = np.zeros(shape, dtype=np.int32)
    masks = [decode_mask(r) if isinstance(r, str) else None for r in truth_sources.mask_rle]
    area = np.array([m.sum() if m is not None else 0 for m in masks])
    for k in np.argsort(-area, kind="stable"):
        m = masks[k]
        if m is None:
            continue
        row = truth_sources.iloc[k]
        x0, y0 = int(row.bbox_x_min), int(row.bbox_y_min)
        out[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]][m] = k + 1
    return out


def truth_ground_truth(truth_sources, truth_components, scheme, shape, image_id, *, min_snr=5.0, finite=None,
                       min_visible=0.5):
    """
    COCO ground truth of one simulated tile.

    Parameters
    ----------
    truth_sources, truth_components : pandas.DataFrame
        The simulator's truth.
    scheme : {'rgz', 'fr'}
    shape : tuple
        ``(ny, nx)`` of the tile.
    image_id : int
    min_snr : float
        Fainter sources (brightest component) are ignore regions.
    finite : 2D bool ndarray, optional
        Valid pixels of the tile: masks are clipped to them (emission on blanked pixels cannot be
        seen), and a source with less than ``min_visible`` of its mask visible is an ignore region.

    Returns
    -------
    list of dict
        ``image_id``, ``category_id``, ``bbox``, ``segmentation``, ``area``, ``iscrowd``, ``snr``
        (peak S/N of the brightest component).
    """
    names = SCHEMES[scheme]
    snr = _source_peak_snr(truth_sources, truth_components)
    cats = truth_categories(truth_sources, scheme)
    out = []
    for row, cat, s in zip(truth_sources.itertuples(index=False), cats, snr):
        if not isinstance(row.mask_rle, str):
            continue
        m = decode_mask(row.mask_rle)
        x0, y0 = int(row.bbox_x_min), int(row.bbox_y_min)
        if finite is not None:
            full = m.sum()
            m = m & finite[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]]
            if not m.any():
                continue
            visible = m.sum() / full
            ys, xs = np.nonzero(m)
            m = m[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
            x0, y0 = x0 + int(xs.min()), y0 + int(ys.min())
        else:
            visible = 1.0
        crowd = int(s < min_snr or cat not in names or visible < min_visible)
        out.append({"image_id": image_id, "category_id": names.index(cat) + 1 if cat in names else 1,
                    "bbox": [x0, y0, m.shape[1], m.shape[0]], "area": float(m.sum()), "iscrowd": crowd,
                    "segmentation": _tile_rle(x0, y0, m, shape), "snr": float(s)})
    return out


def _detector_results(kept, masks, categories, shape, image_id):
    out = []
    for det, (x0, y0, m) in zip(kept.itertuples(index=False), masks):
        ys, xs = np.nonzero(m)
        bx0, by0 = x0 + xs.min(), y0 + ys.min()
        out.append({"image_id": image_id, "category_id": categories.index(det.morph_class) + 1,
                    "bbox": [float(det.tile_box_x_min), float(det.tile_box_y_min),
                             float(det.tile_box_x_max - det.tile_box_x_min),
                             float(det.tile_box_y_max - det.tile_box_y_min)],
                    "score": float(det.score), "segmentation": _tile_rle(x0, y0, m, shape),
                    "_mask_box": [int(bx0), int(by0)]})
    return out


def class_hypotheses(records, class_probs, min_prob):
    """
    One COCO result per class a detection may be, as pycocotools scores class probabilities.

    Parameters
    ----------
    records : list of dict
        COCO results of the detections, one each (their top class and score).
    class_probs : sequence of 1D float arrays, shape (n_classes,)
        Probability of every class (category ``k + 1``) of each detection.
    min_prob : float
        Classes below this probability give no result; the top class always does.

    Returns
    -------
    list of dict
        Copies of each record with ``category_id`` and ``score`` of every class reaching
        ``min_prob``, the box and mask unchanged.
    """
    out = []
    for r, probs in zip(records, class_probs):
        probs = np.asarray(probs, dtype=float)
        top = int(np.argmax(probs))
        for k in np.flatnonzero((probs >= min_prob) | (np.arange(len(probs)) == top)):
            out.append(dict(r, category_id=int(k) + 1, score=float(probs[k])))
    return out


def sep_island_baseline(radio_path, extract_settings, scheme, image_id):
    """
    The trivial baseline: SEP islands of the whole tile as boxes and masks.

    Parameters
    ----------
    radio_path : str
        The tile.
    extract_settings : dict
        `skysift.extract.ExtractSettings` fields (the extract_sources configuration).
    scheme : {'rgz', 'fr'}
    image_id : int

    Returns
    -------
    list of dict
        COCO results: class ``1C_{min(n, 3)}P`` (rgz) or ``R`` / ``FR-II`` (fr) from the number
        ``n`` of deblended SEP objects of the island, score = peak S/N of the island.
    """
    from scipy import ndimage

    from ..extract import ExtractSettings, detect_objects
    from ..tileio import native_float32, open_tile

    names = SCHEMES[scheme]
    tile = open_tile(radio_path)
    data = native_float32(tile.data)
    mask = ~np.isfinite(data)
    data[mask] = 0.0
    settings = ExtractSettings(**{k: v for k, v in extract_settings.items() if k in ExtractSettings.__dataclass_fields__})
    objects, rms, segmap, _ = detect_objects(data, mask, settings, segmentation=True)
    islands, n = ndimage.label(segmap > 0, structure=np.ones((3, 3), dtype=bool))
    out = []
    if n == 0:
        return out
    snr = np.where(rms > 0, data / np.where(rms > 0, rms, 1), 0)
    peak = ndimage.maximum(snr, islands, np.arange(1, n + 1))
    n_obj = np.zeros(n + 1, dtype=int)
    obj_island = islands[segmap > 0]
    pairs = np.unique(np.column_stack([obj_island, segmap[segmap > 0]]), axis=0)
    np.add.at(n_obj, pairs[:, 0], 1)
    for k, sl in enumerate(ndimage.find_objects(islands), start=1):
        if sl is None:
            continue
        m = islands[sl] == k
        if scheme == "rgz":
            cat = f"1C_{min(n_obj[k], 3)}P"
        else:
            cat = "R" if n_obj[k] <= 1 else "FR-II"
        y0, x0 = sl[0].start, sl[1].start
        out.append({"image_id": image_id, "category_id": names.index(cat) + 1,
                    "bbox": [x0, y0, m.shape[1], m.shape[0]], "score": float(peak[k - 1]),
                    "segmentation": _tile_rle(x0, y0, m, data.shape)})
    return out


def component_truth(components, truth_labels):
    """Truth label (`_label_map`, 0: none) under each component's position."""
    ny, nx = truth_labels.shape
    xi = np.clip(np.floor(components.x.to_numpy(float) + 0.5).astype(int), 0, nx - 1)
    yi = np.clip(np.floor(components.y.to_numpy(float) + 0.5).astype(int), 0, ny - 1)
    return truth_labels[yi, xi]


def association_scores(truth, source_id):
    """
    Association completeness and purity of catalogued components.

    Parameters
    ----------
    truth : 1D int ndarray
        Truth source of each component (`component_truth`; 0: none).
    source_id : 1D ndarray of str
        Catalogue source of each component.

    Returns
    -------
    dict
        ``completeness``, ``purity`` and the numbers of truth (``n_truth``) and catalogue
        (``n_sources``) sources they count.
    """
    frame = pd.DataFrame({"truth": np.asarray(truth), "source": np.asarray(source_id)})
    frame = frame[frame.truth > 0]
    by_truth = frame.groupby("truth").source.agg(["size", "nunique"])
    multi_truth = by_truth[by_truth["size"] >= 2]
    by_source = frame.groupby("source").truth.agg(["size", "nunique"])
    multi_source = by_source[by_source["size"] >= 2]
    return {"completeness": float((multi_truth["nunique"] == 1).mean()) if len(multi_truth) else float("nan"),
            "purity": float((multi_source["nunique"] == 1).mean()) if len(multi_source) else float("nan"),
            "n_truth": int(len(multi_truth)), "n_sources": int(len(multi_source))}


def host_scores(sources, truth_sources, truth_labels, snr, *, min_snr=5.0, radius_arcsec=3.0):
    """
    Host offsets of catalogued detected sources matched to truth sources.

    A detected source is matched to the truth source covering most of its mask (`_label_map`).

    Returns
    -------
    dict
        ``within`` (fraction within ``radius_arcsec``; no host found counts as a miss),
        ``within_extended`` (truth sources that are not compact), ``n``, ``n_extended``,
        ``median_offset_arcsec``, ``by_morphology`` (truth morphology: [within, matched]).
    """
    from astropy.coordinates import SkyCoord

    det = sources[sources.origin == "detection"]
    empty = {"within": float("nan"), "within_extended": float("nan"), "n": 0, "n_extended": 0,
             "median_offset_arcsec": float("nan"), "by_morphology": {}}
    match = np.full(len(det), -1)
    for i, row in enumerate(det.itertuples(index=False)):
        m = decode_mask(row.mask_rle)
        x0, y0 = int(row.bbox_x_min), int(row.bbox_y_min)
        under = truth_labels[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]]
        under = under[m[: under.shape[0], : under.shape[1]]]
        under = under[under > 0]
        if under.size:
            k = np.bincount(under).argmax() - 1
            match[i] = k if snr[k] >= min_snr else -1
    ok = match >= 0
    if not ok.any():
        return empty
    truth = truth_sources.iloc[match[ok]]
    d = det[ok]
    found = np.isfinite(d.host_ra.to_numpy(float))
    sep = np.full(len(d), np.inf)
    if found.any():
        sep[found] = SkyCoord(d.host_ra.to_numpy()[found], d.host_dec.to_numpy()[found], unit="deg").separation(
            SkyCoord(truth.host_ra.to_numpy()[found], truth.host_dec.to_numpy()[found], unit="deg")).arcsec
    ext = (truth.morphology != "compact").to_numpy()
    by_morph = pd.DataFrame({"morphology": truth.morphology.to_numpy(), "within": sep <= radius_arcsec})
    by_morph = by_morph.groupby("morphology").within.agg(["sum", "size"])
    return {"within": float(np.mean(sep <= radius_arcsec)),
            "within_extended": float(np.mean(sep[ext] <= radius_arcsec)) if ext.any() else float("nan"),
            "n": int(len(d)), "n_extended": int(ext.sum()),
            "median_offset_arcsec": float(np.median(sep[np.isfinite(sep)])) if np.isfinite(sep).any() else float("nan"),
            "by_morphology": {str(m): [int(r["sum"]), int(r["size"])] for m, r in by_morph.iterrows()}}


def _plot_pr(ap, baseline, completeness, baseline_completeness, png_path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5), constrained_layout=True)
    for ax, kind in zip(axes, ("bbox", "segm")):
        for j, (name, pr) in enumerate(ap[kind]["pr50"].items()):
            ax.plot(pr["recall"], pr["precision"], "-", color=f"C{j}",
                    label=f"{name} AP50 {ap[kind]['ap50_per_class'][name]:.2f}")
            b = baseline[kind]["pr50"].get(name)
            if b:
                ax.plot(b["recall"], b["precision"], ":", color=f"C{j}")
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
               title=f"{'boxes' if kind == 'bbox' else 'masks'}: mAP50 {ap[kind]['map50']:.3f} "
                     f"(SEP islands, dotted: {baseline[kind]['map50']:.3f})")
        ax.legend(fontsize=7, loc="lower left")
    ax = axes[2]
    for bins, style, label in ((completeness, "o-", "detector"), (baseline_completeness, "s:", "SEP islands")):
        lo = np.array([b["snr_min"] for b in bins])
        hi = np.array([b["snr_max"] if b["snr_max"] is not None else 2 * b["snr_min"] for b in bins])
        ax.plot(np.sqrt(lo * hi), [b["completeness"] for b in bins], style, color="k", label=label)
    ax.set(xscale="log", xlabel="peak S/N of the truth source", ylabel="found (box IoU >= 0.5)", ylim=(0, 1.02),
           title="completeness by S/N (last bin open)")
    ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(title)
    tmp = Path(png_path).with_name(Path(png_path).name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, png_path)


def completeness_edges(min_snr, edges=SNR_EDGES):
    """S/N bin edges starting at ``min_snr`` (where scoring starts): the ``edges`` above it."""
    return (float(min_snr), *(float(e) for e in edges if e > min_snr))


def completeness_by_snr(gt, detections, *, edges=SNR_EDGES, iou_threshold=0.5):
    """
    The survey's completeness curve: the fraction of truth sources found, by their peak S/N.

    A truth source (ignore regions excepted) is found when the box of any detection on its
    image overlaps its box at IoU >= ``iou_threshold``, whatever either's class and at any
    score: recall at the detector's lowest score, as a function of how bright the source is.

    Parameters
    ----------
    gt : list of dict
        `truth_ground_truth` records: ``image_id``, ``bbox`` ``[x, y, w, h]`` (pixels),
        ``iscrowd``, ``snr``.
    detections : list of dict
        COCO results: ``image_id``, ``bbox``.
    edges : sequence of float
        Bin edges in peak S/N; the last bin is open when its upper edge is infinite.
    iou_threshold : float

    Returns
    -------
    list of dict
        Per bin: ``snr_min``, ``snr_max`` (None: open), ``n`` truth sources, ``found`` and
        ``completeness`` (NaN for an empty bin).
    """
    from pycocotools import mask as mask_utils

    truth = [g for g in gt if not g["iscrowd"]]
    snr = np.array([g["snr"] for g in truth], dtype=float)
    found = np.zeros(len(truth), dtype=bool)
    boxes = {}
    for d in detections:
        boxes.setdefault(d["image_id"], []).append(d["bbox"])
    for image_id, dets in boxes.items():
        k = np.array([i for i, g in enumerate(truth) if g["image_id"] == image_id], dtype=int)
        if k.size:
            iou = mask_utils.iou(np.asarray(dets, dtype=float), np.array([truth[i]["bbox"] for i in k], dtype=float),
                                 np.zeros(k.size, dtype=np.uint8))
            found[k] = (np.asarray(iou) >= iou_threshold).any(axis=0)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (snr >= lo) & (snr < hi)
        n = int(sel.sum())
        out.append({"snr_min": float(lo), "snr_max": float(hi) if np.isfinite(hi) else None, "n": n,
                    "found": int(found[sel].sum()), "completeness": float(found[sel].mean()) if n else float("nan")})
    return out


def _tile_map50(image, gt, hyps, base, categories):
    """Box/mask mAP50 of the detector (class hypotheses) and box mAP50 of the baseline on one tile."""
    def mine(records):
        return [r for r in records if r["image_id"] == image["id"]]

    ap = coco_average_precision([image], mine(gt), mine(hyps), categories)
    ap_base = coco_average_precision([image], mine(gt), mine(base), categories, iou_types=("bbox",))
    return {"box_map50": ap["bbox"]["map50"], "mask_map50": ap["segm"]["map50"],
            "baseline_box_map50": ap_base["bbox"]["map50"], "n_truth_per_class": ap["bbox"]["n_gt_per_class"]}


def _one_class(records):
    """COCO records with every class made category 1 (class-agnostic scoring)."""
    return [dict(r, category_id=1) for r in records]


def evaluate_detection_tiles(tiles, *, scheme, json_path, png_path, extract_settings=None, min_snr=5.0,
                             overlap_threshold=0.5, min_prob=0.05):
    """
    Score the detector, its baseline, the association and the hosts on simulated tiles.

    Parameters
    ----------
    tiles : list of dict
        Per tile: ``detections`` (list of infer_shard outputs), ``cutouts``, ``components`` and
        ``sources`` (the tile's catalogue), ``truth_sources``, ``truth_components``, ``radio``
        (paths).
    scheme : {'rgz', 'fr'}
    json_path, png_path : str
        Outputs: the figures (``box_map50``, ``mask_map50`` with every class hypothesis, the
        catalogue's single class as ``box_map50_top1``, ``mask_map50_top1``, the detector's own
        probabilities before the peak recount as ``box_map50_model_probs``, ``mask_map50_model_probs``,
        ``host_within_3arcsec``,
        ``association_completeness``, ``association_purity``, ``baseline_box_map50``, per-class
        values, the class-agnostic ``agnostic_box_map50`` and ``baseline_agnostic_box_map50``
        (every class as one: finding sources), ``completeness_by_snr`` and
        ``baseline_completeness_by_snr``, goals, and under ``tiles`` each tile's own
        ``box_map50``, ``mask_map50``, ``baseline_box_map50``) and the precision-recall curves.
    extract_settings : dict, optional
        Settings of the SEP baseline (the extract configuration).
    min_snr : float
        Truth sources fainter than this are ignore regions.
    overlap_threshold : float
        NMS across cutouts (as in the merge).
    min_prob : float
        Class probability from which a detection is also scored as that class (`class_hypotheses`).

    Returns
    -------
    dict
        The JSON content.
    """
    from ..sources import read_detections, select_detections
    from ..tileio import open_tile

    names = list(SCHEMES[scheme])
    categories = [{"id": k + 1, "name": n} for k, n in enumerate(names)]
    images, gt, dets, hyps, model_hyps, base = [], [], [], [], [], []
    per_tile, truth_all, source_all, hosts_all = {}, [], [], []
    model_ids = set()
    for image_id, t in enumerate(tiles):
        detections, wcs, meta = read_detections(t["detections"])
        model_ids.add(meta.get("model_id"))
        det_names = json.loads(meta["categories"])
        if det_names != names:
            raise ValueError(f"the detector's classes {det_names} differ from the evaluation scheme {scheme!r} {names}")
        truth = pd.read_parquet(t["truth_sources"])
        truth_comp = pd.read_parquet(t["truth_components"])
        tile = open_tile(t["radio"])
        shape = tile.shape
        images.append({"id": image_id, "width": shape[1], "height": shape[0]})
        gt += truth_ground_truth(truth, truth_comp, scheme, shape, image_id, min_snr=min_snr,
                                 finite=np.isfinite(tile.data))
        kept, masks = select_detections(detections, pd.read_parquet(t["cutouts"]), overlap_threshold=overlap_threshold)
        results = _detector_results(kept, masks, names, shape, image_id)
        dets += results
        hyps += class_hypotheses(results, kept.class_probs, min_prob)
        model_hyps += class_hypotheses(results, kept.model_probs, min_prob)
        base += sep_island_baseline(t["radio"], extract_settings or {}, scheme, image_id)
        labels = _label_map(truth, shape)
        comps = pd.read_parquet(t["components"])
        comp_truth = component_truth(comps, labels)
        assoc = association_scores(comp_truth, comps.source_id.to_numpy())
        snr = _source_peak_snr(truth, truth_comp)
        hosts = host_scores(pd.read_parquet(t["sources"]), truth, labels, snr, min_snr=min_snr)
        per_tile[str(truth.tile_id.iloc[0]) if len(truth) else str(image_id)] = {
            "n_detections": len(kept), "association": assoc, "hosts": hosts}
        truth_all.append(np.where(comp_truth > 0, comp_truth + 1_000_000 * (image_id + 1), 0))
        source_all.append(comps.source_id.to_numpy())
        hosts_all.append(hosts)
    for d in dets + hyps + model_hyps:
        d.pop("_mask_box", None)
    ap = coco_average_precision(images, gt, hyps, categories)
    ap_model = coco_average_precision(images, gt, model_hyps, categories)
    for image, tile_scores in zip(images, per_tile.values()):  # each tile's own figures
        tile_scores.update(_tile_map50(image, gt, hyps, base, categories))
    ap_top1 = coco_average_precision(images, gt, dets, categories)
    ap_base = coco_average_precision(images, gt, base, categories)
    # finding sources, whatever their class: every class as one
    one = [{"id": 1, "name": "source"}]
    agn = coco_average_precision(images, _one_class(gt), _one_class(dets), one, iou_types=("bbox",))
    agn_base = coco_average_precision(images, _one_class(gt), _one_class(base), one, iou_types=("bbox",))
    snr_edges = completeness_edges(min_snr)
    assoc = association_scores(np.concatenate(truth_all) if truth_all else np.zeros(0, int),
                               np.concatenate(source_all) if source_all else np.zeros(0, object))
    n_h = sum(h["n"] for h in hosts_all)
    n_he = sum(h["n_extended"] for h in hosts_all)
    within = sum(h["within"] * h["n"] for h in hosts_all if h["n"]) / n_h if n_h else float("nan")
    within_ext = sum(h["within_extended"] * h["n_extended"] for h in hosts_all if h["n_extended"]) / n_he \
        if n_he else float("nan")
    result = {
        "box_map50": ap["bbox"]["map50"], "mask_map50": ap["segm"]["map50"],
        "box_map50_top1": ap_top1["bbox"]["map50"], "mask_map50_top1": ap_top1["segm"]["map50"],
        "host_within_3arcsec": within, "association_completeness": assoc["completeness"],
        "association_purity": assoc["purity"], "baseline_box_map50": ap_base["bbox"]["map50"],
        "baseline_mask_map50": ap_base["segm"]["map50"],
        "box_map": ap["bbox"]["map"], "mask_map": ap["segm"]["map"],
        "box_map50_model_probs": ap_model["bbox"]["map50"], "mask_map50_model_probs": ap_model["segm"]["map50"],
        "box_ap50_per_class_model_probs": ap_model["bbox"]["ap50_per_class"],
        "agnostic_box_map50": agn["bbox"]["map50"], "baseline_agnostic_box_map50": agn_base["bbox"]["map50"],
        "completeness_by_snr": completeness_by_snr(gt, dets, edges=snr_edges),
        "baseline_completeness_by_snr": completeness_by_snr(gt, base, edges=snr_edges),
        "box_ap50_per_class": ap["bbox"]["ap50_per_class"], "mask_ap50_per_class": ap["segm"]["ap50_per_class"],
        "baseline_box_ap50_per_class": ap_base["bbox"]["ap50_per_class"],
        "box_ap50_per_class_top1": ap_top1["bbox"]["ap50_per_class"], "min_prob": min_prob,
        "n_truth_per_class": ap["bbox"]["n_gt_per_class"],
        "host_within_3arcsec_extended": within_ext, "n_hosts": n_h, "n_hosts_extended": n_he,
        "n_association_truth_sources": assoc["n_truth"], "n_association_catalogue_sources": assoc["n_sources"],
        "scheme": scheme, "min_snr": min_snr, "model_id": sorted(str(m) for m in model_ids),
        "tiles": per_tile,
    }
    result["goals"] = {k: {"target": f">= {v}", "passed": bool(np.isfinite(result[k]) and result[k] >= v)}
                       for k, v in GOALS.items()}
    result["beats_baseline"] = bool(result["box_map50"] > result["baseline_box_map50"])
    result["beats_baseline_top1"] = bool(result["box_map50_top1"] > result["baseline_box_map50"])
    result["beats_baseline_agnostic"] = bool(result["agnostic_box_map50"] > result["baseline_agnostic_box_map50"])
    for k in ("box_map50", "mask_map50", "box_map50_top1", "mask_map50_top1", "box_map50_model_probs", "baseline_box_map50",
              "baseline_mask_map50", "agnostic_box_map50",
              "baseline_agnostic_box_map50", "host_within_3arcsec",
              "association_completeness", "association_purity"):
        log.info("%s = %.4f", k, result[k])
    _plot_pr(ap, ap_base, result["completeness_by_snr"], result["baseline_completeness_by_snr"], png_path, f"{len(tiles)} held-out tile(s): " + ", ".join(per_tile))
    tmp = Path(json_path).with_name(Path(json_path).name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=float) + "\n")
    os.replace(tmp, json_path)
    return result
