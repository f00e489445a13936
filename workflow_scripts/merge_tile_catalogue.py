"""Entry point of rule merge_tile_catalogue: the per-tile Parquet catalogue."""

from skysift.catalogue import merge_tile
from skysift.runtime import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):
    merge_tile(snakemake.wildcards.tile, snakemake.input.components, snakemake.input.cutouts,
               snakemake.output, config_digest=snakemake.params.config_hash)
