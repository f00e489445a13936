"""
Self-organising map of SEP components and its K-means clusters (Teimoorinia et al. 2020, Sect. 3.1).

Every component is described by five features, the radio analogues of the seed's SExtractor
parameters:

=====================  =============================================  ==========================
feature                definition                                     seed analogue
=====================  =============================================  ==========================
``log_area``           log10 of ``npix``, pixels above the threshold  ISO0 (isophotal area)
``ellipticity``        ``1 - min_axis / maj_axis``                    ELLIPTICITY
``log_snr``            log10 of ``snr`` (peak over local rms)         EXPTIME (depth)
``log_rms``            log10 of ``rms_image`` (mJy/beam)              BACKGROUND
``log_compactness``    log10 of ``flux_int / flux_peak`` (beams)      CLASS_STAR (1 beam: point)
=====================  =============================================  ==========================

Features are robust-scaled (median and inter-quartile range of the training sample, stored
with the model). A MiniSom map (15 x 15, Gaussian neighbourhood, sigma = 3 as in the seed) is
trained with the batch SOM algorithm (Kohonen 2013; MiniSom's ``train_batch_offline`` and
SOMPY, which the seed used), vectorised: each epoch finds every sample's best-matching unit
(BMU) in chunks and sets each codebook vector to the neighbourhood-weighted mean of the
samples, with sigma shrinking from ``sigma`` to 1 (MiniSom's ``inverse_decay_to_one``); the
codebook starts on the plane of the two principal components (``pca_weights_init``), so no
random draw is involved. The 225 codebook vectors are then grouped by scikit-learn K-means
into 20 clusters, numbered in the row-major order of their first node.

Mapping never builds an ``(n_samples, n_nodes)`` float64 matrix (MiniSom's quantization of 3M
samples needs 5.4 GB): distances are computed in float32 chunks of ``chunk`` rows.
"""

from __future__ import annotations

import io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "FEATURES",
    "FEATURE_COLUMNS",
    "SomModel",
    "component_features",
    "robust_scaler",
    "sample_features",
    "bmu_indices",
    "som_errors",
    "train_som",
    "save_som",
    "load_som",
    "plot_som",
]

log = logging.getLogger(__name__)

FEATURES = ("log_area", "ellipticity", "log_snr", "log_rms", "log_compactness")
"""Names of the five SOM features, in codebook order."""
FEATURE_COLUMNS = ("npix", "maj_axis", "min_axis", "snr", "rms_image", "flux_int", "flux_peak")
"""Component columns the features are computed from."""
DEFAULT_CHUNK = 16384
_TE_DISTANCE = 1.42  # MiniSom: best and second-best units farther apart than this are not neighbours


def component_features(components):
    """
    The five SOM features of SEP components.

    Parameters
    ----------
    components : pandas.DataFrame or mapping of arrays
        Needs the `FEATURE_COLUMNS` of `skysift.columns.COMPONENTS` (npix in pixels, sizes in
        arcsec, rms_image in mJy/beam, flux_int in mJy, flux_peak in mJy/beam).

    Returns
    -------
    2D float64 ndarray, ``(n_components, 5)``, columns in `FEATURES` order; NaN where a
    feature cannot be computed (e.g. a non-positive rms).
    """
    def col(name):
        return np.asarray(components[name], dtype=np.float64)

    npix, maj, mn, snr = col("npix"), col("maj_axis"), col("min_axis"), col("snr")
    rms, fint, fpeak = col("rms_image"), col("flux_int"), col("flux_peak")
    with np.errstate(divide="ignore", invalid="ignore"):
        ell = np.clip(1.0 - mn / maj, 0.0, 1.0)
        ratio = np.where(fpeak > 0, fint / fpeak, np.nan)
        out = np.column_stack([
            np.log10(np.maximum(npix, 1.0)),
            np.where(maj > 0, ell, np.nan),
            np.log10(np.maximum(snr, 1e-3)),
            np.where(rms > 0, np.log10(rms), np.nan),
            np.log10(np.clip(ratio, 1e-2, 1e3)),
        ])
    return out


def robust_scaler(x):
    """
    Median and inter-quartile range of each feature.

    Parameters
    ----------
    x : 2D ndarray, ``(n, d)``; non-finite values are ignored.

    Returns
    -------
    center, scale : 1D float64 ndarrays, ``(d,)``; a zero IQR becomes 1.
    """
    x = np.where(np.isfinite(x), x, np.nan)
    center = np.nanmedian(x, axis=0)
    q25, q75 = np.nanpercentile(x, [25, 75], axis=0)
    scale = q75 - q25
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    return np.nan_to_num(center), scale


@dataclass
class SomModel:
    """
    A trained quality SOM.

    Attributes
    ----------
    codebook : 3D float64 ndarray, ``(rows, cols, 5)``
        Codebook vectors in scaled feature units (MiniSom's ``get_weights()``).
    node_cluster : 2D int ndarray, ``(rows, cols)``
        K-means cluster of each node.
    center, scale : 1D float64 ndarrays, ``(5,)``
        Robust scaling: ``(feature - center) / scale``.
    feature_names : tuple of str
    hits : 2D int ndarray, ``(rows, cols)``
        BMU counts of the training sample.
    meta : dict
        Training settings, errors, sample size and package versions.
    """

    codebook: np.ndarray
    node_cluster: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    feature_names: tuple = FEATURES
    hits: np.ndarray = None
    meta: dict = field(default_factory=dict)

    @property
    def shape(self):
        """``(rows, cols)`` of the map."""
        return self.codebook.shape[:2]

    @property
    def n_clusters(self):
        return int(self.node_cluster.max()) + 1

    def scale_features(self, x):
        """
        Robust-scaled features; non-finite values become 0 (the training median).

        Parameters
        ----------
        x : 2D ndarray, ``(n, 5)`` from `component_features`.

        Returns
        -------
        2D float32 ndarray, ``(n, 5)``.
        """
        z = (np.asarray(x, dtype=np.float64) - self.center) / self.scale
        return np.where(np.isfinite(z), z, 0.0).astype(np.float32)

    def map(self, components, chunk=DEFAULT_CHUNK):
        """
        BMU and cluster of every component.

        Parameters
        ----------
        components : pandas.DataFrame
            `skysift.columns.COMPONENTS` rows.
        chunk : int
            Rows per distance computation (memory: ``chunk * rows * cols * 4`` bytes).

        Returns
        -------
        bmu_x, bmu_y, cluster : 1D int32 ndarrays, ``(n_components,)``
            ``bmu_x`` indexes the first map axis, as in MiniSom's ``winner()``.
        """
        z = self.scale_features(component_features(components))
        flat = bmu_indices(z, self.codebook.reshape(-1, self.codebook.shape[-1]), chunk)
        bx, by = np.divmod(flat, self.shape[1])
        return bx.astype(np.int32), by.astype(np.int32), self.node_cluster.ravel()[flat].astype(np.int32)


def sample_features(paths, max_samples, seed):
    """
    A seeded sample of component features from several component tables.

    Parameters
    ----------
    paths : list of str
        Parquet files with the `FEATURE_COLUMNS`.
    max_samples : int
        At most this many components are kept (all of them when there are fewer).
    seed : int

    Returns
    -------
    features : 2D float64 ndarray, ``(n, 5)``
        Rows with all five features finite, in file order then a seeded random subset.
    n_total : int
        Components with finite features before sampling.
    """
    import pyarrow.parquet as pq

    parts = []
    for p in paths:
        f = component_features(pq.read_table(p, columns=list(FEATURE_COLUMNS)).to_pandas())
        parts.append(f[np.isfinite(f).all(axis=1)])
    x = np.concatenate(parts) if parts else np.zeros((0, len(FEATURES)))
    n_total = len(x)
    if n_total > max_samples:
        keep = np.sort(np.random.default_rng(seed).choice(n_total, size=max_samples, replace=False))
        x = x[keep]
    return x, n_total


def _distances(z, w, w_sq):
    """``|w|^2 - 2 z.w`` (squared distance minus ``|z|^2``), float32, ``(len(z), n_nodes)``."""
    d = z @ w.T
    d *= -2.0
    d += w_sq
    return d


def bmu_indices(z, weights, chunk=DEFAULT_CHUNK, second=False):
    """
    Flat index of the best-matching unit of every sample, in chunks.

    Parameters
    ----------
    z : 2D ndarray, ``(n, d)``
        Scaled samples.
    weights : 2D ndarray, ``(n_nodes, d)``
        Flat codebook (row-major over the map).
    chunk : int
        Samples per distance block.
    second : bool
        Also return the second-best unit.

    Returns
    -------
    1D int64 ndarray ``(n,)``, or a ``(n, 2)`` array (best, second best) when ``second``.
    """
    z = np.ascontiguousarray(z, dtype=np.float32)
    w = np.ascontiguousarray(weights, dtype=np.float32)
    w_sq = np.einsum("ij,ij->i", w, w)
    out = np.empty((len(z), 2) if second else len(z), dtype=np.int64)
    for i in range(0, len(z), chunk):
        d = _distances(z[i : i + chunk], w, w_sq)
        best = np.argmin(d, axis=1)
        if second:
            out[i : i + chunk, 0] = best
            d[np.arange(len(d)), best] = np.inf
            out[i : i + chunk, 1] = np.argmin(d, axis=1)
        else:
            out[i : i + chunk] = best
    return out


def som_errors(z, codebook, chunk=DEFAULT_CHUNK, return_bmu=False):
    """
    Quantization and topographic errors of a map (MiniSom's definitions), in chunks.

    Parameters
    ----------
    z : 2D ndarray, ``(n, d)``
        Scaled samples.
    codebook : 3D ndarray, ``(rows, cols, d)``
    chunk : int
    return_bmu : bool
        Also return every sample's flat BMU index.

    Returns
    -------
    quantization_error : float
        Mean Euclidean distance (scaled units) from each sample to its BMU.
    topographic_error : float
        Fraction of samples whose best and second-best units are not adjacent on the map
        (grid distance above 1.42, so diagonal neighbours count as adjacent).
    """
    rows, cols, dim = codebook.shape
    w = codebook.reshape(-1, dim).astype(np.float32)
    z = np.ascontiguousarray(z, dtype=np.float32)
    two = bmu_indices(z, w, chunk, second=True)
    qe = 0.0
    for i in range(0, len(z), chunk):
        diff = z[i : i + chunk] - w[two[i : i + chunk, 0]]
        qe += float(np.sqrt(np.einsum("ij,ij->i", diff, diff, dtype=np.float64)).sum())
    (x1, y1), (x2, y2) = np.divmod(two[:, 0], cols), np.divmod(two[:, 1], cols)
    te = float(np.mean(np.hypot(x1 - x2, y1 - y2) > _TE_DISTANCE))
    if return_bmu:
        return qe / max(len(z), 1), te, two[:, 0]
    return qe / max(len(z), 1), te


def _versions():
    import importlib.metadata as md

    from . import __version__

    out = {"skysift": __version__}
    for pkg in ("minisom", "scikit-learn", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:  # pragma: no cover
            out[pkg] = "unknown"
    return out


def _relabel_by_first_node(labels):
    """Renumber cluster labels in the order their first node appears (row-major)."""
    order = {}
    for lab in labels:
        order.setdefault(int(lab), len(order))
    return np.array([order[int(lab)] for lab in labels])


def train_som(x, *, rows=15, cols=15, sigma=3.0, epochs=20, batch_size=250_000, n_clusters=20, seed=0,
              chunk=DEFAULT_CHUNK, pca_sample=200_000):
    """
    Train the quality SOM on a feature sample and cluster its codebook.

    Parameters
    ----------
    x : 2D ndarray, ``(n, 5)``
        Features from `component_features` (rows with non-finite values are dropped).
    rows, cols : int
        Map size (the seed: 15 x 15).
    sigma : float
        Initial Gaussian neighbourhood radius in map units (the seed: 3); it shrinks to 1 at
        the last epoch.
    epochs : int
        Batch epochs. Every epoch but the last updates the codebook from a seeded random
        subset of ``batch_size`` samples (a mini-batch batch SOM: 250k samples already give
        each of 225 nodes ~1000 samples); the last epoch uses the whole sample.
    batch_size : int
        Samples per epoch before the last.
    n_clusters : int
        K-means clusters of the codebook (the seed: 20).
    seed : int
        Seed of K-means (the SOM itself is deterministic).
    chunk : int
        Samples per distance block.
    pca_sample : int
        Samples (the first ones) used for the PCA initialisation.

    Returns
    -------
    SomModel
    """
    from minisom import MiniSom
    from sklearn.cluster import KMeans

    if rows * cols < n_clusters:
        raise ValueError(f"a {rows} x {cols} map cannot hold {n_clusters} clusters")
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs!r}")
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x).all(axis=1)]
    if len(x) < rows * cols:
        raise ValueError(f"need at least {rows * cols} components with finite features to train a "
                         f"{rows} x {cols} SOM, got {len(x)}")
    center, scale = robust_scaler(x)
    z = ((x - center) / scale).astype(np.float32)
    dim = z.shape[1]
    som = MiniSom(rows, cols, dim, sigma=sigma, learning_rate=1.0, neighborhood_function="gaussian",
                  topology="rectangular", sigma_decay_function="inverse_decay_to_one", random_seed=seed)
    som.pca_weights_init(z[:pca_sample].astype(np.float64))
    w = som.get_weights().reshape(-1, dim).astype(np.float64)
    nodes = [(i, j) for i in range(rows) for j in range(cols)]
    history = []
    for epoch in range(epochs):
        s = som._sigma_decay_function(sigma, epoch, max(epochs - 1, 1))
        h = np.stack([som.neighborhood(c, s).ravel() for c in nodes])  # (n_nodes, n_nodes)
        if epoch < epochs - 1 and len(z) > batch_size:
            pick = np.sort(np.random.default_rng([seed, epoch]).choice(len(z), batch_size, replace=False))
            zb = z[pick]
        else:
            zb = z
        bmu = bmu_indices(zb, w, chunk)
        counts = np.bincount(bmu, minlength=len(nodes)).astype(np.float64)
        sums = np.stack([np.bincount(bmu, weights=zb[:, k], minlength=len(nodes)) for k in range(dim)], axis=1)
        den = h @ counts
        w = (h @ sums) / np.maximum(den, 1e-300)[:, None]
        history.append({"epoch": epoch, "sigma": float(s), "samples": int(len(zb)),
                        "occupied_nodes": int((counts > 0).sum())})
        log.info("SOM epoch %d/%d: sigma %.3f, %d/%d nodes hit", epoch + 1, epochs, s, (counts > 0).sum(),
                 len(nodes))
    som._weights = w.reshape(rows, cols, dim)
    qe, te, best = som_errors(z, som.get_weights(), chunk, return_bmu=True)
    hits = np.bincount(best, minlength=len(nodes)).reshape(rows, cols)
    km = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit(w)
    node_cluster = _relabel_by_first_node(km.labels_).reshape(rows, cols)
    log.info("SOM %d x %d on %d samples: quantization error %.4f, topographic error %.4f", rows, cols, len(z),
             qe, te)
    meta = {"rows": rows, "cols": cols, "sigma": sigma, "sigma_final": float(history[-1]["sigma"]),
            "epochs": epochs, "batch_size": batch_size, "n_clusters": n_clusters, "seed": seed, "n_samples": int(len(z)),
            "quantization_error": qe, "topographic_error": te, "algorithm": "batch SOM (MiniSom grid, "
            "gaussian neighbourhood, inverse_decay_to_one sigma, pca_weights_init) + K-means of the codebook",
            "history": history, "versions": _versions()}
    return SomModel(codebook=som.get_weights().copy(), node_cluster=node_cluster, center=center, scale=scale,
                    feature_names=FEATURES, hits=hits, meta=meta)


def save_som(model, path):
    """
    Write a SomModel to an ``.npz`` file atomically (temporary file, then rename).

    The file holds ``codebook``, ``node_cluster``, ``center``, ``scale``, ``feature_names``,
    ``hits`` and ``meta`` (a JSON string); it loads with ``numpy.load(allow_pickle=False)``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, codebook=model.codebook, node_cluster=model.node_cluster.astype(np.int32),
             center=model.center, scale=model.scale, feature_names=np.array(model.feature_names),
             hits=np.asarray(model.hits, dtype=np.int64), meta=np.array(json.dumps(model.meta, sort_keys=True)))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)


def load_som(path):
    """
    Read a SomModel written by `save_som`.

    Raises
    ------
    ValueError
        The file is not a skysift SOM (a key is missing) or its features differ from `FEATURES`.
    """
    with np.load(path, allow_pickle=False) as f:
        missing = {"codebook", "node_cluster", "center", "scale", "feature_names", "hits", "meta"} - set(f.files)
        if missing:
            raise ValueError(f"{path}: not a skysift SOM model (missing {sorted(missing)})")
        names = tuple(str(s) for s in f["feature_names"])
        if names != FEATURES:
            raise ValueError(f"{path}: SOM features {names} differ from this skysift's {FEATURES}")
        return SomModel(codebook=f["codebook"], node_cluster=f["node_cluster"], center=f["center"],
                        scale=f["scale"], feature_names=names, hits=f["hits"], meta=json.loads(str(f["meta"])))


def plot_som(model, x, png_path):
    """
    The seed's Figs 3 and 5 for a trained map: hit map, U-matrix, clusters, cluster feature means.

    Parameters
    ----------
    model : SomModel
    x : 2D ndarray, ``(n, 5)``
        Unscaled features (e.g. the training sample) for the per-cluster means.
    png_path : str or Path
        Written atomically.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from minisom import MiniSom

    rows, cols = model.shape
    som = MiniSom(rows, cols, model.codebook.shape[-1])
    som._weights = np.asarray(model.codebook, dtype=np.float64)
    umatrix = som.distance_map()
    cluster = model.node_cluster
    z = model.scale_features(x)
    lab = cluster.ravel()[bmu_indices(z, model.codebook.reshape(-1, model.codebook.shape[-1]))]
    k = model.n_clusters
    fig = plt.figure(figsize=(16, 8), constrained_layout=True)
    grid = fig.add_gridspec(2, 5)
    panels = [("hit map (training sample)", np.log10(np.maximum(model.hits, 1)), "viridis", "log10 hits"),
              ("U-matrix", umatrix, "bone_r", "mean distance to neighbours"),
              (f"{k} K-means clusters of the codebook", cluster, "tab20", "cluster")]
    for i, (title, img, cmap, label) in enumerate(panels):
        ax = fig.add_subplot(grid[0, i])
        im = ax.imshow(img.T, origin="lower", cmap=cmap)
        ax.set(title=title, xlabel="som_bmu_x", ylabel="som_bmu_y")
        fig.colorbar(im, ax=ax, label=label, shrink=0.8)
        if i == 2:
            for (bx, by), c in np.ndenumerate(cluster):
                ax.text(bx, by, str(c), ha="center", va="center", fontsize=6)
    ax = fig.add_subplot(grid[0, 3:])
    ax.axis("off")
    m = model.meta
    ax.text(0, 0.5, f"{rows} x {cols} map, sigma {m.get('sigma')} -> {m.get('sigma_final', 0):.2f}\n"
            f"{m.get('epochs')} batch epochs, {m.get('n_samples')} samples\n"
            f"quantization error {m.get('quantization_error', float('nan')):.4f}\n"
            f"topographic error {m.get('topographic_error', float('nan')):.4f}\n"
            f"features: {', '.join(model.feature_names)}", fontsize=11, va="center")
    for j, name in enumerate(model.feature_names):
        ax = fig.add_subplot(grid[1, j])
        means = [np.nanmean(x[lab == c, j]) if np.any(lab == c) else np.nan for c in range(k)]
        ax.bar(range(k), means)
        ax.set(title=f"mean {name} per cluster", xlabel="cluster")
    tmp = Path(png_path).with_name(Path(png_path).name + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, png_path)
