"""Entry point of rule train_detector: Mask R-CNN training (resumable; DDP under torchrun when processes > 1)."""

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from skysift.detection.train import settings_from_config, train
from skysift.runtime import rule_logging

with rule_logging(snakemake.log.log, snakemake.threads) as log:
    p = snakemake.params
    cfg = settings_from_config(
        p.training, p.detection, train_sets=list(snakemake.input.coco), out=snakemake.output.model,
        checkpoint_dir=p.checkpoint_dir, metrics_csv=snakemake.log.metrics, curves_png=snakemake.log.curves,
        initial_weights=snakemake.input.get("weights"), threads=max(1, snakemake.threads // p.training["processes"] - p.training["workers"]),
    )
    if p.training["processes"] > 1:
        settings = Path(p.checkpoint_dir) / "torchrun-settings.json"
        settings.parent.mkdir(parents=True, exist_ok=True)
        settings.write_text(json.dumps(asdict(cfg)))
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={p.training['processes']}", "-m", "skysift.detection.train", str(settings),
                   snakemake.log.log]
        log.info("launching %s", " ".join(command))
        subprocess.run(command, check=True)
    else:
        train(cfg)
