"""
Instance masks as COCO compressed run-length encoding (RLE), stored as JSON strings.

A mask is stored relative to its bounding box: ``{"size": [ny, nx], "counts": "..."}`` with
rows = y, the layout pycocotools and the COCO tools expect.
"""

from __future__ import annotations

import json
import warnings

import numpy as np

__all__ = ["encode_mask", "decode_mask"]


def encode_mask(mask):
    """
    COCO compressed RLE of a boolean mask, as JSON.

    Parameters
    ----------
    mask : 2D bool ndarray, ``(ny, nx)``
        Rows are y.

    Returns
    -------
    str
        ``json.dumps({"size": [ny, nx], "counts": "<ascii counts>"})``.
    """
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return json.dumps({"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")})


def decode_mask(text):
    """
    Boolean mask from the JSON written by `encode_mask`.

    Returns
    -------
    2D bool ndarray, ``(ny, nx)``.
    """
    from pycocotools import mask as mask_utils

    rle = json.loads(text)
    rle["counts"] = rle["counts"].encode("ascii")
    with warnings.catch_warnings():
        # pycocotools 2.0.x calls np.array(copy=False) internally, deprecated by numpy 2
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*copy.*")
        return mask_utils.decode(rle).astype(bool)
