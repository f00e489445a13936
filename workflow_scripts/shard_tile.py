"""Entry point of rule shard_tile: overlapping cutouts dealt into shard HDF5 files."""

from skysift.catalogue import write_parquet
from skysift.columns import CUTOUTS
from skysift.cutouts import write_shards
from skysift.runtime import rule_logging
from skysift.tileio import open_tile

with rule_logging(snakemake.log[0], snakemake.threads):
    p = snakemake.params
    table = write_shards(
        open_tile(snakemake.input.radio), snakemake.wildcards.tile, list(snakemake.output.shards),
        size=p.size, overlap=p.overlap, ir_path=snakemake.input.get("ir"),
        compression=None if p.compression == "none" else p.compression,
    )
    write_parquet(table, CUTOUTS, snakemake.output.cutouts, {"tile_id": snakemake.wildcards.tile})
