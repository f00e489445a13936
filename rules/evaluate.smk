# Scores against the simulator's truth, for the catalogued tiles that have it.


rule evaluate_components:
    input:
        components=expand("results/components/{tile}.parquet", tile=TRUTH_TILES),
        info=expand("results/tiles/{tile}/inspect.json", tile=TRUTH_TILES),
        truth_components=truth_paths("truth_components.parquet"),
        truth_sources=truth_paths("truth_sources.parquet"),
        truth_regions=truth_paths("truth_regions.parquet"),
    output:
        json="results/evaluation/components.json",
        png="results/evaluation/components.png",
    log:
        "logs/evaluate_components/evaluation.log",
    benchmark:
        "benchmarks/evaluate_components/evaluation.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        match_radius_beams=lookup(dpath="evaluation/match_radius_beams", within=config),
    script:
        "../workflow_scripts/evaluate_components.py"
