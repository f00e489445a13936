"""
Scoring the region quality classes of M1, M2 and M3 against the simulator's truth.

Regions are matched by ``region_id``; only regions with at least ``min_valid_fraction`` of
valid sky are scored (the same cut as for training). ``results/evaluation/quality.json`` holds
``accuracy_m1``, ``accuracy_m2``, ``accuracy_m3``, ``confusion_matrix`` (M3; rows are the true
classes, columns the predicted ones, both in ``classes`` order), ``per_class`` (M3 precision,
recall and support per class), the same for every model under ``models``, per-tile accuracies,
``accuracy_by_sky`` (each model's accuracy on ``full`` regions, at most 5 % blank, and on
``edge`` regions, cut by the footprint edge, where the simulated noise rises towards the edge
and blank pixels cut the stamps), the misclassified regions and the goals of issue 3 (M3 >= 0.97,
M3 better than M1 and M2).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .columns import QUALITY_CLASSES

__all__ = ["confusion", "precision_recall", "score_regions", "accuracy_by_sky", "evaluate_quality"]

log = logging.getLogger(__name__)

MODEL_COLUMNS = {"m1": "quality_class_m1", "m2": "quality_class_m2", "m3": "quality_class"}
GOAL_ACCURACY_M3 = 0.97
FULL_VALID_FRACTION = 0.95  # a region with at least this much valid sky is "full", else "edge"


def confusion(truth, pred, classes=QUALITY_CLASSES):
    """
    Confusion matrix.

    Parameters
    ----------
    truth, pred : sequences of str
    classes : sequence of str

    Returns
    -------
    2D int ndarray, ``(n_classes, n_classes)``: ``[i, j]`` regions of true class i predicted j.
    """
    idx = {c: i for i, c in enumerate(classes)}
    m = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for t, p in zip(truth, pred):
        if t in idx and p in idx:
            m[idx[t], idx[p]] += 1
    return m


def precision_recall(matrix, classes=QUALITY_CLASSES):
    """Per-class precision, recall and support from a confusion matrix (NaN where undefined)."""
    out = {}
    for i, c in enumerate(classes):
        tp, predicted, support = matrix[i, i], matrix[:, i].sum(), matrix[i].sum()
        out[c] = {"precision": float(tp / predicted) if predicted else float("nan"),
                  "recall": float(tp / support) if support else float("nan"), "support": int(support)}
    return out


def score_regions(predicted, truth, min_valid_fraction=0.5):
    """
    Join predictions with truth and keep the regions that are scored.

    Parameters
    ----------
    predicted : pandas.DataFrame
        `skysift.columns.QUALITY_REGIONS` rows.
    truth : pandas.DataFrame
        `skysift.columns.TRUTH_REGIONS` rows.
    min_valid_fraction : float

    Returns
    -------
    pandas.DataFrame: the predicted rows with ``truth`` and ``secondary_class`` columns.
    """
    t = truth[["region_id", "quality_class", "secondary_class"]].rename(columns={"quality_class": "truth"})
    joined = predicted.merge(t, on="region_id", how="inner", validate="one_to_one")
    return joined[(joined["valid_fraction"] >= min_valid_fraction) & joined["quality_class"].notna()].reset_index(
        drop=True)


def _accuracies(scored, prefix=""):
    """``{prefix + model: accuracy}`` of every model in `MODEL_COLUMNS` (NaN without rows)."""
    return {f"{prefix}{n}": float((scored[c] == scored["truth"]).mean()) if len(scored) else float("nan")
            for n, c in MODEL_COLUMNS.items()}


def accuracy_by_sky(scored, full_valid_fraction=FULL_VALID_FRACTION):
    """
    Accuracy of each model on full regions and on regions cut by the footprint edge.

    Parameters
    ----------
    scored : pandas.DataFrame
        `score_regions` output (``valid_fraction``, ``truth`` and the `MODEL_COLUMNS`).
    full_valid_fraction : float
        Regions with at least this fraction of valid sky are ``full``, the others ``edge``.

    Returns
    -------
    dict ``{"full": {...}, "edge": {...}}``, each with ``n_regions``, ``min_valid_fraction``
    or ``max_valid_fraction``, and ``accuracy_m1``, ``accuracy_m2``, ``accuracy_m3`` (NaN
    where the group is empty).
    """
    full = scored["valid_fraction"].to_numpy() >= full_valid_fraction
    out = {}
    for name, mask, bound in (("full", full, {"min_valid_fraction": full_valid_fraction}),
                              ("edge", ~full, {"max_valid_fraction": full_valid_fraction})):
        g = scored[mask]
        out[name] = {"n_regions": int(len(g)), **bound} | _accuracies(g, "accuracy_")
    return out


def _summary(scored):
    models = {}
    for name, col in MODEL_COLUMNS.items():
        m = confusion(scored["truth"], scored[col])
        models[name] = {
            "accuracy": float(np.trace(m) / m.sum()) if m.sum() else float("nan"),
            "confusion_matrix": m.tolist(),
            "per_class": precision_recall(m),
        }
    return models


def evaluate_quality(quality_paths, truth_paths, *, json_path, png_path, min_valid_fraction=0.5):
    """
    Score the quality classes of several held-out simulated tiles; write the JSON and figure.

    Parameters
    ----------
    quality_paths, truth_paths : list of str
        Per tile, in the same order: predict_quality output and ``truth_regions.parquet``.
    json_path, png_path : str
        Written atomically.
    min_valid_fraction : float

    Returns
    -------
    dict, the JSON content.
    """
    scored = pd.concat([score_regions(pd.read_parquet(q), pd.read_parquet(t), min_valid_fraction)
                        for q, t in zip(quality_paths, truth_paths)], ignore_index=True)
    models = _summary(scored)
    per_tile = {t: _accuracies(g) | {"n_regions": len(g)} for t, g in scored.groupby("tile_id")}
    wrong = scored[scored["quality_class"] != scored["truth"]]
    acc = {n: models[n]["accuracy"] for n in MODEL_COLUMNS}
    result = {
        "accuracy_m1": acc["m1"],
        "accuracy_m2": acc["m2"],
        "accuracy_m3": acc["m3"],
        "classes": list(QUALITY_CLASSES),
        "confusion_matrix": models["m3"]["confusion_matrix"],
        "confusion_matrix_axes": "rows: true class, columns: M3 class, in 'classes' order",
        "per_class": models["m3"]["per_class"],
        "models": models,
        "n_regions": int(len(scored)),
        "n_tiles": int(scored["tile_id"].nunique()),
        "min_valid_fraction": min_valid_fraction,
        "truth_counts": {c: int((scored["truth"] == c).sum()) for c in QUALITY_CLASSES},
        "mixed_regions": int((scored["secondary_class"].fillna("") != "").sum()),
        "tiles": per_tile,
        "accuracy_by_sky": accuracy_by_sky(scored),
        "misclassified_m3": [{"region_id": r.region_id, "truth": r.truth, "secondary": r.secondary_class or "",
                              "m3": r.quality_class, "m1": r.quality_class_m1, "m2": r.quality_class_m2}
                             for r in wrong.itertuples()],
        "goals": {
            "accuracy_m3": {"rule": f">= {GOAL_ACCURACY_M3}", "passed": bool(acc["m3"] >= GOAL_ACCURACY_M3)},
            "m3_beats_m1_and_m2": {"rule": "accuracy_m3 > accuracy_m1 and accuracy_m3 > accuracy_m2",
                                   "passed": bool(acc["m3"] > acc["m1"] and acc["m3"] > acc["m2"])},
        },
    }
    log.info("quality on %d held-out regions of %d tile(s): M1 %.4f, M2 %.4f, M3 %.4f", len(scored),
             result["n_tiles"], acc["m1"], acc["m2"], acc["m3"])
    for name, g in result["accuracy_by_sky"].items():
        log.info("  %s regions (%d): M1 %.4f, M2 %.4f, M3 %.4f", name, g["n_regions"], g["accuracy_m1"],
                 g["accuracy_m2"], g["accuracy_m3"])
    tmp = Path(json_path).with_name(Path(json_path).name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    _plot(models, len(scored), png_path)
    os.replace(tmp, json_path)
    return result


def _plot(models, n, png_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8), constrained_layout=True)
    labels = [c.replace("_", "\n") for c in QUALITY_CLASSES]
    for ax, (name, m) in zip(axes, models.items()):
        cm = np.asarray(m["confusion_matrix"])
        ax.imshow(cm, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set(xlabel=f"{name.upper()} class", ylabel="true class",
               title=f"{name.upper()}: accuracy {m['accuracy']:.3f} ({n} regions)")
    tmp = Path(png_path).with_name(Path(png_path).name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, png_path)
