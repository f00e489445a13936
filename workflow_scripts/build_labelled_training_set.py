"""Entry point of rule build_labelled_training_set: training cutouts from a COCO JSON placed by sky position."""

from skysift.detection.labels import build_labelled_training_set
from skysift.runtime import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # a bad label record: one ERROR line naming it
    p = snakemake.params
    build_labelled_training_set(snakemake.input.labels, p.tiles, snakemake.output.cutouts, snakemake.output.coco,
                                size=p.size, scheme=p.categories)
