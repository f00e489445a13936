"""
Learned detection, classification and segmentation of radio sources (torchvision Mask R-CNN).

- `skysift.detection.labels`: morphology class schemes and the training sets (simulator truth,
  or COCO labels placed by sky position);
- `skysift.detection.model`: the Mask R-CNN with a configurable backbone;
- `skysift.detection.train`: training (resumable, DDP under torchrun, AMP on GPU);
- `skysift.detection.infer`: batched inference over one cutout shard;
- `skysift.detection.cocoeval`: COCO mAP through pycocotools.

torch is imported only by `model`, `train` and `infer`, so the CPU rules never load it.
"""
