"""Entry point of rule build_survey_dataset: one Parquet dataset per table over all tiles."""

from pathlib import Path

from skysift.catalogue import build_survey_dataset
from skysift.runtime import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):
    folders = {Path(p).parent.name: Path(p).parent for p in snakemake.input.sources}
    build_survey_dataset(folders, snakemake.output.survey)
