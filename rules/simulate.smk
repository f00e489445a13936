# The embedded synthetic EMU-like survey: radio tiles, an infrared image on its own grid, and
# the truth every later stage is trained and scored on.


rule simulate_survey:
    output:
        **get_sim_outputs_ir(),
        radio="results/simulated/{sim_tile}/radio.fits",
        truth_components="results/simulated/{sim_tile}/truth_components.parquet",
        truth_sources="results/simulated/{sim_tile}/truth_sources.parquet",
        truth_regions="results/simulated/{sim_tile}/truth_regions.parquet",
        meta="results/simulated/{sim_tile}/tile.json",
    log:
        "logs/simulate_survey/{sim_tile}.log",
    benchmark:
        "benchmarks/simulate_survey/{sim_tile}.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        settings=canonical(SIM_SETTINGS),
        tile=get_sim_tile,
        defects=get_sim_defects,
        region_size=lookup(dpath="quality/region_size", within=config),
    script:
        "../workflow_scripts/simulate_survey.py"
