"""Entry point of rule build_training_set: COCO-annotated training cutouts of one simulated tile."""

from skysift.detection.labels import build_simulated_training_set
from skysift.runtime import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):
    p = snakemake.params
    build_simulated_training_set(
        snakemake.input.radio, snakemake.input.truth_sources, snakemake.input.truth_components,
        snakemake.wildcards.sim_tile, snakemake.output.cutouts, snakemake.output.coco,
        ir_path=snakemake.input.get("ir"), size=p.size, overlap=p.overlap, scheme=p.categories, min_snr=p.min_snr,
    )
