"""Entry point of rule build_hats_catalogue: one catalogue table of every tile as HATS for LSDB."""

from skysift.hats import build_hats_catalogue
from skysift.runtime import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):
    build_hats_catalogue(list(snakemake.input.tables), snakemake.output.hats, table=snakemake.wildcards.table,
                         margin_arcsec=snakemake.params.margin_arcsec,
                         partition_rows=snakemake.params.partition_rows)
