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

import collections
import concurrent.futures
import hashlib
import json
import logging
import multiprocessing
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
from ..noise import clipped_rms
from ..sources import edge_contacts, ir_background, ir_host, ir_matched_filter
from ..tileio import FWHM_PER_SIGMA, gaussian_sigma_pixels
from .peaks import PEAK_COUNT_ERROR, count_peaks, peak_class_probs
from .train import load_model_file

__all__ = ["model_id", "detect_batch", "infer_shard"]

log = logging.getLogger(__name__)


COMPACT_CLASSES = ("1C_1P", "R")  # single-component classes of the schemes: hosts at the radio position


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
def detect_batch(model, images, device, *, amp=True, paste=True):
    """
    Run the detector on fused images.

    Parameters
    ----------
    model : MaskRCNN in eval mode, built for the images' size (no resizing)
    images : list of 3D float32 ndarray, ``(3, size, size)``
    device : torch.device
    amp : bool
        Mixed precision (CUDA only).
    paste : bool
        Paste each mask into the cutout (torchvision's postprocessing), or return the mask
        head's ``(M, M)`` masks for `paste_masks` to paste later, elsewhere: a GPU then copies
        M² instead of size² values per detection to the host.

    Returns
    -------
    list of dict of numpy arrays: ``boxes`` (n, 4) x1 y1 x2 y2 cutout pixels, ``labels`` (n,)
    (1-based), ``scores`` (n,), ``probs`` (n, classes), ``masks`` (n, size, size) soft masks,
    or (n, M, M) unpasted.
    """
    batch = [torch.from_numpy(im).to(device) for im in images]
    transform = model.transform
    if not paste:  # images are not resized, so the postprocessing would only paste the masks
        transform.postprocess = _unpasted
    try:
        with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
            outputs = model(batch)
    finally:
        if not paste:
            del transform.postprocess
    return [{"boxes": o["boxes"].float().cpu().numpy(), "labels": o["labels"].cpu().numpy(),
             "scores": o["scores"].float().cpu().numpy(), "probs": o["probs"].float().cpu().numpy(),
             "masks": o["masks"][:, 0].float().cpu().numpy()} for o in outputs]


def _unpasted(result, image_shapes, original_image_sizes):
    return result


def paste_masks(out, shape):
    """
    `detect_batch` output with its unpasted ``(n, M, M)`` masks pasted into ``shape`` cutouts,
    by torchvision's own `paste_masks_in_image` (as the model's postprocessing does).
    """
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    masks = out["masks"]
    if masks.shape[1:] == tuple(shape):
        return out
    if len(masks) == 0:
        return {**out, "masks": np.zeros((0, *shape), dtype=np.float32)}
    pasted = paste_masks_in_image(torch.from_numpy(masks)[:, None], torch.from_numpy(out["boxes"]), tuple(shape),
                                  padding=1)
    return {**out, "masks": pasted[:, 0].numpy()}


def _mask_window(box, shape):
    """
    Slice of a cutout that holds all of a detection's pasted mask.

    torchvision pastes each 28 x 28 mask into its box enlarged by (28 + 2) / 28 (plus one pixel
    of interpolation): a window of the box enlarged by 15 % and 2 px holds every nonzero pixel,
    so thresholds, extents and encodings need not scan the whole cutout.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    mx, my = 0.075 * (x2 - x1) + 2, 0.075 * (y2 - y1) + 2
    ny, nx = shape
    ya, yb = max(int(np.floor(y1 - my)), 0), min(int(np.ceil(y2 + my)) + 1, ny)
    xa, xb = max(int(np.floor(x1 - mx)), 0), min(int(np.ceil(x2 + mx)) + 1, nx)
    return max(min(ya, ny - 1), 0), max(yb, 1), max(min(xa, nx - 1), 0), max(xb, 1)


def _mask_peaks(radio, crop, y0, x0, noise, beam_fwhm):
    """
    `count_peaks` of the radio in a mask ``crop`` whose first pixel is cutout pixel (x0, y0),
    on a window padded by a beam so that maxima at the mask's edge are judged against their
    surroundings; -1 when the noise or the beam is unknown.
    """
    if not (np.isfinite(noise) and noise > 0 and np.isfinite(beam_fwhm) and beam_fwhm > 0):
        return -1
    pad = int(np.ceil(beam_fwhm))
    ny, nx = radio.shape
    ya, xa = max(y0 - pad, 0), max(x0 - pad, 0)
    yb, xb = min(y0 + crop.shape[0] + pad, ny), min(x0 + crop.shape[1] + pad, nx)
    window = np.zeros((yb - ya, xb - xa), dtype=bool)
    window[y0 - ya : y0 - ya + crop.shape[0], x0 - xa : x0 - xa + crop.shape[1]] = crop
    return count_peaks(radio[ya:yb, xa:xb], window, noise, beam_fwhm)


def _rows(out, radio, ir, cutout_id, tile_id, x0, y0, categories, host_min_score=0.0, host_psf_sigma=0.0,
          beam_sigma=None, recount_peaks=False, peak_count_error=PEAK_COUNT_ERROR):
    """
    DETECTIONS rows of one cutout's detector output, its masks `_windowed` (IR host for scores
    >= ``host_min_score``, searched in the IR `ir_matched_filter`-ed with ``host_psf_sigma`` px,
    `ir_host`'s prior sized by the source deconvolved by ``beam_sigma`` px, at least the PSF's
    sigma or 1 px). The radio peaks in each mask are counted (`count_peaks`, beam of
    ``beam_sigma`` px; -1 when it is unknown) and, with ``recount_peaks``, the class
    probabilities updated by them (`peak_class_probs` with ``peak_count_error``);
    ``model_probs`` keeps the detector's own.
    """
    rows = []
    nan = ~np.isfinite(radio)
    nan_near = ndimage.binary_dilation(nan, iterations=1) if nan.any() else nan
    background = None
    order = np.argsort(-out["scores"], kind="stable")
    shape = radio.shape
    beam_fwhm = beam_sigma * FWHM_PER_SIGMA if beam_sigma else np.nan
    noise = clipped_rms(radio[::2, ::2]) if np.isfinite(beam_fwhm) and len(order) else np.nan
    for k, j in enumerate(order):
        (ya, yb, xa, xb), soft_w = out["masks"][j]
        binary_w = soft_w >= 0.5
        if not binary_w.any() and soft_w.size and soft_w.max() > 0:
            binary_w = soft_w >= 0.5 * soft_w.max()
        if binary_w.any():
            ys, xs = np.nonzero(binary_w.any(axis=1))[0], np.nonzero(binary_w.any(axis=0))[0]
            my0, my1, mx0, mx1 = ya + ys[0], ya + ys[-1] + 1, xa + xs[0], xa + xs[-1] + 1
            crop = binary_w[my0 - ya : my1 - ya, mx0 - xa : mx1 - xa]
        else:  # nothing above half the peak: the box stands for the mask
            bx = out["boxes"][j]
            mx0, my0 = int(np.floor(bx[0])), int(np.floor(bx[1]))
            mx1, my1 = max(int(np.ceil(bx[2])), mx0 + 1), max(int(np.ceil(bx[3])), my0 + 1)
            mx0, my0 = min(max(mx0, 0), shape[1] - 1), min(max(my0, 0), shape[0] - 1)
            mx1, my1 = min(max(mx1, mx0 + 1), shape[1]), min(max(my1, my0 + 1), shape[0])
            crop = np.ones((my1 - my0, mx1 - mx0), dtype=bool)
        n_peaks = _mask_peaks(radio, crop, my0, mx0, noise, beam_fwhm)
        model_probs = out["probs"][j].astype(np.float32)
        probs = peak_class_probs(model_probs, categories, n_peaks, peak_count_error) \
            if recount_peaks and n_peaks >= 0 else model_probs
        label, score = int(np.argmax(probs)), float(probs.max())
        hx = hy = hscore = np.nan
        if ir is not None and score >= host_min_score:
            if background is None:  # once per cutout
                ir = ir_matched_filter(ir, host_psf_sigma)
                background = ir_background(ir)
            binary, soft = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=np.float32)
            binary[my0:my1, mx0:mx1] = crop
            soft[ya:yb, xa:xb] = soft_w
            compact = categories[label] in COMPACT_CLASSES  # an extended one may be a lobe
            hx, hy, hscore = ir_host(ir, soft, binary, background=background, radio=radio,
                                     beam_sigma=beam_sigma if compact else None,
                                     min_prior_sigma=max(1.0, host_psf_sigma))
        b = out["boxes"][j]
        rows.append({
            "detection_id": f"{cutout_id}_d{k:03d}", "cutout_id": cutout_id, "tile_id": tile_id,
            "box_x_min": b[0], "box_y_min": b[1], "box_x_max": b[2], "box_y_max": b[3],
            "tile_box_x_min": b[0] + x0, "tile_box_y_min": b[1] + y0,
            "tile_box_x_max": b[2] + x0, "tile_box_y_max": b[3] + y0,
            "morph_class": categories[label], "score": score, "class_probs": probs, "model_probs": model_probs,
            "n_peaks": n_peaks,
            "mask_x_min": int(mx0 + x0), "mask_y_min": int(my0 + y0),
            "mask_rle": encode_mask(crop), "mask_npix": int(crop.sum()),
            "edges": edge_contacts(crop, (my0, mx0), shape), "touches_nan": bool((crop & nan_near[my0:my1, mx0:mx1]).any()),
            "host_x": hx + x0 if np.isfinite(hx) else np.nan, "host_y": hy + y0 if np.isfinite(hy) else np.nan,
            "host_score": hscore,
        })
    return rows


class _Done:
    """A finished computation with the interface of a future."""

    def __init__(self, value):
        self._value = value

    def result(self):
        return self._value


def _run_now(fn, *args):
    return _Done(fn(*args))


def _worker_init():
    torch.set_num_threads(1)


def _fuse_range(shard_path, start, stop, mode, fill):
    """Fused images ``(n, 3, size, size)`` float32 of the cutouts ``start:stop`` of a shard."""
    with h5py.File(shard_path, "r") as f:
        radio = f["radio"][start:stop]
        ir = f["ir"][start:stop] if "ir" in f else [None] * len(radio)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingIRWarning)  # logged once by infer_shard
        return np.stack([fuse(r, i, mode, fill=fill) for r, i in zip(radio, ir)])


def _windowed(out):
    """
    One cutout's pasted detector output with each soft mask cut to `_mask_window` of its box
    (``masks`` becomes a list of (window, view)): `_rows` then scans windows, not cutouts.
    """
    shape = out["masks"].shape[1:]
    windows = [_mask_window(box, shape) for box in out["boxes"]]
    return {**out, "masks": [(w, out["masks"][j][w[0] : w[1], w[2] : w[3]]) for j, w in enumerate(windows)]}


def _rows_range(shard_path, start, outs, ids, tile_id, x_min, y_min, categories, host_min_score, host_psf_sigma,
                beam_sigma, recount_peaks, peak_count_error):
    """
    DETECTIONS rows of the cutouts ``start:start + len(outs)`` of a shard: their unpasted
    `detect_batch` outputs pasted, windowed and turned into `_rows`.
    """
    with h5py.File(shard_path, "r") as f:
        radio = f["radio"][start : start + len(outs)]
        ir = f["ir"][start : start + len(outs)] if "ir" in f else [None] * len(outs)
    rows = []
    for j, out in enumerate(outs):
        out = _windowed(paste_masks(out, radio[j].shape))
        rows += _rows(out, radio[j], ir[j], ids[j], tile_id, int(x_min[j]), int(y_min[j]), categories,
                      host_min_score, host_psf_sigma, beam_sigma, recount_peaks, peak_count_error)
    return rows


def infer_shard(shard_path, model_path, out_path, *, batch_size=8, device="auto", amp=True,
                host_min_score=0.0, host_ir_psf_fwhm=0.0, recount_peaks=True, peak_count_error=PEAK_COUNT_ERROR,
                workers=0):
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
    host_min_score : float
        IR hosts are looked for only for detections scoring at least this (the merge makes
        sources of those alone: ``detection.source_min_score``); the others get NaN hosts.
    host_ir_psf_fwhm : float
        FWHM of the infrared PSF (arcsec; WISE W1: 6.1): hosts are searched in the IR smoothed
        by it (`skysift.sources.ir_matched_filter`); 0 searches the IR as it is.
    recount_peaks : bool
        Update each detection's class probabilities by the radio peaks counted in its mask
        (`skysift.detection.peaks`; RGZ classes only, as CLARAN recommends); ``model_probs``
        keeps the detector's own.
    peak_count_error : float
        Probability that the count misses the true number of peaks (`peak_class_probs`).
    workers : int
        Processes that read and fuse the cutouts ahead of the model and turn its output into
        rows (0: all in this process). A GPU outruns one CPU core at this: give it several.
        The rows do not depend on it.

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
    t0 = time.perf_counter()
    with h5py.File(shard_path, "r") as f:
        attrs = dict(f.attrs)
        n = f["radio"].shape[0]
        if mode != "radio" and "ir" not in f:
            log.warning("%s: no infrared in the shard; fusion %r falls back to radio only", shard_path, mode)
        ids = [c.decode() if isinstance(c, bytes) else str(c) for c in f["cutout_id"][:]]
        x_min, y_min = f["x_min"][:], f["y_min"][:]
    tile_id = str(attrs["tile_id"])
    host_psf_sigma = gaussian_sigma_pixels(host_ir_psf_fwhm, str(attrs["wcs_header"])) if host_ir_psf_fwhm > 0 else 0.0
    bmaj = float(attrs.get("bmaj_arcsec", np.nan))  # the host prior's beam; unknown: sized by the mask
    beam_sigma = gaussian_sigma_pixels(bmaj, str(attrs["wcs_header"])) if np.isfinite(bmaj) else None
    starts = list(range(0, n, batch_size))
    pool = None
    if workers > 0:  # fork: a script run by Snakemake has no __main__ guard; workers never touch CUDA
        pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                                      initializer=_worker_init)
    try:
        run = pool.submit if pool is not None else _run_now
        fused = collections.deque(run(_fuse_range, str(shard_path), b, b + batch_size, mode, fill)
                                  for b in starts[: max(2, 2 * workers)])
        submitted, pending, rows = len(fused), [], []
        for b in starts:
            images = fused.popleft().result()
            if submitted < len(starts):  # keep the queue of fused batches full
                nb = starts[submitted]
                fused.append(run(_fuse_range, str(shard_path), nb, nb + batch_size, mode, fill))
                submitted += 1
            outs = detect_batch(model, list(images), dev, amp=amp, paste=False)
            pending.append(run(_rows_range, str(shard_path), b, outs, ids[b : b + batch_size], tile_id,
                               x_min[b : b + batch_size], y_min[b : b + batch_size], categories, host_min_score,
                               host_psf_sigma, beam_sigma, recount_peaks, peak_count_error))
        for fut in pending:
            rows += fut.result()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    seconds = time.perf_counter() - t0
    rate = n / seconds if seconds > 0 else float("nan")
    table = pd.DataFrame(rows, columns=[c.name for c in DETECTIONS])
    metadata = {"tile_id": str(attrs["tile_id"]), "shard": str(attrs["shard"]), "model_id": mid,
                "categories": json.dumps(categories), "fusion": mode, "wcs_header": str(attrs["wcs_header"]),
                "device": str(dev), "cutouts_per_s": f"{rate:.3f}", "recount_peaks": json.dumps(bool(recount_peaks)),
                "peak_count_error": json.dumps(float(peak_count_error))}
    write_parquet(table, DETECTIONS, out_path, metadata)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    log.info("%s: %d cutouts, %d detections in %.1f s: %.2f cutouts/s on %s (%s, %d threads)", shard_path, n,
             len(table), seconds, rate, dev, name, torch.get_num_threads())
    return {"n_cutouts": n, "n_detections": len(table), "seconds": seconds, "cutouts_per_s": rate,
            "device": str(dev)}
