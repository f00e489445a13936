"""Entry point of rule inspect_tile: validate a tile and write its JSON summary."""

import json

from skysift.inspect import inspect_tile
from skysift.runtime import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):
    info = inspect_tile(snakemake.input.radio, snakemake.wildcards.tile)
    with open(snakemake.output.info, "w") as f:
        json.dump(info, f, indent=2)
