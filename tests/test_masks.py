"""COCO RLE masks round-trip with row = y, column = x."""

import json

import numpy as np

from skysift.masks import decode_mask, encode_mask


def test_roundtrip_keeps_orientation():
    m = np.zeros((5, 7), bool)
    m[1, 2:6] = True  # a horizontal bar: row 1 (y), columns 2..5 (x)
    m[3, 0] = True
    text = encode_mask(m)
    assert json.loads(text)["size"] == [5, 7]
    np.testing.assert_array_equal(decode_mask(text), m)


def test_empty_and_full():
    for m in (np.zeros((3, 4), bool), np.ones((3, 4), bool)):
        np.testing.assert_array_equal(decode_mask(encode_mask(m)), m)
