# Image quality (Teimoorinia et al. 2020 on radio tiles): a SOM of the SEP components of the
# quality training tiles, per-region fingerprints (SOM cluster counts and representative
# stamps), the M1/M2/M3 classifiers, per-tile predictions and their score on held-out tiles.
# The quality training tiles that are not catalogued are processed under
# results/training/quality/{tile}/ by the *_training_* rules (same actions, own wildcard set).


rule train_som:
    input:
        components=get_quality_training_files("components"),
    output:
        model="results/models/som.npz",
        png="results/models/som.png",
    log:
        "logs/train_som/train.log",
    benchmark:
        "benchmarks/train_som/train.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        settings=lookup(dpath="quality/som", within=config),
        seed=lookup(dpath="training/seed", within=config),
    script:
        "../workflow_scripts/train_som.py"


rule map_som:
    input:
        components="results/components/{tile}.parquet",
        som="results/models/som.npz",
    output:
        som="results/som/{tile}.parquet",
    log:
        "logs/map_som/{tile}.log",
    benchmark:
        "benchmarks/map_som/{tile}.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        chunk=lookup(dpath="quality/som/chunk", within=config),
    script:
        "../workflow_scripts/map_som.py"


rule build_stamps:
    input:
        radio=get_tile_radio,
        components="results/components/{tile}.parquet",
        som="results/som/{tile}.parquet",
    output:
        stamps="results/stamps/{tile}.h5",
    log:
        "logs/build_stamps/{tile}.log",
    benchmark:
        "benchmarks/build_stamps/{tile}.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        region_size=lookup(dpath="quality/region_size", within=config),
        n_clusters=lookup(dpath="quality/som/n_clusters", within=config),
        stamps=lookup(dpath="quality/stamps", within=config),
    script:
        "../workflow_scripts/build_stamps.py"


use rule extract_sources as extract_training_sources with:
    input:
        radio="results/simulated/{tile}/radio.fits",
    output:
        components="results/training/quality/{tile}/components.parquet",
    log:
        "logs/extract_training_sources/{tile}.log",
    benchmark:
        "benchmarks/extract_training_sources/{tile}.tsv"
    wildcard_constraints:
        tile=alternatives(QUALITY_SIM_TRAINING_TILES),
    resources:
        mem_mb=get_sim_tile_mem_mb,
        runtime=30,


use rule map_som as map_training_som with:
    input:
        components="results/training/quality/{tile}/components.parquet",
        som="results/models/som.npz",
    output:
        som="results/training/quality/{tile}/som.parquet",
    log:
        "logs/map_training_som/{tile}.log",
    benchmark:
        "benchmarks/map_training_som/{tile}.tsv"
    wildcard_constraints:
        tile=alternatives(QUALITY_SIM_TRAINING_TILES),


use rule build_stamps as build_training_stamps with:
    input:
        radio="results/simulated/{tile}/radio.fits",
        components="results/training/quality/{tile}/components.parquet",
        som="results/training/quality/{tile}/som.parquet",
    output:
        stamps="results/training/quality/{tile}/stamps.h5",
    log:
        "logs/build_training_stamps/{tile}.log",
    benchmark:
        "benchmarks/build_training_stamps/{tile}.tsv"
    wildcard_constraints:
        tile=alternatives(QUALITY_SIM_TRAINING_TILES),


rule train_quality:
    input:
        unpack(get_quality_labels),
        stamps=get_quality_training_files("stamps"),
    output:
        model="results/models/quality.pt",
        report="results/models/quality_training.json",
        png="results/models/quality_training.png",
    log:
        "logs/train_quality/train.log",
    benchmark:
        "benchmarks/train_quality/train.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=120,
    params:
        settings=lookup(dpath="quality/model", within=config),
        seed=lookup(dpath="training/seed", within=config),
        min_valid_fraction=lookup(dpath="quality/min_valid_fraction", within=config),
        checkpoint_dir="results/models/checkpoints/quality",
    script:
        "../workflow_scripts/train_quality.py"


rule predict_quality:
    input:
        stamps="results/stamps/{tile}.h5",
        model="results/models/quality.pt",
    output:
        quality="results/quality/{tile}.parquet",
    log:
        "logs/predict_quality/{tile}.log",
    benchmark:
        "benchmarks/predict_quality/{tile}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow_scripts/predict_quality.py"


rule evaluate_quality:
    input:
        quality=expand("results/quality/{tile}.parquet", tile=TRUTH_TILES),
        truth=truth_paths("truth_regions.parquet"),
    output:
        json="results/evaluation/quality.json",
        png="results/evaluation/quality.png",
    log:
        "logs/evaluate_quality/evaluation.log",
    benchmark:
        "benchmarks/evaluate_quality/evaluation.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        min_valid_fraction=lookup(dpath="quality/min_valid_fraction", within=config),
    script:
        "../workflow_scripts/evaluate_quality.py"
