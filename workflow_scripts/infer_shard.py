"""Entry point of rule infer_shard: batched detector inference over one cutout shard."""

import torch

from skysift.detection.infer import infer_shard
from skysift.runtime import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):
    torch.set_num_threads(snakemake.threads)
    p = snakemake.params
    infer_shard(snakemake.input.shard, snakemake.input.model, snakemake.output.detections,
                batch_size=p.batch_size, device=p.device, amp=p.amp,
                host_min_score=p.host_min_score, host_ir_psf_fwhm=p.host_ir_psf_fwhm, recount_peaks=p.recount_peaks,
                peak_count_error=p.peak_count_error, workers=p.workers)
