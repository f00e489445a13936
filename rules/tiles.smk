# Per-tile preparation: validation summary, then the overlapping cutout grid in shards.


rule inspect_tile:
    input:
        radio=get_tile_radio,
    output:
        info="results/tiles/{tile}/inspect.json",
    log:
        "logs/inspect_tile/{tile}.log",
    benchmark:
        "benchmarks/inspect_tile/{tile}.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../workflow_scripts/inspect_tile.py"


rule shard_tile:
    input:
        unpack(get_tile_ir),
        radio=get_tile_radio,
        info="results/tiles/{tile}/inspect.json",
    output:
        shards=temp(
            expand("results/cutouts/{{tile}}/shard-{shard}.h5", shard=range(N_SHARDS))
        ),
        cutouts="results/cutouts/{tile}/cutouts.parquet",
    log:
        "logs/shard_tile/{tile}.log",
    benchmark:
        "benchmarks/shard_tile/{tile}.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=get_tile_mem_mb,
        runtime=30,
    params:
        size=lookup(dpath="cutouts/size", within=config),
        overlap=lookup(dpath="cutouts/overlap", within=config),
        compression=lookup(dpath="cutouts/compression", within=config),
    script:
        "../workflow_scripts/shard_tile.py"
