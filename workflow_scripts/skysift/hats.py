"""
The survey catalogue as HATS catalogues, for LSDB cross-matching.

HATS (HEALPix Adaptive Tiling Scheme) partitions a catalogue on the sky: each Parquet file
holds one HEALPix pixel, at an order deep enough to keep its rows few, so a cone search or a
cross-match reads only the pixels it needs. A margin catalogue holds the rows within
``margin_arcsec`` outside each pixel, so that a cross-match within that radius finds
counterparts across pixel edges. LSDB writes both (``lsdb.from_dataframe``, then
``Catalog.write_catalog``), and reads them with ``lsdb.open_catalog``.

The HATS rows and columns are those of the per-tile catalogue tables (without their Parquet
field metadata: the units and descriptions are in the per-tile files, `skysift.columns`); LSDB
adds ``_healpix_29``, the order-29 HEALPix index of each row's position, as the index.
"""

from __future__ import annotations

import logging
import warnings

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["SKY_COLUMNS", "read_catalogue_tables", "build_hats_catalogue"]

log = logging.getLogger(__name__)

SKY_COLUMNS = {"sources": ("ra", "dec"), "components": ("ra_deg_cont", "dec_deg_cont")}
"""Position columns (ICRS deg) of each catalogue table that has a HATS catalogue."""


def read_catalogue_tables(paths):
    """
    One pandas DataFrame of per-tile catalogue files, Arrow-typed (nullable ints stay ints).

    Parameters
    ----------
    paths : list of str or Path
        Parquet files of one table (`skysift.columns` contract), one per tile.

    Returns
    -------
    pandas.DataFrame with ``pd.ArrowDtype`` columns, rows in the order of ``paths``.
    """
    tables = [pq.read_table(p).replace_schema_metadata(None) for p in paths]
    return pa.concat_tables(tables).to_pandas(types_mapper=pd.ArrowDtype)


def build_hats_catalogue(paths, out_dir, *, table, margin_arcsec=10.0, partition_rows=None, name=None):
    """
    Write one catalogue table of every tile as a HATS catalogue collection with its margin.

    Parameters
    ----------
    paths : list of str or Path
        The table's per-tile Parquet files.
    out_dir : str or Path
        The collection (must not exist): ``collection.properties``, the catalogue ``<name>/``
        and its margin ``<name>_<margin>arcs/``.
    table : {'sources', 'components'}
        Selects the position columns (`SKY_COLUMNS`).
    margin_arcsec : float
        Width of the margin catalogue, arcsec: the largest cross-match radius that finds every
        counterpart across a HEALPix pixel edge.
    partition_rows : int, optional
        Most rows per HEALPix pixel (LSDB's default, None, splits by size: ~1 GB a pixel).
    name : str, optional
        Catalogue name (default ``skysift_<table>``).

    Returns
    -------
    dict
        ``rows``, ``partitions`` (HEALPix pixels as ``"order/pixel"``) and ``name``.
    """
    ra, dec = SKY_COLUMNS[table]
    name = name or f"skysift_{table}"
    frame = read_catalogue_tables(paths)
    with warnings.catch_warnings():
        # lsdb 0.11 and nested-pandas still set mode.chained_assignment and pass inplace= to
        # set_index/drop, which pandas 3.1 deprecates
        warnings.filterwarnings("ignore", message="The inplace keyword")
        warnings.filterwarnings("ignore", message="The 'mode.chained_assignment' option")
        import lsdb

        catalog = lsdb.from_dataframe(frame, ra_column=ra, dec_column=dec, catalog_name=name,
                                      margin_threshold=margin_arcsec, partition_rows=partition_rows)
        catalog.write_catalog(out_dir, catalog_name=name, progress_bar=False)
    pixels = [f"{p.order}/{p.pixel}" for p in catalog.get_healpix_pixels()]
    log.info("%s: %d rows of %d files in %d HEALPix pixels, margin %.1f arcsec -> %s", name, len(frame),
             len(paths), len(pixels), margin_arcsec, out_dir)
    return {"rows": len(frame), "partitions": pixels, "name": name}
