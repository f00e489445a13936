"""Entry point of rule merge_tile_catalogue: the per-tile Parquet catalogue."""

from skysift.catalogue import merge_tile
from skysift.runtime import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):
    merge_tile(snakemake.wildcards.tile, snakemake.input.components, snakemake.input.cutouts,
               snakemake.output, config_digest=snakemake.params.config_hash,
               detections_paths=list(snakemake.input.get("detections", [])) or None,
               detection_settings=snakemake.params.get("detection"),
               som_path=snakemake.input.get("som"), quality_path=snakemake.input.get("quality"))
