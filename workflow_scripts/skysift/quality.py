"""
The M1/M2/M3 image-quality classifiers of Teimoorinia et al. (2020, Fig. 9), on radio regions.

Inputs per quality region (`skysift.stamps`): the K = 20 representative stamps (Input-1) and
the K cluster hit counts (Input-2).

- **M1**: a five-layer CNN applied to every stamp (weights shared by the K stamps), the K
  stamp embeddings flattened in cluster order, then the dense layers.
- **M2**: a multilayer perceptron on the counts.
- **M3**: the CNN embeddings and the counts concatenated ("merged") before the dense layers.
  M3 is the production model; M1 and M2 are trained and scored beside it.

Stamps enter as ``asinh(stamp / stamp_scale)``, with ``stamp_scale`` the median noise of the
training tiles (mJy/beam, stored with the model): a survey-level scale, so noisier sky looks
noisier. Counts enter as ``log1p(count / valid_fraction)`` (a region cut by the tile edge or a
blank border is scaled to a full one). Training uses Adam with L2 weight decay, a cosine
learning rate, random 90-degree rotations and flips of all stamps of a region together (the
classes do not depend on orientation), and a seeded stratified validation split. Every
epoch of every model writes a checkpoint (write-then-rename) to an undeclared folder; a
restarted job resumes each model at the epoch after its last checkpoint, when the checkpoint
was made with the same settings and data (its fingerprint), and gives the same weights as an
uninterrupted run: batches and augmentations are drawn from generators seeded by
``(seed, model, epoch)``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .columns import QUALITY_CLASSES

__all__ = [
    "MODEL_NAMES",
    "QualitySettings",
    "TrainingSet",
    "stamp_input",
    "count_input",
    "labels_for_regions",
    "load_training_set",
    "build_model",
    "train_quality",
    "load_quality_model",
    "predict_regions",
]

log = logging.getLogger(__name__)

MODEL_NAMES = ("m1", "m2", "m3")
PRODUCTION_MODEL = "m3"
FORMAT = "skysift-quality-1"


@dataclass(frozen=True)
class QualitySettings:
    """
    Settings of the quality classifiers (config section ``quality.model`` plus the seed).

    Attributes
    ----------
    epochs : int
        Training epochs of each model.
    batch_size : int
        Regions per optimisation step.
    learning_rate : float
        Initial Adam learning rate (cosine decay to 0).
    weight_decay : float
        L2 penalty on the weights (Adam ``weight_decay``).
    validation_fraction : float
        Fraction of the labelled regions held out, per class, to monitor training.
    min_valid_fraction : float
        Regions with less valid sky are not used for training.
    channels : tuple of int
        Output channels of the five 3x3 convolution layers (2x2 max pooling after the
        second and the fourth).
    embedding : int
        Features per stamp out of the CNN.
    dense : int
        Width of the dense layers.
    dropout : float
        Dropout before the last layer.
    augment : bool
        Random rotations by 90 degrees and flips of a region's stamps.
    spectrum : bool
        M3 also sees the region's mean stamp power spectrum (`spectrum_input`): beside the
        stamps and the counts, the evidence that tells coherent ripples (``striping``) from
        white noise (``high_noise``). False gives the seed's M3 (stamps and counts only).
    seed : int
        Seed of the split, the initial weights, the batches and the augmentations.
    """

    epochs: int = 40
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    validation_fraction: float = 0.2
    min_valid_fraction: float = 0.5
    channels: tuple = (8, 8, 16, 16, 16)
    embedding: int = 8
    dense: int = 64
    dropout: float = 0.2
    augment: bool = True
    spectrum: bool = True
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "learning_rate": self.learning_rate > 0,
            "weight_decay": self.weight_decay >= 0,
            "validation_fraction": 0 <= self.validation_fraction < 1,
            "min_valid_fraction": 0 <= self.min_valid_fraction <= 1,
            "channels": len(self.channels) == 5 and min(self.channels) >= 1,
            "embedding": self.embedding >= 1,
            "dense": self.dense >= 1,
            "dropout": 0 <= self.dropout < 1,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid quality model settings: {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}")


def stamp_input(stamps, scale):
    """
    Stamps as the CNN sees them: ``asinh(stamp / scale)``.

    Parameters
    ----------
    stamps : ndarray, ``(..., s, s)``, mJy/beam
    scale : float
        mJy/beam (the model's ``stamp_scale``).

    Returns
    -------
    float32 ndarray, same shape.
    """
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"stamp scale must be positive, got {scale!r}")
    return np.arcsinh(np.asarray(stamps, dtype=np.float32) / np.float32(scale))


def count_input(counts, valid_fraction):
    """
    Counts as the MLP sees them: ``log1p(count / valid_fraction)``.

    Parameters
    ----------
    counts : 2D ndarray, ``(n_regions, K)``
    valid_fraction : 1D ndarray, ``(n_regions,)``; clipped to [0.05, 1].

    Returns
    -------
    float32 ndarray, ``(n_regions, K)``.
    """
    v = np.clip(np.asarray(valid_fraction, dtype=np.float64), 0.05, 1.0)[:, None]
    return np.log1p(np.asarray(counts, dtype=np.float64) / v).astype(np.float32)


def spectrum_input(stamps, clip=5.0):
    """
    The region's mean stamp power spectrum, reduced to two numbers per spatial frequency ring.

    Each non-empty stamp is standardised (minus its median, over its MAD-based sigma,
    clipped at +-``clip``: noise, ripples and the source's wings weigh alike whatever the
    noise level), its power spectrum ``|FFT|^2`` taken, and the spectra of the region's
    non-empty stamps averaged. Per integer ring ``|k| = 1 .. s // 2`` (cycles per stamp):
    ``log(max / mean)`` over the ring, the anisotropy (a plane-wave ripple of the background,
    the same in every stamp of a ``striping`` region, is a peak on its ring; noise is
    isotropic), and ``log(mean)``, the radial power (the beam's and the ripples' scales).
    Invariant to the rotations by 90 degrees and the flips of the training augmentation.

    Parameters
    ----------
    stamps : ndarray, ``(n, K, s, s)``, mJy/beam; an all-zero stamp is an empty cluster.
    clip : float
        Clipping of the standardised stamps, in sigma.

    Returns
    -------
    float32 ndarray, ``(n, 2 * (s // 2))``: anisotropy then log power of ring 1, ring 2, ...
    A region without a non-empty stamp gets zeros.
    """
    x = np.asarray(stamps, dtype=np.float64)
    n, k, s, _ = x.shape
    full = (x.reshape(n, k, -1) != 0).any(axis=-1)
    med = np.median(x, axis=(2, 3), keepdims=True)
    sigma = 1.4826 * np.median(np.abs(x - med), axis=(2, 3), keepdims=True)
    z = np.clip((x - med) / np.where(sigma > 0, sigma, 1.0), -clip, clip) * full[..., None, None]
    power = np.fft.fftshift(np.abs(np.fft.fft2(z)) ** 2, axes=(2, 3))
    mean = power.sum(axis=1) / np.maximum(full.sum(axis=1), 1)[:, None, None]
    ky, kx = np.mgrid[:s, :s] - s // 2
    ring = np.rint(np.hypot(kx, ky)).astype(int)
    out = np.zeros((n, 2 * (s // 2)), dtype=np.float64)
    for r in range(1, s // 2 + 1):
        v = mean[:, ring == r]
        m = v.mean(axis=1)
        ok = m > 0
        out[ok, 2 * (r - 1)] = np.log(v.max(axis=1)[ok] / m[ok])
        out[ok, 2 * (r - 1) + 1] = np.log(m[ok])
    return out.astype(np.float32)


def spectrum_norm(stamps):
    """Mean and standard deviation (``(F,)`` each, float64) of `spectrum_input` over training regions."""
    f = spectrum_input(stamps).astype(np.float64)
    return f.mean(axis=0), np.maximum(f.std(axis=0), 1e-6)


def region_input(counts, valid_fraction, stamps=None, norm=None):
    """
    The per-region vector the M2 and M3 heads see: `count_input`, then (with ``norm``) the
    standardised `spectrum_input` of ``stamps``.

    Returns
    -------
    float32 ndarray, ``(n_regions, K)`` or ``(n_regions, K + F)``.
    """
    xc = count_input(counts, valid_fraction)
    if norm is None:
        return xc
    mean, std = (np.asarray(a, dtype=np.float64) for a in norm)
    spec = (spectrum_input(stamps) - mean) / std
    return np.concatenate([xc, spec.astype(np.float32)], axis=1)


# --------------------------------------------------------------------------- labels and data


def read_label_csv(path):
    """
    Quality labels of a real survey: CSV with columns ``id`` and ``quality_class``.

    ``id`` is a region id (``<tile_id>_q<row>_<col>``) or a tile id (all its regions); a
    region's own row wins over its tile's.

    Returns
    -------
    dict of str to str

    Raises
    ------
    ValueError
        Missing columns, unknown class, duplicate id; the message names the file and line.
    """
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = {"id", "quality_class"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}; need id,quality_class")
    out = {}
    for line, (i, c) in enumerate(zip(df["id"].str.strip(), df["quality_class"].str.strip()), start=2):
        if c not in QUALITY_CLASSES:
            raise ValueError(f"{path}:{line}: quality_class {c!r} is not one of {list(QUALITY_CLASSES)}")
        if i in out:
            raise ValueError(f"{path}:{line}: duplicate id {i!r}")
        out[i] = c
    return out


def labels_for_regions(regions, *, truth=None, labels=None):
    """
    The class label of every region, from simulator truth or a label mapping.

    Parameters
    ----------
    regions : pandas.DataFrame
        ``region_id`` and ``tile_id`` columns.
    truth : pandas.DataFrame, optional
        `skysift.columns.TRUTH_REGIONS` rows (``region_id``, ``quality_class``).
    labels : dict of str to str, optional
        From `read_label_csv`.

    Returns
    -------
    pandas.Series of str (None where a region has no label), indexed like ``regions``.
    """
    out = pd.Series([None] * len(regions), index=regions.index, dtype=object)
    if truth is not None:
        out = regions["region_id"].map(dict(zip(truth["region_id"], truth["quality_class"])))
    if labels is not None:
        by_tile = regions["tile_id"].map(labels)
        by_region = regions["region_id"].map(labels)
        out = by_region.where(by_region.notna(), by_tile)
    return pd.Series([v if isinstance(v, str) else None for v in out], index=regions.index, dtype=object)


@dataclass
class TrainingSet:
    """
    Labelled region fingerprints.

    Attributes
    ----------
    regions : pandas.DataFrame
        region_id, tile_id, valid_fraction, label (str) and y (class index).
    stamps : 4D float32 ndarray, ``(n, K, s, s)``, mJy/beam
    counts : 2D int ndarray, ``(n, K)``
    stamp_scale : float
        Median tile noise of the stamp files, mJy/beam.
    """

    regions: pd.DataFrame
    stamps: np.ndarray
    counts: np.ndarray
    stamp_scale: float

    def digest(self):
        """SHA-256 of the arrays and labels (the data part of a checkpoint's fingerprint)."""
        h = hashlib.sha256()
        for a in (self.stamps, self.counts, self.regions["y"].to_numpy(np.int64),
                  self.regions["valid_fraction"].to_numpy(np.float64)):
            h.update(np.ascontiguousarray(a).tobytes())
        h.update(json.dumps(self.regions["region_id"].tolist()).encode())
        return h.hexdigest()[:16]


def load_training_set(stamp_paths, *, truth_paths=None, labels=None, min_valid_fraction=0.5):
    """
    Labelled fingerprints of the training tiles' regions.

    Parameters
    ----------
    stamp_paths : list of str
        build_stamps outputs of the training tiles.
    truth_paths : list of str, optional
        ``truth_regions.parquet`` of simulated training tiles (labels from the simulator).
    labels : dict, optional
        Real-survey labels (`read_label_csv`); used when ``truth_paths`` is None.
    min_valid_fraction : float
        Regions with less valid sky are left out.

    Returns
    -------
    TrainingSet

    Raises
    ------
    ValueError
        No labelled region, or fewer than two classes.
    """
    from .stamps import read_stamps

    truth = pd.concat([pd.read_parquet(p) for p in truth_paths], ignore_index=True) if truth_paths else None
    frames, stamps, counts, noise = [], [], [], []
    for p in stamp_paths:
        rs = read_stamps(p)
        lab = labels_for_regions(rs.regions, truth=truth, labels=None if truth is not None else labels)
        keep = (lab.notna() & (rs.regions["valid_fraction"] >= min_valid_fraction)).to_numpy()
        reg = rs.regions[keep].assign(label=lab[keep].to_numpy())
        frames.append(reg)
        stamps.append(rs.stamps[keep])
        counts.append(rs.counts[keep])
        noise.append(rs.noise_mjy_beam)
    regions = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if len(regions) == 0:
        raise ValueError(f"no labelled training region with valid_fraction >= {min_valid_fraction} in "
                         f"{len(stamp_paths)} stamp file(s)")
    regions["y"] = regions["label"].map({c: i for i, c in enumerate(QUALITY_CLASSES)}).astype(np.int64)
    if regions["y"].nunique() < 2:
        raise ValueError(f"training regions hold a single class ({regions['label'].iloc[0]!r}): nothing to learn")
    noise = np.asarray(noise, dtype=float)
    scale = float(np.median(noise[np.isfinite(noise) & (noise > 0)])) if np.any(noise > 0) else 1.0
    log.info("training set: %d regions from %d tiles; classes %s; stamp scale %.4f mJy/beam", len(regions),
             len(stamp_paths), regions["label"].value_counts().to_dict(), scale)
    return TrainingSet(regions.reset_index(drop=True), np.concatenate(stamps), np.concatenate(counts), scale)


# --------------------------------------------------------------------------- models


def build_model(name, n_clusters, stamp_size, settings):
    """
    One of the three classifiers (a ``torch.nn.Module`` returning class logits).

    Parameters
    ----------
    name : {"m1", "m2", "m3"}
    n_clusters : int
        K, the number of SOM clusters (stamps and counts per region).
    stamp_size : int
    settings : QualitySettings

    Returns
    -------
    torch.nn.Module; ``forward(stamps, region)`` with stamps ``(B, K, s, s)`` (scaled) and
    region ``(B, K + F)`` (`region_input`: the scaled counts, then the F = ``2 * (s // 2)``
    standardised spectrum features when ``settings.spectrum``), returning ``(B, 5)`` logits.
    M1 reads the stamps, M2 the counts, M3 all of it.
    """
    import torch
    from torch import nn

    n_out = len(QUALITY_CLASSES)
    n_spec = 2 * (stamp_size // 2) if settings.spectrum else 0

    class StampCNN(nn.Module):
        """Five 3x3 convolution layers on one stamp -> ``embedding`` features."""

        def __init__(self):
            super().__init__()
            c = settings.channels
            side = stamp_size // 2 // 2  # after the two max poolings (25 px: 6)
            pool = max(side // 2, 1)  # average pooling to about 2 x 2 (deterministic on CUDA)
            self.features = nn.Sequential(
                nn.Conv2d(1, c[0], 3, padding=1), nn.ReLU(),
                nn.Conv2d(c[0], c[1], 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(c[1], c[2], 3, padding=1), nn.ReLU(),
                nn.Conv2d(c[2], c[3], 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(c[3], c[4], 3, padding=1), nn.ReLU(),
                nn.AvgPool2d(pool),
            )
            n_flat = c[4] * (side // pool) ** 2
            self.project = nn.Sequential(nn.Flatten(), nn.Linear(n_flat, settings.embedding))

        def embed(self, x):
            return self.project(self.features(x))

        def forward(self, stamps):
            # an empty cluster's stamp is all zeros: its embedding is computed once, and only
            # the non-empty stamps go through the convolutions (the same result, ~half the work)
            b, k, s, _ = stamps.shape
            flat = stamps.reshape(b * k, 1, s, s)
            full = (flat.reshape(b * k, -1) != 0).any(dim=1)
            idx = full.nonzero().squeeze(1)
            zero = self.embed(flat.new_zeros(1, 1, s, s)).expand(b * k, settings.embedding)
            out = (zero.index_put((idx,), self.embed(flat[idx])) if idx.numel() else zero).reshape(b, k, -1)
            # the mean embedding of the region's non-empty stamps: what all its stamps share
            weight = full.reshape(b, k, 1).to(out.dtype)
            mean = (out * weight).sum(dim=1) / weight.sum(dim=1).clamp(min=1.0)
            return torch.cat([out.reshape(b, k * settings.embedding), mean], dim=1)

    def head(n_in):
        return nn.Sequential(nn.Linear(n_in, settings.dense), nn.ReLU(), nn.Dropout(settings.dropout),
                             nn.Linear(settings.dense, n_out))

    class M1(nn.Module):
        def __init__(self):
            super().__init__()
            self.cnn = StampCNN()
            self.head = head((n_clusters + 1) * settings.embedding)

        def forward(self, stamps, region):
            return self.head(self.cnn(stamps))

    class M2(nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = nn.Sequential(nn.Linear(n_clusters, settings.dense), nn.ReLU())
            self.head = head(settings.dense)

        def forward(self, stamps, region):
            return self.head(self.mlp(region[:, :n_clusters]))

    class M3(nn.Module):
        def __init__(self):
            super().__init__()
            self.cnn = StampCNN()
            self.head = head((n_clusters + 1) * settings.embedding + n_clusters + n_spec)

        def forward(self, stamps, region):
            return self.head(torch.cat([self.cnn(stamps), region[:, : n_clusters + n_spec]], dim=1))

    models = {"m1": M1, "m2": M2, "m3": M3}
    if name not in models:
        raise ValueError(f"unknown quality model {name!r}; expected one of {list(models)}")
    return models[name]()


def _augment(rng, stamps):
    """The same random rotation by k x 90 degrees and flip for all stamps of each region."""
    out = np.empty_like(stamps)
    k = rng.integers(0, 4, len(stamps))
    flip = rng.random(len(stamps)) < 0.5
    for i in range(len(stamps)):
        s = np.rot90(stamps[i], k[i], axes=(1, 2))
        out[i] = s[:, :, ::-1] if flip[i] else s
    return out


def _split(y, fraction, seed):
    """Stratified seeded split: boolean mask of the validation regions."""
    rng = np.random.default_rng([seed, 7])
    val = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = np.nonzero(y == c)[0]
        n_val = int(round(fraction * len(idx))) if len(idx) > 1 else 0
        val[rng.permutation(idx)[:n_val]] = True
    return val


def _accuracy(model, stamps, counts, y, batch=256, device="cpu"):
    import torch

    if len(y) == 0:
        return float("nan")
    pred = []
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(y), batch):
            pred.append(model(torch.from_numpy(stamps[i : i + batch]).to(device),
                              torch.from_numpy(counts[i : i + batch]).to(device)).argmax(1).cpu().numpy())
    return float(np.mean(np.concatenate(pred) == y))


def _fingerprint(name, settings, data_digest, n_clusters, stamp_size):
    text = json.dumps({"model": name, "settings": asdict(settings), "data": data_digest, "k": n_clusters,
                       "s": stamp_size}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _save_checkpoint(path, state):
    import torch

    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # killed mid-write: the previous checkpoint survives


def _train_one(name, data, train_mask, settings, checkpoint_dir, device, norm=None):
    """Train one model, resuming from its checkpoint; returns (model, history). ``norm``: `spectrum_norm`."""
    import torch

    k, s = data.counts.shape[1], data.stamps.shape[-1]
    xs = stamp_input(data.stamps, data.stamp_scale)
    xc = region_input(data.counts, data.regions["valid_fraction"].to_numpy(), data.stamps, norm)
    y = data.regions["y"].to_numpy(np.int64)
    tr, va = np.nonzero(train_mask)[0], np.nonzero(~train_mask)[0]
    seed_model = settings.seed * 1000 + MODEL_NAMES.index(name)
    torch.manual_seed(seed_model)
    model = build_model(name, k, s, settings).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.epochs)
    fingerprint = _fingerprint(name, settings, data.digest(), k, s)
    ckpt = Path(checkpoint_dir) / f"{name}.pth"
    history, start = [], 0
    if ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        if state.get("fingerprint") == fingerprint:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["lr_scheduler"])
            history = list(state["history"])
            start = int(state["epoch"]) + 1
            log.info("%s: resuming from %s at epoch %d", name, ckpt, start)
        else:
            log.info("%s: checkpoint %s was made with other settings or data: starting afresh", name, ckpt)
    loss_fn = torch.nn.CrossEntropyLoss()
    for epoch in range(start, settings.epochs):
        rng = np.random.default_rng([settings.seed, MODEL_NAMES.index(name), epoch])
        torch.manual_seed(seed_model * 100_003 + epoch)  # dropout
        model.train()
        order = tr[rng.permutation(len(tr))]
        total, n, right = 0.0, 0, 0
        for i in range(0, len(order), settings.batch_size):
            idx = np.sort(order[i : i + settings.batch_size])
            st = _augment(rng, xs[idx]) if settings.augment else xs[idx]
            logits = model(torch.from_numpy(np.ascontiguousarray(st)).to(device),
                           torch.from_numpy(xc[idx]).to(device))
            loss = loss_fn(logits, torch.from_numpy(y[idx]).to(device))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{name}: non-finite training loss {loss.item()} at epoch {epoch}")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
            right += int((logits.argmax(1).cpu().numpy() == y[idx]).sum())
            n += len(idx)
        scheduler.step()
        # training accuracy as seen during the epoch (augmented, with dropout): no extra pass
        rec = {"epoch": epoch, "loss": total / max(n, 1), "train_accuracy": right / max(n, 1),
               "validation_accuracy": _accuracy(model, xs[va], xc[va], y[va], device=device)}
        history.append(rec)
        log.info("%s epoch %d/%d: loss %.4f, train %.3f, validation %.3f", name, epoch + 1, settings.epochs,
                 rec["loss"], rec["train_accuracy"], rec["validation_accuracy"])
        _save_checkpoint(ckpt, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                "lr_scheduler": scheduler.state_dict(), "epoch": epoch, "cfg": asdict(settings),
                                "fingerprint": fingerprint, "history": history})
    return model, history


def _versions():
    import importlib.metadata as md

    import torch

    from . import __version__

    return {"skysift": __version__, "torch": str(torch.__version__), "numpy": md.version("numpy")}


def train_quality(data, settings, model_path, *, checkpoint_dir, report_path=None, png_path=None, device=None):
    """
    Train M1, M2 and M3 on labelled fingerprints and write them to one file.

    Parameters
    ----------
    data : TrainingSet
    settings : QualitySettings
    model_path : str or Path
        Output (``torch.save`` of a plain dict, loadable with ``weights_only=True``): the
        three state dicts, classes, settings, stamp scale, K, stamp size, validation
        accuracies, the production model name ("m3") and versions. Written atomically.
    checkpoint_dir : str or Path
        Undeclared folder of the per-model checkpoints (``m1.pth``, ``m2.pth``, ``m3.pth``).
    report_path, png_path : str or Path, optional
        JSON training report and learning curves (the seed's Fig. 9, bottom).
    device : str, optional
        ``"cuda"`` when available, else ``"cpu"``.

    Returns
    -------
    dict, the training report.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    import torch

    torch.use_deterministic_algorithms(True)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
    y = data.regions["y"].to_numpy()
    val = _split(y, settings.validation_fraction, settings.seed)
    k, s = data.counts.shape[1], data.stamps.shape[-1]
    log.info("training on %s: %d regions (%d held out for validation), K=%d, %d px stamps", device,
             int((~val).sum()), int(val.sum()), k, s)
    norm = spectrum_norm(data.stamps) if settings.spectrum else None
    states, histories = {}, {}
    for name in MODEL_NAMES:
        model, histories[name] = _train_one(name, data, ~val, settings, checkpoint_dir, device, norm)
        states[name] = {key: v.detach().cpu() for key, v in model.state_dict().items()}
    report = {
        "classes": list(QUALITY_CLASSES),
        "n_regions": int(len(y)),
        "n_train": int((~val).sum()),
        "n_validation": int(val.sum()),
        "class_counts": {c: int((data.regions["label"] == c).sum()) for c in QUALITY_CLASSES},
        "validation_accuracy": {n: histories[n][-1]["validation_accuracy"] for n in MODEL_NAMES},
        "train_accuracy": {n: histories[n][-1]["train_accuracy"] for n in MODEL_NAMES},
        "history": histories,
        "production_model": PRODUCTION_MODEL,
        "settings": asdict(settings),
        "stamp_scale_mjy_beam": data.stamp_scale,
        "device": device,
    }
    package = {"format": FORMAT, "classes": list(QUALITY_CLASSES), "cfg": asdict(settings), "models": states,
               "production": PRODUCTION_MODEL, "n_clusters": int(k), "stamp_size": int(s),
               "stamp_scale": float(data.stamp_scale), "validation_accuracy": report["validation_accuracy"],
               "spectrum_norm": None if norm is None else [[float(v) for v in a] for a in norm],
               "training_regions": data.regions["region_id"].tolist(), "versions": _versions()}
    model_path = Path(model_path)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    _save_checkpoint(model_path, package)
    if report_path is not None:
        tmp = Path(report_path).with_name(Path(report_path).name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        os.replace(tmp, report_path)
    if png_path is not None:
        _plot_history(histories, png_path)
    log.info("validation accuracy: %s", {n: round(a, 4) for n, a in report["validation_accuracy"].items()})
    return report


def _plot_history(histories, png_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    colours = {"m1": "tab:blue", "m2": "tab:red", "m3": "tab:green"}
    for name, hist in histories.items():
        ep = [h["epoch"] + 1 for h in hist]
        ax.plot(ep, [h["train_accuracy"] for h in hist], "-", c=colours[name], label=f"{name.upper()} training")
        ax.plot(ep, [h["validation_accuracy"] for h in hist], "--", c=colours[name], label=f"{name.upper()} validation")
    ax.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02), title="quality classifiers (cf. seed Fig. 9)")
    ax.legend(fontsize=8, ncol=2)
    tmp = Path(png_path).with_name(Path(png_path).name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, png_path)


@dataclass
class QualityModel:
    """The three trained classifiers and what they need to preprocess their inputs."""

    models: dict
    classes: tuple
    settings: QualitySettings
    stamp_scale: float
    n_clusters: int
    stamp_size: int
    meta: dict = field(default_factory=dict)
    spectrum_norm: tuple | None = None


def load_quality_model(path, device="cpu"):
    """
    Load a file written by `train_quality` (``torch.load(weights_only=True)``).

    Raises
    ------
    ValueError
        Not a skysift quality model, or trained for other classes.
    """
    import torch

    pkg = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(pkg, dict) or pkg.get("format") != FORMAT:
        raise ValueError(f"{path}: not a skysift quality model (format {FORMAT})")
    if tuple(pkg["classes"]) != QUALITY_CLASSES:
        raise ValueError(f"{path}: trained for classes {pkg['classes']}, expected {list(QUALITY_CLASSES)}")
    # files written before the spectrum input existed hold the seed's M3
    settings = QualitySettings(**{"spectrum": False, **pkg["cfg"]})
    norm = pkg.get("spectrum_norm")
    if settings.spectrum and norm is None:
        raise ValueError(f"{path}: M3 takes the stamp spectrum but the file holds no spectrum_norm")
    models = {}
    for name in MODEL_NAMES:
        m = build_model(name, pkg["n_clusters"], pkg["stamp_size"], settings)
        m.load_state_dict(pkg["models"][name])
        models[name] = m.to(device).eval()
    meta = {k: pkg[k] for k in ("production", "validation_accuracy", "versions") if k in pkg}
    return QualityModel(models, tuple(pkg["classes"]), settings, float(pkg["stamp_scale"]), int(pkg["n_clusters"]),
                        int(pkg["stamp_size"]), meta, None if norm is None else tuple(np.asarray(a) for a in norm))


def predict_regions(model, stamps, device="cpu", batch=256):
    """
    Class probabilities of every region of a tile from all three classifiers.

    Each classifier's probabilities are the softmax of its log-probabilities averaged over the
    8 rotations by 90 degrees and flips of the stamps (those it was trained to be blind to).

    Parameters
    ----------
    model : QualityModel
    stamps : skysift.stamps.RegionStamps
    device : str
    batch : int

    Returns
    -------
    pandas.DataFrame
        `skysift.columns.QUALITY_REGIONS` columns: the regions, ``quality_class`` and
        ``quality_prob_<class>`` from M3, ``quality_class_m1`` / ``quality_prob_m1_<class>``
        and the same for M2. Regions without a valid pixel get null classes and NaN
        probabilities.
    """
    import torch

    if stamps.counts.shape[1] != model.n_clusters or stamps.stamps.shape[-1] != model.stamp_size:
        raise ValueError(f"{stamps.tile_id}: stamps have K={stamps.counts.shape[1]}, size {stamps.stamps.shape[-1]}; "
                         f"the model expects K={model.n_clusters}, size {model.stamp_size}")
    regions = stamps.regions.copy()
    xs = stamp_input(stamps.stamps, model.stamp_scale)
    xc = region_input(stamps.counts, regions["valid_fraction"].to_numpy(), stamps.stamps, model.spectrum_norm)
    valid = regions["valid_fraction"].to_numpy() > 0
    probs = {}
    with torch.inference_mode():
        for name, m in model.models.items():
            out = np.full((len(regions), len(QUALITY_CLASSES)), np.nan, dtype=np.float32)
            for i in range(0, len(regions), batch):
                st = torch.from_numpy(xs[i : i + batch]).to(device)
                rv = torch.from_numpy(xc[i : i + batch]).to(device)
                views = [torch.rot90(st, r, dims=(2, 3)) for r in range(4)]
                views += [v.flip(3) for v in views]
                logp = torch.stack([torch.log_softmax(m(v, rv), dim=1) for v in views]).mean(dim=0)
                out[i : i + batch] = torch.softmax(logp, dim=1).cpu().numpy()
            out[~valid] = np.nan
            probs[name] = out
    classes = np.array(QUALITY_CLASSES, dtype=object)
    for name, prefix, col in (("m3", "quality_prob_", "quality_class"), ("m1", "quality_prob_m1_", "quality_class_m1"),
                              ("m2", "quality_prob_m2_", "quality_class_m2")):
        p = probs[name]
        regions[col] = np.where(valid, classes[np.nan_to_num(p, nan=0).argmax(1)], None)
        for j, c in enumerate(QUALITY_CLASSES):
            regions[f"{prefix}{c}"] = p[:, j]
    return regions
