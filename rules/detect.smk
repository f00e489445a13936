# Learned detection (torchvision Mask R-CNN): training sets, training, sharded inference, and
# its evaluation against the simulator's truth. The merge (rules/catalogue.smk) turns the
# detections into physical sources.


rule build_training_set:
    input:
        unpack(get_sim_training_ir),
        radio="results/simulated/{sim_tile}/radio.fits",
        truth_sources="results/simulated/{sim_tile}/truth_sources.parquet",
        truth_components="results/simulated/{sim_tile}/truth_components.parquet",
    output:
        cutouts="results/training/simulated/{sim_tile}/cutouts.h5",
        coco="results/training/simulated/{sim_tile}/coco.json",
    log:
        "logs/build_training_set/{sim_tile}.log",
    benchmark:
        "benchmarks/build_training_set/{sim_tile}.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        size=lookup(dpath="cutouts/size", within=config),
        overlap=lookup(dpath="cutouts/overlap", within=config),
        categories=lookup(dpath="training/categories", within=config),
        min_snr=lookup(dpath="training/min_snr", within=config),
    script:
        "../workflow_scripts/build_training_set.py"


rule build_labelled_training_set:
    input:
        unpack(get_labelled_training_inputs),
    output:
        cutouts="results/training/labelled/cutouts.h5",
        coco="results/training/labelled/coco.json",
    log:
        "logs/build_labelled_training_set/labelled.log",
    benchmark:
        "benchmarks/build_labelled_training_set/labelled.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        tiles=LABELLED_TILES,
        size=lookup(dpath="cutouts/size", within=config),
        categories=lookup(dpath="training/categories", within=config),
    script:
        "../workflow_scripts/build_labelled_training_set.py"


rule train_detector:
    input:
        **get_training_sets(),
        **get_initial_weights(),
    output:
        model="results/models/detector.pt",
    log:
        log="logs/train_detector/train.log",
        metrics="logs/train_detector/metrics.csv",
        curves="logs/train_detector/curves.png",
    benchmark:
        "benchmarks/train_detector/train.tsv"
    conda:
        "../envs/torch.yaml"
    threads: TRAIN_THREADS
    resources:
        gpu=lookup(dpath="training/processes", within=config),
        mem_mb=8000,
        runtime=240,
    params:
        training=lookup(dpath="training", within=config),
        detection=get_detector_settings(),
        checkpoint_dir="results/models/checkpoints",
    script:
        "../workflow_scripts/train_detector.py"


rule infer_shard:
    input:
        shard="results/cutouts/{tile}/shard-{shard}.h5",
        model="results/models/detector.pt",
    output:
        detections="results/detections/{tile}/shard-{shard}.parquet",
    log:
        "logs/infer_shard/{tile}/shard-{shard}.log",
    benchmark:
        "benchmarks/infer_shard/{tile}/shard-{shard}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: INFER_THREADS
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=60,
    params:
        batch_size=lookup(dpath="detection/batch_size", within=config),
        device=lookup(dpath="detection/device", within=config),
        amp=lookup(dpath="training/amp", within=config),
        host_min_score=lookup(dpath="detection/source_min_score", within=config),
        host_ir_psf_fwhm=lookup(dpath="detection/host_ir_psf_fwhm", within=config),
        recount_peaks=lookup(dpath="detection/recount_peaks", within=config),
        peak_count_error=lookup(dpath="detection/peak_count_error", within=config),
        workers=lookup(dpath="detection/workers", within=config),
    script:
        "../workflow_scripts/infer_shard.py"


rule evaluate_detections:
    input:
        **get_evaluate_detections_inputs(),
    output:
        json="results/evaluation/detections.json",
        png="results/evaluation/detections.png",
    log:
        "logs/evaluate_detections/evaluation.log",
    benchmark:
        "benchmarks/evaluate_detections/evaluation.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        n_shards=N_SHARDS,
        categories=lookup(dpath="training/categories", within=config),
        min_snr=lookup(dpath="evaluation/min_snr", within=config),
        extract=lookup(dpath="extract", within=config),
        overlap_threshold=lookup(dpath="detection/overlap_threshold", within=config),
        min_prob=lookup(dpath="detection/min_score", within=config),
    script:
        "../workflow_scripts/evaluate_detections.py"
