"""Entry point of rule train_quality: the M1/M2/M3 quality classifiers, from the training tiles' regions."""

import torch

from skysift.quality import QualitySettings, load_training_set, read_label_csv, train_quality
from skysift.runtime import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):
    torch.set_num_threads(snakemake.threads)
    labels = read_label_csv(snakemake.input.labels) if "labels" in snakemake.input.keys() else None
    data = load_training_set(list(snakemake.input.stamps), truth_paths=list(snakemake.input.get("truth", [])) or None,
                             labels=labels, min_valid_fraction=snakemake.params.min_valid_fraction)
    settings = QualitySettings(**snakemake.params.settings, min_valid_fraction=snakemake.params.min_valid_fraction,
                               seed=snakemake.params.seed)
    train_quality(data, settings, snakemake.output.model, checkpoint_dir=snakemake.params.checkpoint_dir,
                  report_path=snakemake.output.report, png_path=snakemake.output.png)
