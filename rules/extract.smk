# SEP source extraction on whole tiles, in strips, with Selavy-style columns.


rule extract_sources:
    input:
        radio=get_tile_radio,
        info="results/tiles/{tile}/inspect.json",
    output:
        components="results/components/{tile}.parquet",
    log:
        "logs/extract_sources/{tile}.log",
    benchmark:
        "benchmarks/extract_sources/{tile}.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=get_tile_mem_mb,
        runtime=30,
    params:
        settings=lookup(dpath="extract", within=config),
    script:
        "../workflow_scripts/extract_sources.py"
