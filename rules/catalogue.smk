# Per-tile catalogues and the survey-wide Parquet dataset.


rule merge_tile_catalogue:
    input:
        unpack(get_merge_inputs),
    output:
        components="results/catalogue/{tile}/components.parquet",
        cutouts="results/catalogue/{tile}/cutouts.parquet",
        sources="results/catalogue/{tile}/sources.parquet",
    log:
        "logs/merge_tile_catalogue/{tile}.log",
    benchmark:
        "benchmarks/merge_tile_catalogue/{tile}.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        config_hash=CATALOGUE_CONFIG_HASH,
        detection=get_merge_detection_settings(),
    script:
        "../workflow_scripts/merge_tile_catalogue.py"


rule build_survey_dataset:
    input:
        sources=catalogue_paths("sources"),
        components=catalogue_paths("components"),
        cutouts=catalogue_paths("cutouts"),
    output:
        survey=directory("results/survey"),
    log:
        "logs/build_survey_dataset/survey.log",
    benchmark:
        "benchmarks/build_survey_dataset/survey.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../workflow_scripts/build_survey_dataset.py"


rule build_hats_catalogue:
    input:
        tables=catalogue_paths("{table}"),
    output:
        hats=directory("results/hats/{table}"),
    log:
        "logs/build_hats_catalogue/{table}.log",
    benchmark:
        "benchmarks/build_hats_catalogue/{table}.tsv"
    wildcard_constraints:
        table="sources|components",
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        # LSDB holds the table in memory (tests/benchmarks/bench_hats.py: ~1.1 GB per million
        # rows). A constant: a function of input.size_mb made the 850-tile DAG ~2 s slower.
        mem_mb=lookup(dpath="hats/mem_mb", within=config),
        runtime=60,
    params:
        margin_arcsec=lookup(dpath="hats/margin_arcsec", within=config),
        partition_rows=lookup(dpath="hats/partition_rows", within=config),
    script:
        "../workflow_scripts/build_hats_catalogue.py"
