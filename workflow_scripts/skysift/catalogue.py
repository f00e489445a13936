"""
Per-tile catalogue tables and the survey dataset.

Every Parquet file skysift writes carries, per column, its unit and description as field
metadata, and, per file, the provenance (skysift version, configuration hash, tile) as schema
metadata; the provenance is also stored as columns so that it survives concatenation into a
survey-wide table. Files are written under a temporary name and renamed: a file exists whole
or not at all.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from . import __version__
from .columns import CATALOGUE_COMPONENTS, CATALOGUE_CUTOUTS, CATALOGUE_SOURCES, table_from_columns
from .sources import undetected_source_columns

__all__ = [
    "config_hash",
    "write_parquet",
    "read_parquet",
    "sources_from_components",
    "merge_tile",
    "build_survey_dataset",
    "SURVEY_TABLES",
]

log = logging.getLogger(__name__)

SURVEY_TABLES = ("sources", "components", "cutouts")


def config_hash(config):
    """
    Short SHA-256 of a JSON-serialisable configuration (key order does not matter).

    Returns
    -------
    str, 16 hex digits.
    """
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_parquet(data, columns, path, metadata=None):
    """
    Write a table with the column contract's types, units and descriptions, atomically.

    Parameters
    ----------
    data : pandas.DataFrame or mapping of arrays
    columns : list of `skysift.columns.Column`
    path : str or Path
    metadata : dict of str to str, optional
        File-level metadata (stored in the Arrow schema).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = table_from_columns(data, columns, metadata)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)
    return table


def read_parquet(path):
    """Read one Parquet table as a pandas DataFrame (list columns become arrays)."""
    return pq.read_table(path).to_pandas()


def sources_from_components(components, tile_id):
    """
    One source per component (until learned detection groups components into sources).

    Parameters
    ----------
    components : pandas.DataFrame
        `skysift.columns.COMPONENTS` rows of one tile.
    tile_id : str

    Returns
    -------
    sources : pandas.DataFrame with the `skysift.columns.SOURCES` columns.
    source_id : ndarray of str
        The source of each component, in component order.
    """
    serial = np.arange(len(components))
    source_id = np.array([f"{tile_id}_s{i:06d}" for i in serial], dtype=object)
    sources = pd.DataFrame({
        "source_id": source_id,
        "source_name": components["component_name"].to_numpy(),
        "tile_id": tile_id,
        "ra": components["ra_deg_cont"].to_numpy(dtype=float),
        "dec": components["dec_deg_cont"].to_numpy(dtype=float),
        "n_components": np.ones(len(components), dtype=np.int32),
        "flux_int": components["flux_int"].to_numpy(dtype=np.float32),
        "flux_peak": components["flux_peak"].to_numpy(dtype=np.float32),
        "component_ids": [[c] for c in components["component_id"]],
        "flags": components["flags"].to_numpy(dtype=np.int32),
        **undetected_source_columns(len(components)),
    })
    return sources, source_id


def merge_tile(tile_id, components_path, cutouts_path, out, *, config_digest, detections_paths=None,
               detection_settings=None, som_path=None, quality_path=None):
    """
    The per-tile catalogue: components, cutouts and sources with provenance.

    Parameters
    ----------
    tile_id : str
    components_path, cutouts_path : str
        Outputs of extract_sources and shard_tile.
    out : mapping with keys "components", "cutouts", "sources"
        Output Parquet paths.
    config_digest : str
        `config_hash` of the configuration that made the catalogue.
    detections_paths : list of str, optional
        Outputs of infer_shard (every shard of the tile): sources are then the detections that
        own SEP components plus the lone components (`skysift.sources.sources_from_detections`);
        without them, one source per component.
    detection_settings : dict, optional
        ``min_score``, ``flag_score``, ``overlap_threshold`` of `sources_from_detections`.
    som_path : str, optional
        Output of map_som (components' SOM unit and cluster); without it they are -1.
    quality_path : str, optional
        Output of predict_quality: components (by position), cutouts (by the centre of their
        owned core) and sources (by their first component, else their mask's box centre)
        inherit the class and probabilities of their quality region; without it, nulls.

    Returns
    -------
    dict of table name to number of rows.
    """
    components = read_parquet(components_path)
    cutouts = read_parquet(cutouts_path)
    if detections_paths:
        from .sources import read_detections, sources_from_detections

        detections, wcs, det_meta = read_detections(detections_paths)
        sources, source_id = sources_from_detections(components, detections, cutouts, wcs, tile_id,
                                                     model_id=det_meta.get("model_id"), **(detection_settings or {}))
    else:
        sources, source_id, det_meta = *sources_from_components(components, tile_id), {}
    components, cutouts, sources = _with_quality(components, cutouts, sources, source_id, som_path, quality_path)
    provenance = {"skysift_version": __version__, "config_hash": config_digest}
    metadata = {**provenance, "tile_id": tile_id}
    if det_meta.get("categories"):
        metadata["morph_classes"] = det_meta["categories"]
    components = components.assign(source_id=source_id, **provenance)
    tables = {
        "components": (components, CATALOGUE_COMPONENTS),
        "cutouts": (cutouts.assign(**provenance), CATALOGUE_CUTOUTS),
        "sources": (sources.assign(**provenance), CATALOGUE_SOURCES),
    }
    counts = {}
    for name, (frame, columns) in tables.items():
        write_parquet(frame, columns, out[name], metadata)
        counts[name] = len(frame)
    log.info("%s: catalogue %s", tile_id, counts)
    return counts


def _with_quality(components, cutouts, sources, source_id, som_path, quality_path):
    """Components, cutouts and sources with the SOM and quality columns (issue 3)."""
    from .regions import locate_regions, quality_columns

    som = read_parquet(som_path) if som_path else None
    if som is not None:
        if len(som) != len(components) or not np.array_equal(som["component_id"].to_numpy(),
                                                              components["component_id"].to_numpy()):
            raise ValueError(f"{som_path}: the SOM mapping does not match the components row for row")
        components = components.assign(**{c: som[c].to_numpy(np.int32) for c in ("som_bmu_x", "som_bmu_y",
                                                                                   "som_cluster")})
    else:
        components = components.assign(som_bmu_x=np.int32(-1), som_bmu_y=np.int32(-1), som_cluster=np.int32(-1))
    quality = read_parquet(quality_path) if quality_path else None
    regions = quality if quality is not None else pd.DataFrame(columns=["row", "col", "x_min", "x_max", "y_min",
                                                                         "y_max"])
    comp_idx = locate_regions(components["x"].to_numpy(float), components["y"].to_numpy(float), regions)
    cut_idx = locate_regions(0.5 * (cutouts["core_x_min"] + cutouts["core_x_max"] - 1).to_numpy(float),
                             0.5 * (cutouts["core_y_min"] + cutouts["core_y_max"] - 1).to_numpy(float), regions)
    first = pd.Series(comp_idx).groupby(np.asarray(source_id)).first() if len(components) else pd.Series(dtype=int)
    src_idx = np.array(sources["source_id"].map(first), dtype=float)  # a writable copy
    if {"bbox_x_min", "bbox_x_max", "bbox_y_min", "bbox_y_max"} <= set(sources.columns):
        lone = ~np.isfinite(src_idx)
        if lone.any():
            bx = 0.5 * (sources["bbox_x_min"] + sources["bbox_x_max"] - 1).to_numpy(float)
            by = 0.5 * (sources["bbox_y_min"] + sources["bbox_y_max"] - 1).to_numpy(float)
            src_idx[lone] = locate_regions(bx[lone], by[lone], regions)
    src_idx = np.where(np.isfinite(src_idx), src_idx, -1).astype(np.int64)
    return (components.assign(**quality_columns(comp_idx, quality)),
            cutouts.assign(**quality_columns(cut_idx, quality)),
            sources.assign(**quality_columns(src_idx, quality)))


def build_survey_dataset(tile_catalogues, out_dir):
    """
    Gather per-tile catalogues into one Parquet dataset per table (one file per tile).

    Files are hard links to the tile catalogues where the file system allows it (no extra
    disk), copies otherwise. ``<out_dir>/<table>/`` then reads in one call with
    ``pyarrow.dataset.dataset``, ``duckdb.read_parquet('<out_dir>/<table>/*.parquet')``,
    ``dask.dataframe.read_parquet`` or ``pandas.read_parquet``.

    Parameters
    ----------
    tile_catalogues : mapping of tile_id to a folder holding sources/components/cutouts.parquet
    out_dir : str or Path
        Created; must not exist yet (Snakemake removes a stale one before the rule runs).

    Returns
    -------
    dict
        Summary written to ``<out_dir>/survey.json``: tiles, rows per table, skysift version.
    """
    import shutil

    out_dir = Path(out_dir)
    rows = {t: 0 for t in SURVEY_TABLES}
    for table in SURVEY_TABLES:
        (out_dir / table).mkdir(parents=True, exist_ok=True)
    for tile_id, folder in sorted(tile_catalogues.items()):
        for table in SURVEY_TABLES:
            src = Path(folder) / f"{table}.parquet"
            dst = out_dir / table / f"{tile_id}.parquet"
            dst.unlink(missing_ok=True)
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
            rows[table] += pq.ParquetFile(dst).metadata.num_rows
    summary = {"tiles": sorted(tile_catalogues), "rows": rows, "skysift_version": __version__,
               "tables": {t: f"{t}/" for t in SURVEY_TABLES}}
    (out_dir / "survey.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
