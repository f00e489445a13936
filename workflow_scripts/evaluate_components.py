"""Entry point of rule evaluate_components: SEP components scored against simulator truth."""

from skysift.evaluate import evaluate_component_tiles
from skysift.runtime import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):
    evaluate_component_tiles(
        list(snakemake.input.components), list(snakemake.input.truth_components),
        list(snakemake.input.truth_sources), list(snakemake.input.info),
        json_path=snakemake.output.json, png_path=snakemake.output.png,
        match_radius_beams=snakemake.params.match_radius_beams,
        truth_regions_paths=list(snakemake.input.get("truth_regions", [])) or None,
    )
