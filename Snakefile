# skysift: radio continuum survey tiles -> a science-ready Parquet catalogue.
#
# Paths: every output lives under results/ (relative to the working directory, see
# --directory); per tile: results/{tiles,cutouts,components,catalogue}/{tile}...; logs/ and
# benchmarks/ mirror the rule names. The tiles come from the manifest named by
# tiles.manifest; the embedded default catalogues a simulated EMU-like survey.

from snakemake.utils import min_version

min_version("9.0")


# The embedded demo configuration, found from the workflow folder so that --directory works;
# --configfile files layer on top of it.
configfile: f"{workflow.basedir}/config/config.yaml"


include: "rules/common.smk"


# tile: the manifest's id pattern, not an alternation of 850 ids (a 10 kB regex in every
# pattern made the full-survey DAG 2.6 times slower); an id outside the manifest fails in
# get_tile_radio with a message naming the manifest.
wildcard_constraints:
    tile=TILE_ID_REGEX,
    sim_tile=alternatives(SIM_TILES),
    shard=r"\d+",


include: "rules/simulate.smk"
include: "rules/tiles.smk"
include: "rules/extract.smk"
include: "rules/catalogue.smk"
include: "rules/detect.smk"
include: "rules/quality.smk"
include: "rules/evaluate.smk"


localrules:
    all,
    all_emu_tiles,


rule all_emu_tiles:
    default_target: True
    input:
        get_final_outputs(),


rule all:
    input:
        rules.all_emu_tiles.input,
