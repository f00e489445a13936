"""
Training of the detector, after torchvision's references/detection (train.py, engine.py).

`train` runs top to bottom: distributed setup, data, model, optimizer with differential
learning rates, AMP scaler (GPU only), warm-up + cosine schedule, resume, epochs. It is
resumable: every ``checkpoint_every`` steps and at the end of every epoch, rank 0 writes a
checkpoint (model, optimizer, scheduler, scaler, RNG, epoch, step, running losses) to
``checkpoint_dir`` (written to a temporary file, then renamed, so a kill mid-write leaves the
previous one), and a restarted training continues from the last checkpoint whose settings match.
The data order and every augmentation are functions of (seed, epoch, index), so a resumed run
reproduces an uninterrupted one on CPU.

Launched by ``torchrun --nproc_per_node N -m skysift.detection.train settings.json`` it runs
DistributedDataParallel (NCCL on GPUs, gloo on CPU): each rank takes every N-th cutout of the
epoch's permutation, gradients are averaged, rank 0 validates and writes.

Augmentations are the physically sensible ones of Farias et al. (2020): flips, rotations by
multiples of 90 degrees, and added beam-correlated noise; no colour or intensity jitter.

Per epoch, rank 0 appends the mean losses and the validation box/mask mAP50 (pycocotools, on a
held-out fraction of the training cutouts) to a CSV and redraws a PNG of the curves.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch
from scipy import ndimage

from ..fusion import fill_values, fuse
from ..masks import decode_mask
from ..noise import clipped_rms
from .labels import read_training_set
from .model import ModelSettings, build_model, load_initial_weights, parameter_groups

__all__ = ["TrainSettings", "CutoutSet", "augment", "repeat_factors", "epoch_order", "train", "settings_digest",
           "settings_from_config",
           "model_file_content", "model_digest", "load_model_file", "main"]

log = logging.getLogger(__name__)

LOSS_NAMES = ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg")


@dataclass(frozen=True)
class TrainSettings:
    """
    Everything a training run depends on (a plain dict of it goes into every checkpoint).

    Attributes
    ----------
    train_sets : tuple of str
        COCO JSON files of the training sets (`skysift.detection.labels`).
    out : str
        Final model file (rank 0 writes it whole at the end).
    checkpoint_dir : str
        Folder of the resumable checkpoints (not a declared output: it survives a killed job).
    metrics_csv, curves_png : str
        Per-epoch losses and validation metrics, and their plot.
    model : dict
        `skysift.detection.model.ModelSettings` fields except ``size`` and ``num_classes``,
        which come from the training sets.
    fusion : str
        `skysift.fusion.fuse` mode.
    epochs, batch_size : int
        Batch size per process.
    optimizer : {'sgd', 'adamw'}
    lr, momentum, weight_decay : float
        Top-layer learning rate, SGD momentum, weight decay.
    low_layer_lr_factor : float
        Differential learning rates: see `skysift.detection.model.parameter_groups`.
    warmup_steps : int
        Linear warm-up (within the first epoch), then cosine decay to 0 at the last step.
    val_fraction : float
        Fraction of the training cutouts held out for validation (chosen by the seed).
    augment : bool
        Flips and 90-degree rotations.
    noise_augment : float
        Half the cutouts get beam-correlated noise of up to this times the cutout's rms.
    repeat_threshold : float
        Repeat-factor sampling (Gupta et al. 2019, LVIS): a cutout is seen
        ``max(1, sqrt(t / f))`` times per epoch on average, ``f`` being the fraction of training
        cutouts holding its rarest class (0: every cutout once).
    checkpoint_every : int
        Steps between checkpoints (also one at the end of every epoch).
    seed : int
    initial_weights : str or None
        Local weights file (never a download).
    device : str
        ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
    amp : bool
        Mixed precision on CUDA (ignored on CPU).
    threads : int
        torch intra-op threads.
    max_minutes : float
        Wall-clock guard (0: none): training stops at the end of the first epoch that ends past
        this many minutes of training and writes its model (the learning rate has then not
        decayed to 0; the metrics CSV says which epoch it reached).
    workers : int
        Data-loading processes per training process (0: in the training process). Cutouts are
        read, augmented and fused there while the model trains; the result does not depend on it.
    """

    train_sets: tuple
    out: str
    checkpoint_dir: str
    metrics_csv: str
    curves_png: str
    model: dict = field(default_factory=dict)
    fusion: str = "radio"
    epochs: int = 6
    batch_size: int = 4
    optimizer: str = "adamw"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    low_layer_lr_factor: float = 0.5
    warmup_steps: int = 50
    val_fraction: float = 0.1
    augment: bool = True
    noise_augment: float = 0.5
    repeat_threshold: float = 0.0
    checkpoint_every: int = 50
    seed: int = 0
    initial_weights: str | None = None
    device: str = "auto"
    amp: bool = True
    threads: int = 1
    workers: int = 0
    max_minutes: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "train_sets", tuple(str(p) for p in self.train_sets))
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.checkpoint_every < 1:
            raise ValueError(f"epochs, batch_size and checkpoint_every must be positive, got {self.epochs!r}, "
                             f"{self.batch_size!r}, {self.checkpoint_every!r}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must lie in [0, 1), got {self.val_fraction!r}")


def settings_digest(cfg):
    """16 hex digits identifying what a checkpoint continues (paths, threads, device aside)."""
    d = {k: v for k, v in asdict(cfg).items() if k not in ("out", "checkpoint_dir", "metrics_csv", "curves_png",
                                                            "threads", "device", "workers", "max_minutes")}
    d["train_sets"] = sorted(Path(p).name + ":" + Path(p).parent.name for p in cfg.train_sets)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- data


class CutoutSet:
    """
    Training cutouts of one or more training sets, read lazily from their HDF5 files.

    Parameters
    ----------
    json_paths : sequence of str
        COCO JSON files sharing one class scheme and cutout size.

    Attributes
    ----------
    categories : list of str
        Class names (label ``k + 1`` is ``categories[k]``).
    size : int
    items : list of (h5_path, index, annotations, beam_sigma_px)
    """

    def __init__(self, json_paths):
        self.items, self.categories, self.size = [], None, None
        self._files = {}
        for p in json_paths:
            doc, h5_path = read_training_set(p)
            cats = [c["name"] for c in sorted(doc["categories"], key=lambda c: c["id"])]
            if self.categories is None:
                self.categories = cats
            elif cats != self.categories:
                raise ValueError(f"{p}: categories {cats} differ from {self.categories} of the other training sets")
            with h5py.File(h5_path, "r") as f:
                size = int(f.attrs["size"])
                beam_sigma = _beam_sigma_px(f.attrs)
                self.has_ir = bool(f.attrs.get("has_ir", False)) and getattr(self, "has_ir", True)
            if self.size not in (None, size):
                raise ValueError(f"{p}: cutout size {size} differs from {self.size} of the other training sets")
            self.size = size
            by_image = {}
            for a in doc["annotations"]:
                by_image.setdefault(a["image_id"], []).append(a)
            for im in sorted(doc["images"], key=lambda im: im["id"]):
                self.items.append((str(h5_path), int(im["index"]), by_image.get(im["id"], []), beam_sigma))
        if not self.items:
            raise ValueError(f"no training cutout in {list(json_paths)}")

    def __len__(self):
        return len(self.items)

    def _file(self, path):
        if path not in self._files:
            self._files[path] = h5py.File(path, "r")
        return self._files[path]

    def raw(self, i):
        """
        Radio ``(size, size)`` Jy/beam, IR (same grid) or None, masks ``(n, size, size)`` bool, labels ``(n,)``.
        """
        path, index, anns, _ = self.items[i]
        f = self._file(path)
        radio = f["radio"][index]
        ir = f["ir"][index] if "ir" in f else None
        masks = np.stack([decode_mask(json.dumps(a["segmentation"])) for a in anns]) if anns else \
            np.zeros((0, self.size, self.size), dtype=bool)
        labels = np.array([a["category_id"] for a in anns], dtype=np.int64)
        return radio, ir, masks, labels

    def beam_sigma_px(self, i):
        return self.items[i][3]


def _beam_sigma_px(attrs):
    """Beam sigma in pixels from a shard's attributes (NaN when unknown)."""
    from ..tileio import gaussian_sigma_pixels

    try:
        return gaussian_sigma_pixels(np.sqrt(attrs["bmaj_arcsec"] * attrs["bmin_arcsec"]), str(attrs["wcs_header"]))
    except (KeyError, ValueError):
        return float("nan")


def augment(radio, ir, masks, rng, *, geometric=True, noise=0.0, beam_sigma_px=float("nan")):
    """
    Physically sensible augmentation of one cutout (Farias et al. 2020).

    Parameters
    ----------
    radio : 2D ndarray, ``(ny, nx)`` (Jy/beam)
    ir : 2D ndarray or None, same shape
    masks : 3D bool ndarray, ``(n, ny, nx)``
    rng : numpy.random.Generator
    geometric : bool
        Random flips (left-right, up-down) and rotation by 0, 90, 180 or 270 degrees.
    noise : float
        With probability 1/2, add Gaussian noise correlated on the beam scale with an rms drawn
        uniformly in ``[0, noise]`` times the cutout's MAD-clipped rms.
    beam_sigma_px : float
        Beam sigma (pixels) of the added noise; white noise when NaN.

    Returns
    -------
    radio, ir, masks : transformed copies (the same transform for all three).
    """
    k, flip_lr, flip_ud = (int(rng.integers(4)), rng.random() < 0.5, rng.random() < 0.5) if geometric else (0, False,
                                                                                                            False)
    add_noise = noise > 0 and rng.random() < 0.5
    amp = rng.uniform(0, noise) if add_noise else 0.0
    seed = int(rng.integers(2**31))

    def geo(a, axes):
        a = np.rot90(a, k, axes=axes)
        if flip_lr:
            a = np.flip(a, axis=axes[1])
        if flip_ud:
            a = np.flip(a, axis=axes[0])
        return np.ascontiguousarray(a)

    radio = geo(radio, (0, 1))
    ir = geo(ir, (0, 1)) if ir is not None else None
    masks = geo(masks, (1, 2))
    if amp > 0:
        sigma = clipped_rms(radio[::2, ::2])
        if np.isfinite(sigma) and sigma > 0:
            white = np.random.default_rng(seed).standard_normal(radio.shape).astype(np.float32)
            if np.isfinite(beam_sigma_px) and beam_sigma_px > 0:
                white = ndimage.gaussian_filter(white, beam_sigma_px) * (2 * np.sqrt(np.pi) * beam_sigma_px)
            radio = radio + (amp * sigma * white).astype(np.float32)
    return radio, ir, masks


def _target(masks, labels):
    """torchvision target dict from boolean masks: boxes from the masks (x1, y1, x2, y2)."""
    n = len(masks)
    boxes = np.zeros((n, 4), dtype=np.float32)
    for j, m in enumerate(masks):
        ys, xs = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
        boxes[j] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    return {"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels),
            "masks": torch.from_numpy(masks.astype(np.uint8))}


def sample(data, i, cfg, fill, epoch=0, train=True, draw=0):
    """Fused image tensor and target of cutout ``i`` (augmented when ``train``, by (seed, epoch, i, draw))."""
    radio, ir, masks, labels = data.raw(i)
    if train:
        rng = np.random.default_rng([cfg.seed, epoch, i, draw])
        radio, ir, masks = augment(radio, ir, masks, rng, geometric=cfg.augment, noise=cfg.noise_augment,
                                   beam_sigma_px=data.beam_sigma_px(i))
    mode = cfg.fusion if ir is not None and data.has_ir else "radio"  # no IR: warned once, at the start
    image = torch.from_numpy(fuse(radio, ir, mode, fill=fill))
    return image, _target(masks, labels)


class _EpochBatches(torch.utils.data.Dataset):
    """Batch ``b`` of one epoch: the list of `sample` results of its cutouts (a DataLoader item)."""

    def __init__(self, data, order, cfg, fill, epoch):
        self.data, self.order, self.cfg, self.fill, self.epoch = data, order, cfg, fill, epoch

    def __len__(self):
        return len(self.order) // self.cfg.batch_size

    def __getitem__(self, b):
        first = b * self.cfg.batch_size
        return [sample(self.data, int(i), self.cfg, self.fill, self.epoch, draw=first + j)
                for j, i in enumerate(self.order[first : first + self.cfg.batch_size])]


def _as_is(item):
    return item


def _loader_worker_init(worker_id):
    """A data-loading process opens its own HDF5 handles and computes on one thread."""
    torch.set_num_threads(1)
    torch.utils.data.get_worker_info().dataset.data._files = {}


def epoch_batches(data, order, cfg, fill, epoch, start=0):
    """
    Iterator over the batches ``start, start + 1, ...`` of one epoch, made in ``cfg.workers``
    processes (in this one when 0); the same batches either way.
    """
    batches = _EpochBatches(data, order, cfg, fill, epoch)
    if cfg.workers <= 0:
        return (batches[b] for b in range(start, len(batches)))
    return iter(torch.utils.data.DataLoader(batches, batch_size=None, sampler=range(start, len(batches)),
                                            num_workers=cfg.workers, collate_fn=_as_is,
                                            worker_init_fn=_loader_worker_init, prefetch_factor=4))


# --------------------------------------------------------------------------- distributed helpers


def _dist_env():
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and "RANK" in os.environ:
        return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0"))
    return 0, 1, 0


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def _all_mean(values, world):
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return (t / world).tolist()


# --------------------------------------------------------------------------- checkpoints


def _checkpoint_path(cfg, world=1):
    """The checkpoint of these settings and this number of processes (the data order depends on both)."""
    suffix = f"-x{world}" if world > 1 else ""
    return Path(cfg.checkpoint_dir) / f"checkpoint-{settings_digest(cfg)}{suffix}.pt"


def save_checkpoint(path, state):
    """Write a checkpoint atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _resume(path, model, optimizer, scheduler, scaler):
    """Load the checkpoint if there is one; returns its bookkeeping dict or None."""
    if not Path(path).exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    _unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["lr_scheduler"])
    if scaler is not None and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"])
    return state


# --------------------------------------------------------------------------- validation


@torch.inference_mode()
def validate(model, data, indices, cfg, fill, device):
    """Box and mask mAP50 (pycocotools) of the model on held-out training cutouts."""
    from ..masks import encode_mask
    from .cocoeval import coco_average_precision

    model.eval()
    images, gt, dets = [], [], []
    for b in range(0, len(indices), cfg.batch_size):
        idx = indices[b : b + cfg.batch_size]
        batch = [sample(data, i, cfg, fill, train=False) for i in idx]
        outputs = model([img.to(device) for img, _ in batch])
        for i, (_, target), out in zip(idx, batch, outputs):
            images.append({"id": int(i), "width": data.size, "height": data.size})
            for box, label, m in zip(target["boxes"].tolist(), target["labels"].tolist(), target["masks"].numpy()):
                gt.append({"image_id": int(i), "category_id": int(label), "iscrowd": 0, "area": float(m.sum()),
                           "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                           "segmentation": json.loads(encode_mask(m.astype(bool)))})
            masks = (out["masks"][:, 0] >= 0.5).cpu().numpy()
            for box, label, score, m in zip(out["boxes"].tolist(), out["labels"].tolist(), out["scores"].tolist(),
                                            masks):
                dets.append({"image_id": int(i), "category_id": int(label), "score": float(score),
                             "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                             "segmentation": json.loads(encode_mask(m))})
    cats = [{"id": k + 1, "name": n} for k, n in enumerate(data.categories)]
    ap = coco_average_precision(images, gt, dets, cats)
    model.train()
    return ap["bbox"]["map50"], ap["segm"]["map50"]


# --------------------------------------------------------------------------- metrics files


def _write_metrics(history, csv_path, png_path):
    if not history:
        return
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = csv_path.with_name(csv_path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)
    os.replace(tmp, csv_path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for name in ("loss",) + LOSS_NAMES:
        ax[0].plot(epochs, [h[name] for h in history], "o-" if name == "loss" else ".-", label=name)
    ax[0].set(xlabel="epoch", ylabel="mean training loss", yscale="log")
    ax[0].legend(fontsize=7)
    for name in ("val_box_map50", "val_mask_map50"):
        ax[1].plot(epochs, [h[name] for h in history], "o-", label=name)
    ax[1].set(xlabel="epoch", ylabel="validation mAP50", ylim=(0, 1))
    ax[1].legend(fontsize=7)
    tmp_png = Path(png_path).with_name(Path(png_path).name + ".tmp.png")
    fig.savefig(tmp_png, dpi=100)
    plt.close(fig)
    os.replace(tmp_png, png_path)


# --------------------------------------------------------------------------- main loop


def _device(cfg, local_rank):
    if cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError(f"device {cfg.device!r} asked for, but CUDA is not available")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def repeat_factors(data, indices, threshold):
    """
    Repeat factor of each training cutout (LVIS repeat-factor sampling).

    Parameters
    ----------
    data : CutoutSet
    indices : 1D int ndarray
        The training cutouts.
    threshold : float
        ``t``: classes on fewer than this fraction of the cutouts are repeated.

    Returns
    -------
    1D float ndarray, ``max(1, max over the cutout's classes of sqrt(t / f_class))`` (1 without
    annotation or when ``threshold`` is 0).
    """
    cats = [{a["category_id"] for a in data.items[i][2]} for i in indices]
    if threshold <= 0 or not len(indices):
        return np.ones(len(indices))
    counts = {}
    for c in cats:
        for k in c:
            counts[k] = counts.get(k, 0) + 1
    freq = {k: v / len(indices) for k, v in counts.items()}
    return np.array([max([1.0] + [math.sqrt(threshold / freq[k]) for k in c]) for c in cats])


def epoch_order(train_idx, factors, seed, epoch):
    """
    The cutouts of one epoch: each repeated ``floor(r)`` or ``ceil(r)`` times (stochastic
    rounding of its repeat factor ``r``), shuffled; a function of (seed, epoch) only.
    """
    rng = np.random.default_rng([seed, epoch])
    reps = np.floor(factors).astype(int) + (rng.random(len(factors)) < factors - np.floor(factors))
    order = np.repeat(train_idx, reps)
    return order[rng.permutation(len(order))]


def _split(n, cfg):
    """Training and validation indices: a seeded permutation, the last val_fraction held out."""
    perm = np.random.default_rng([cfg.seed, 7]).permutation(n)
    n_val = int(round(cfg.val_fraction * n)) if n > 1 else 0
    return np.sort(perm[: n - n_val]), np.sort(perm[n - n_val :])


def train(cfg, *, on_step=None):
    """
    Train the detector; resume from the last checkpoint of the same settings if there is one.

    Parameters
    ----------
    cfg : TrainSettings
    on_step : callable, optional
        Called as ``on_step(global_step)`` after every optimizer step (tests use it to kill a run).

    Returns
    -------
    dict
        The final model file's content (also written to ``cfg.out`` by rank 0): ``model``
        (state dict), ``model_settings``, ``categories``, ``fusion`` (mode and d4 fill),
        ``training`` (the settings), ``history``.
    """
    previous = torch.are_deterministic_algorithms_enabled()
    try:
        return _train(cfg, on_step)
    finally:
        torch.use_deterministic_algorithms(previous)


def _train(cfg, on_step):
    """The body of `train`."""
    rank, world, local_rank = _dist_env()
    device = _device(cfg, local_rank)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    torch.set_num_threads(max(1, cfg.threads))
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    torch.manual_seed(cfg.seed)
    is_main = rank == 0

    data = CutoutSet(cfg.train_sets)
    train_idx, val_idx = _split(len(data), cfg)
    fill = None
    if cfg.fusion != "radio" and not data.has_ir:
        log.warning("fusion %r asked for, but the training cutouts have no infrared: radio only", cfg.fusion)
    elif cfg.fusion == "d4":  # training-set mean of the d3 images, stored with the model
        fill = fill_values(fuse(*data.raw(i)[:2], "d3") for i in train_idx)
    ms = ModelSettings(**{**cfg.model, "size": data.size, "num_classes": len(data.categories)})
    model = build_model(ms)
    if cfg.initial_weights:
        load_initial_weights(model, cfg.initial_weights)
    model.to(device)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[local_rank] if device.type == "cuda" else None, find_unused_parameters=True)

    groups = parameter_groups(_unwrap(model), cfg.lr, cfg.low_layer_lr_factor)
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    factors = repeat_factors(data, train_idx, cfg.repeat_threshold)
    # a fixed number of steps per epoch (the expected number of repeated cutouts), for resuming
    steps_per_epoch = max(1, int(factors.sum()) // (cfg.batch_size * world))
    total = steps_per_epoch * cfg.epochs
    warmup = min(cfg.warmup_steps, steps_per_epoch)

    def lr_lambda(step):
        if step < warmup:
            return 0.001 + (1 - 0.001) * step / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_amp else None

    ckpt = _checkpoint_path(cfg, world)
    state = _resume(ckpt, model, optimizer, scheduler, scaler)
    start_epoch, start_batch, step, history = 0, 0, 0, []
    sums, count, seconds = np.zeros(1 + len(LOSS_NAMES)), 0, 0.0  # running losses of the current epoch
    if state is not None:
        start_epoch, start_batch, step = state["epoch"], state["batch"], state["step"]
        history, sums, count, seconds = list(state["history"]), np.array(state["sums"]), state["count"], state["seconds"]
        log.info("resuming from checkpoint %s at epoch %d, batch %d (step %d of %d)", ckpt, start_epoch,
                 start_batch, step, total)
    else:
        log.info("training from %s: %d training + %d validation cutouts, %d steps of %d x %d cutouts, "
                 "classes %s, fusion %s, device %s", "the initial weights" if cfg.initial_weights else "scratch",
                 len(train_idx), len(val_idx), total, world, cfg.batch_size, data.categories, cfg.fusion, device)

    def checkpoint(epoch, batch):
        s = {"model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
             "lr_scheduler": scheduler.state_dict(), "epoch": epoch, "batch": batch, "step": step,
             "history": history, "sums": sums.tolist(), "count": count, "seconds": seconds,
             "rng": torch.get_rng_state(), "settings": json.loads(json.dumps(asdict(cfg)))}
        if scaler is not None:
            s["scaler"] = scaler.state_dict()
        save_checkpoint(ckpt, s)

    model.train()
    for epoch in range(start_epoch, cfg.epochs):
        order = epoch_order(train_idx, factors, cfg.seed, epoch)
        order = np.resize(order, steps_per_epoch * cfg.batch_size * world)[rank::world]
        first_batch = start_batch if epoch == start_epoch else 0
        batches = epoch_batches(data, order, cfg, fill, epoch, start=first_batch)
        for b in range(first_batch, steps_per_epoch):
            t0 = time.perf_counter()
            batch = next(batches)
            images = [img.to(device) for img, _ in batch]
            targets = [{k: v.to(device) for k, v in t.items()} for _, t in batch]
            with torch.autocast(device.type, enabled=use_amp):
                loss_dict = model(images, targets)
                loss = sum(loss_dict.values())
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"loss is {loss.item()} at step {step}: "
                                         f"{ {k: v.item() for k, v in loss_dict.items()} }")
            optimizer.zero_grad()
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            scheduler.step()
            step += 1
            sums += [loss.item()] + [loss_dict[n].item() for n in LOSS_NAMES]
            count += 1
            seconds += time.perf_counter() - t0
            if step % cfg.checkpoint_every == 0 and is_main:
                checkpoint(epoch, b + 1)
            if step % 10 == 0 and is_main:
                log.info("epoch %d step %d/%d loss %.4f (%s) lr %.2e", epoch, step, total, loss.item(),
                         " ".join(f"{k[5:]} {v.item():.3f}" for k, v in loss_dict.items()),
                         optimizer.param_groups[0]["lr"])
            if on_step is not None:
                on_step(step)
        means = _all_mean((sums / max(1, count)).tolist(), world)
        row = {"epoch": epoch, "step": step, "lr": optimizer.param_groups[0]["lr"], "seconds": round(seconds, 1),
               "loss": means[0], **dict(zip(LOSS_NAMES, means[1:]))}
        sums, count = np.zeros_like(sums), 0
        if is_main:
            box, mask = validate(_unwrap(model), data, val_idx, cfg, fill, device) if len(val_idx) else (np.nan,) * 2
            row.update(val_box_map50=box, val_mask_map50=mask)
            history.append(row)
            log.info("epoch %d done at %.0f s of training: loss %.4f, validation box mAP50 %.3f, mask mAP50 %.3f",
                     epoch, seconds, row["loss"], box, mask)
            checkpoint(epoch + 1, 0)
            _write_metrics(history, cfg.metrics_csv, cfg.curves_png)
        if world > 1:
            torch.distributed.barrier()
        # every rank takes the same decision (DDP): on the mean of their training times
        if cfg.max_minutes and _all_mean([seconds], world)[0] > 60 * cfg.max_minutes and epoch + 1 < cfg.epochs:
            if is_main:
                log.warning("stopping after epoch %d of %d: %.1f min of training passed the %.1f min limit",
                            epoch + 1, cfg.epochs, seconds / 60, cfg.max_minutes)
            break

    result = model_file_content(_unwrap(model), ms, data.categories, cfg.fusion, fill,
                                training=json.loads(json.dumps(asdict(cfg))), history=history)
    if is_main:
        save_checkpoint(cfg.out, result)
        log.info("model written to %s after %d steps, %.0f s of training", cfg.out, step, seconds)
    return result


def model_file_content(model, settings, categories, fusion, fill=None, *, training=None, history=None):
    """
    What a model file holds (plain types and tensors: ``torch.load(weights_only=True)`` reads it).

    Parameters
    ----------
    model : MaskRCNN
    settings : ModelSettings
    categories : list of str
    fusion : str
        `skysift.fusion.fuse` mode the model was trained with.
    fill : list of 3 float, optional
        The d4 fill values.
    training : dict, optional
        The training settings.
    history : list of dict, optional
        Per-epoch metrics.
    """
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    content = {"model": state, "model_settings": settings.to_dict(), "categories": list(categories),
               "fusion": {"mode": fusion, "fill": fill}, "training": training or {}, "history": history or []}
    content["model_id"] = model_digest(content)
    return content


def model_digest(content):
    """
    16 hex digits identifying a model: its weights, architecture, classes and input fusion.

    Run-specific bookkeeping (training time, threads, paths) is left out, so two runs that
    learn the same weights give the same id.
    """
    h = hashlib.sha256()
    for name in sorted(content["model"]):
        h.update(name.encode())
        h.update(content["model"][name].contiguous().numpy().tobytes())
    h.update(json.dumps([content["model_settings"], content["categories"], content["fusion"]], sort_keys=True,
                        default=str).encode())
    return h.hexdigest()[:16]


def load_model_file(path, device="cpu"):
    """
    The detector and its metadata from a model file written by `train`.

    Returns
    -------
    model : MaskRCNN in eval mode on ``device``
    meta : dict
        ``model_settings``, ``categories``, ``fusion``, ``training``.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    ms = ModelSettings.from_dict(state["model_settings"])
    model = build_model(ms)
    model.load_state_dict(state["model"])
    model.to(device).eval()
    return model, {k: v for k, v in state.items() if k != "model"}


MODEL_KEYS = ("backbone", "fpn_channels", "trainable_layers", "anchor_sizes", "aspect_ratios", "min_score", "nms_iou")
TRAINING_KEYS = ("epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "low_layer_lr_factor",
                 "warmup_steps", "val_fraction", "augment", "noise_augment", "repeat_threshold", "checkpoint_every",
                 "seed", "amp", "workers", "max_minutes")


def settings_from_config(training, detection, **paths):
    """
    TrainSettings from the workflow configuration's ``training`` and ``detection`` sections.

    Parameters
    ----------
    training, detection : dict
        The sections (schema defaults filled in).
    **paths
        ``train_sets``, ``out``, ``checkpoint_dir``, ``metrics_csv``, ``curves_png``, and
        optionally ``initial_weights`` and ``threads``.
    """
    model = {k: detection[k] for k in MODEL_KEYS}  # all required: rules/common.smk get_detector_settings passes them
    model["frozen_batchnorm"] = bool(paths.get("initial_weights"))
    return TrainSettings(model=model, fusion=detection.get("fusion", "radio"), device=detection.get("device", "auto"),
                         **{k: training[k] for k in TRAINING_KEYS if k in training}, **paths)


def settings_from_json(path):
    """TrainSettings from a JSON file (the torchrun entry point's argument)."""
    d = json.loads(Path(path).read_text())
    return TrainSettings(**d)


def main(argv=None):
    """``python -m skysift.detection.train settings.json [log_file]`` (e.g. under torchrun)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("settings", help="JSON of skysift.detection.train.TrainSettings")
    # positional: torchrun would take an option such as --log for an abbreviation of its own
    parser.add_argument("log", nargs="?", help="log file (rank 0; other ranks append .rank<k>)")
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    stream = open(args.log if rank == 0 else f"{args.log}.rank{rank}", "a", buffering=1) if args.log else sys.stderr
    logging.basicConfig(level=logging.INFO, stream=stream, force=True,
                        format=f"%(asctime)s rank{rank} %(name)s %(levelname)s %(message)s")
    cfg = settings_from_json(args.settings)
    try:
        train(cfg)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
