"""
COCO average precision through pycocotools, for in-memory ground truth and detections.

Used by the training's per-epoch validation (cutouts as images) and by rule
evaluate_detections (whole tiles as images). Masks are COCO compressed RLE dicts with ``str``
counts (as `skysift.masks.encode_mask` writes them, relative to the full image).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

import numpy as np

__all__ = ["coco_average_precision"]

log = logging.getLogger(__name__)


def _coco(images, annotations, categories):
    from pycocotools.coco import COCO

    gt = COCO()
    gt.dataset = {"images": [{"id": i["id"], "width": i["width"], "height": i["height"]} for i in images],
                  "annotations": annotations,
                  "categories": [{"id": c["id"], "name": c["name"]} for c in categories]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def _rle_bytes(seg):
    return {"size": list(seg["size"]), "counts": seg["counts"].encode("ascii") if isinstance(seg["counts"], str)
            else seg["counts"]}


def coco_average_precision(images, gt, detections, categories, *, iou_types=("bbox", "segm"), max_dets=10000):
    """
    AP at IoU 0.5 (and 0.5:0.95), overall and per category, with precision-recall curves.

    Parameters
    ----------
    images : list of dict
        ``id``, ``width``, ``height`` (pixels).
    gt : list of dict
        Ground truth: ``image_id``, ``category_id``, ``bbox`` ``[x, y, w, h]``, ``segmentation``
        (RLE dict), ``area`` (pixels), ``iscrowd`` (1: an ignore region, e.g. a source too faint
        to count: detecting it is neither rewarded nor punished).
    detections : list of dict
        ``image_id``, ``category_id``, ``bbox``, ``score``, and ``segmentation`` for ``segm``.
    categories : list of dict
        ``id``, ``name``.
    iou_types : tuple of {'bbox', 'segm'}
    max_dets : int
        Detections per image considered (whole tiles hold thousands of sources).

    Returns
    -------
    dict
        Per IoU type: ``map50`` (mean over the categories that have ground truth; NaN when none
        has), ``map`` (IoU 0.5:0.95), ``ap50_per_class`` ({name: AP50 or None}), ``n_gt_per_class``
        and ``pr50`` ({name: {"recall": [...], "precision": [...]}}).
    """
    from pycocotools.cocoeval import COCOeval

    gt = [dict(a, id=k + 1, segmentation=_rle_bytes(a["segmentation"])) if "segmentation" in a
          else dict(a, id=k + 1) for k, a in enumerate(gt)]
    n_gt = {c["name"]: sum(a["category_id"] == c["id"] and not a.get("iscrowd", 0) for a in gt) for c in categories}
    out = {}
    for iou_type in iou_types:
        result = {"map50": float("nan"), "map": float("nan"), "ap50_per_class": {c["name"]: None for c in categories},
                  "n_gt_per_class": n_gt, "pr50": {}}
        out[iou_type] = result
        if not any(n_gt.values()):
            continue
        coco_gt = _coco(images, gt, categories)
        dets = [dict(d, id=k + 1) for k, d in enumerate(detections)]
        if iou_type == "segm":
            dets = [dict(d, segmentation=_rle_bytes(d["segmentation"])) for d in dets]
        else:
            dets = [{k: v for k, v in d.items() if k != "segmentation"} for d in dets]
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore", DeprecationWarning)
            coco_dt = coco_gt.loadRes(dets) if dets else _coco(images, [], categories)
            ev = COCOeval(coco_gt, coco_dt, iou_type)
            ev.params.maxDets = [max_dets]
            # one area range: COCO's small/medium/large would repeat the matching 3 more times
            ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]
            ev.evaluate()
            ev.accumulate()
        precision = ev.eval["precision"]  # [iou, recall, category, area, maxdets]
        # as COCOeval.summarize: the mean over the cells with ground truth (-1: none)
        p_all, p_50 = precision[:, :, :, 0, -1], precision[0, :, :, 0, -1]
        result["map"] = float(p_all[p_all > -1].mean()) if (p_all > -1).any() else float("nan")
        result["map50"] = float(p_50[p_50 > -1].mean()) if (p_50 > -1).any() else float("nan")
        for k, cat_id in enumerate(ev.params.catIds):
            name = next(c["name"] for c in categories if c["id"] == cat_id)
            p = precision[0, :, k, 0, -1]
            if n_gt[name] == 0 or (p < 0).all():
                continue
            result["ap50_per_class"][name] = float(np.mean(np.maximum(p, 0)))
            result["pr50"][name] = {"recall": [float(r) for r in ev.params.recThrs],
                                    "precision": [float(max(v, 0)) for v in p]}
        if not dets:
            result["map50"] = result["map"] = 0.0
    return out
