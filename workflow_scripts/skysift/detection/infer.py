"""
Batched inference of the detector over one cutout shard.

Each cutout of ``results/cutouts/{tile}/shard-{k}.h5`` is fused exactly as in training (the
mode and d4 fill are read from the model file), batches go through the Mask R-CNN (GPU when
present, mixed precision there), and every detection becomes one row of the
`skysift.columns.DETECTIONS` contract: its box in cutout and tile pixels, class, score, class
probabilities, mask as COCO RLE, edge and NaN contacts, and its infrared host candidate
(`skysift.sources.ir_host` on the soft mask). The tile's celestial WCS header, the model id
and the throughput go into the Parquet file metadata.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings

import h5py
import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from ..catalogue import write_parquet
from ..columns import DETECTIONS
from ..fusion import MissingIRWarning, fuse
from ..masks import encode_mask
from ..sources import edge_contacts, ir_background, ir_host
from .train import load_model_file

__all__ = ["model_id", "detect_batch", "infer_shard"]

log = logging.getLogger(__name__)


def model_id(path, meta=None):
    """
    The model's id: `skysift.detection.train.model_digest` of its weights and settings, as stored
    in the model file (the SHA-256 of the file for a file without one).
    """
    if meta is not None and meta.get("model_id"):
        return meta["model_id"]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _pick_device(device):
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.inference_mode()
def detect_batch(model, images, device, *, amp=True):
    """
    Run the detector on fused images.

    Parameters
    ----------
    model : MaskRCNN in eval mode
    images : list of 3D float32 ndarray, ``(3, size, size)``
    device : torch.device
    amp : bool
        Mixed precision (CUDA only).

    Returns
    -------
    list of dict of numpy arrays: ``boxes`` (n, 4) x1 y1 x2 y2 cutout pixels, ``labels`` (n,)
    (1-based), ``scores`` (n,), ``probs`` (n, classes), ``masks`` (n, size, size) soft masks.
    """
    batch = [torch.from_numpy(im).to(device) for im in images]
    with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
        outputs = model(batch)
    return [{"boxes": o["boxes"].float().cpu().numpy(), "labels": o["labels"].cpu().numpy(),
             "scores": o["scores"].float().cpu().numpy(), "probs": o["probs"].float().cpu().numpy(),
             "masks": o["masks"][:, 0].float().cpu().numpy()} for o in outputs]


def _rows(out, radio, ir, cutout_id, tile_id, x0, y0, categories):
    """DETECTIONS rows of one cutout's detector output."""
    rows = []
    nan = ~np.isfinite(radio)
    nan_near = ndimage.binary_dilation(nan, iterations=1) if nan.any() else nan
    background = ir_background(ir) if ir is not None else None
    order = np.argsort(-out["scores"], kind="stable")
    for k, j in enumerate(order):
        soft = out["masks"][j]
        binary = soft >= 0.5
        if not binary.any():
            binary = soft >= 0.5 * soft.max() if soft.max() > 0 else np.zeros_like(binary)
        if binary.any():
            ys, xs = np.nonzero(binary.any(axis=1))[0], np.nonzero(binary.any(axis=0))[0]
            my0, my1, mx0, mx1 = ys[0], ys[-1] + 1, xs[0], xs[-1] + 1
        else:  # nothing above half the peak: the box stands for the mask
            bx = out["boxes"][j]
            mx0, my0 = int(np.floor(bx[0])), int(np.floor(bx[1]))
            mx1, my1 = max(int(np.ceil(bx[2])), mx0 + 1), max(int(np.ceil(bx[3])), my0 + 1)
            binary = np.zeros_like(binary)
            binary[my0:my1, mx0:mx1] = True
        hx, hy, hscore = ir_host(ir, soft, binary, background=background, radio=radio) if ir is not None else \
            (np.nan,) * 3
        b = out["boxes"][j]
        rows.append({
            "detection_id": f"{cutout_id}_d{k:03d}", "cutout_id": cutout_id, "tile_id": tile_id,
            "box_x_min": b[0], "box_y_min": b[1], "box_x_max": b[2], "box_y_max": b[3],
            "tile_box_x_min": b[0] + x0, "tile_box_y_min": b[1] + y0,
            "tile_box_x_max": b[2] + x0, "tile_box_y_max": b[3] + y0,
            "morph_class": categories[int(out["labels"][j]) - 1], "score": out["scores"][j],
            "class_probs": out["probs"][j].astype(np.float32),
            "mask_x_min": int(mx0 + x0), "mask_y_min": int(my0 + y0),
            "mask_rle": encode_mask(binary[my0:my1, mx0:mx1]), "mask_npix": int(binary.sum()),
            "edges": edge_contacts(binary), "touches_nan": bool((binary & nan_near).any()),
            "host_x": hx + x0 if np.isfinite(hx) else np.nan, "host_y": hy + y0 if np.isfinite(hy) else np.nan,
            "host_score": hscore,
        })
    return rows


def infer_shard(shard_path, model_path, out_path, *, batch_size=8, device="auto", amp=True):
    """
    Detections of every cutout of one shard, written to Parquet.

    Parameters
    ----------
    shard_path : str
        Shard HDF5 (`skysift.cutouts.write_shards` layout).
    model_path : str
        Model file written by `skysift.detection.train.train`.
    out_path : str
        Output Parquet (`skysift.columns.DETECTIONS`), written whole or not at all.
    batch_size : int
        Cutouts per forward pass.
    device : str
        ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
    amp : bool
        Mixed precision on CUDA.

    Returns
    -------
    dict
        ``n_cutouts``, ``n_detections``, ``seconds``, ``cutouts_per_s``, ``device``.
    """
    dev = _pick_device(device)
    model, meta = load_model_file(model_path, dev)
    categories = meta["categories"]
    mode, fill = meta["fusion"]["mode"], meta["fusion"]["fill"]
    mid = model_id(model_path, meta)
    rows = []
    t0 = time.perf_counter()
    with h5py.File(shard_path, "r") as f:
        attrs = dict(f.attrs)
        n = f["radio"].shape[0]
        has_ir = "ir" in f
        if mode != "radio" and not has_ir:
            log.warning("%s: no infrared in the shard; fusion %r falls back to radio only", shard_path, mode)
        ids = [c.decode() if isinstance(c, bytes) else str(c) for c in f["cutout_id"][:]]
        x_min, y_min = f["x_min"][:], f["y_min"][:]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MissingIRWarning)  # logged once above
            for b in range(0, n, batch_size):
                radio = f["radio"][b : b + batch_size]
                ir = f["ir"][b : b + batch_size] if has_ir else [None] * len(radio)
                images = [fuse(r, i, mode, fill=fill) for r, i in zip(radio, ir)]
                outs = detect_batch(model, images, dev, amp=amp)
                for j, out in enumerate(outs):
                    k = b + j
                    rows += _rows(out, radio[j], ir[j], ids[k], str(attrs["tile_id"]), int(x_min[k]), int(y_min[k]),
                                  categories)
    seconds = time.perf_counter() - t0
    rate = n / seconds if seconds > 0 else float("nan")
    table = pd.DataFrame(rows, columns=[c.name for c in DETECTIONS])
    metadata = {"tile_id": str(attrs["tile_id"]), "shard": str(attrs["shard"]), "model_id": mid,
                "categories": json.dumps(categories), "fusion": mode, "wcs_header": str(attrs["wcs_header"]),
                "device": str(dev), "cutouts_per_s": f"{rate:.3f}"}
    write_parquet(table, DETECTIONS, out_path, metadata)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    log.info("%s: %d cutouts, %d detections in %.1f s: %.2f cutouts/s on %s (%s, %d threads)", shard_path, n,
             len(table), seconds, rate, dev, name, torch.get_num_threads())
    return {"n_cutouts": n, "n_detections": len(table), "seconds": seconds, "cutouts_per_s": rate,
            "device": str(dev)}
