"""Entry point of rule extract_sources: SEP components of a whole tile."""

from skysift.catalogue import write_parquet
from skysift.columns import COMPONENTS
from skysift.extract import ExtractSettings, extract_components
from skysift.runtime import rule_logging
from skysift.tileio import open_tile

with rule_logging(snakemake.log[0], snakemake.threads):
    tile_id = snakemake.wildcards.tile
    components = extract_components(open_tile(snakemake.input.radio), tile_id,
                                    ExtractSettings(**snakemake.params.settings))
    write_parquet(components, COMPONENTS, snakemake.output.components, {"tile_id": tile_id})
