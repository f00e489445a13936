"""
Morphology classes and the detector's training sets, in COCO format.

Two sources of labels give the same product, an HDF5 file of cutouts in the layout of the
inference shards (`skysift.cutouts.write_shards`) plus a COCO JSON with one image per cutout
and one annotation (box, mask as compressed RLE, category) per radio source on it:

- `build_simulated_training_set`: a simulated tile and its truth. The tile is cut on the same
  grid, with the same code, as the tiles being catalogued; every truth source whose 3-sigma
  emission lies on a cutout (at least ``min_pixels`` finite pixels of it) and whose brightest
  component reaches ``min_snr`` is annotated, its mask clipped to the cutout.
- `build_labelled_training_set`: a user COCO JSON whose images are given by sky position
  (``ra``, ``dec`` in deg ICRS, ``size`` in arcsec, ``width``/``height`` in pixels) rather than
  by file, so labels drawn on any grid (RGZ DR1 boxes, RadioGalaxyNET) can be used: each
  labelled image becomes a cutout of the survey tile holding its centre, and every annotation is
  carried from the label frame to the cutout grid through the sky.

Class schemes (``training.categories``): ``rgz``, the six RGZ classes ``iC_jP`` of Wu et al.
(2019); ``fr``, FR-I / FR-II / FR-X / R of Gupta et al. (2023). Simulated sources outside the
six RGZ classes are mapped to the nearest one: components clipped to 1..3, peaks to
components..3.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from ..tileio import TileError

__all__ = [
    "SCHEMES",
    "LabelError",
    "rgz_category",
    "truth_categories",
    "annotate_cutout",
    "build_simulated_training_set",
    "read_sky_coco",
    "label_frame_wcs",
    "build_labelled_training_set",
    "read_training_set",
]

log = logging.getLogger(__name__)

SCHEMES = {
    "rgz": ("1C_1P", "1C_2P", "1C_3P", "2C_2P", "2C_3P", "3C_3P"),
    "fr": ("FR-I", "FR-II", "FR-X", "R"),
}


class LabelError(TileError):
    """A label file cannot be used; the message names the file, the record and the problem."""


def _scheme(scheme):
    if scheme not in SCHEMES:
        raise ValueError(f"class scheme must be one of {sorted(SCHEMES)}, got {scheme!r}")
    return SCHEMES[scheme]


def rgz_category(n_components, n_peaks):
    """
    Nearest of the six RGZ classes.

    Parameters
    ----------
    n_components, n_peaks : int
        4-sigma islands and resolved peaks of a source.

    Returns
    -------
    str
        ``f"{c}C_{p}P"`` with ``c = clip(n_components, 1, 3)``, ``p = clip(n_peaks, c, 3)``.
    """
    c = int(min(max(n_components, 1), 3))
    p = int(min(max(n_peaks, c), 3))
    return f"{c}C_{p}P"


def truth_categories(truth_sources, scheme):
    """
    Category name of each truth source in a class scheme.

    Parameters
    ----------
    truth_sources : pandas.DataFrame
        `skysift.columns.TRUTH_SOURCES` rows.
    scheme : {'rgz', 'fr'}

    Returns
    -------
    ndarray of str, one per row.
    """
    _scheme(scheme)
    if scheme == "fr":
        return truth_sources["fr_class"].to_numpy(dtype=object)
    return np.array([rgz_category(c, p) for c, p in zip(truth_sources.n_components, truth_sources.n_peaks)],
                    dtype=object)


def _rle(mask):
    """COCO compressed RLE of a full-image boolean mask, JSON-ready."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _bbox_xywh(mask):
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0]


def annotate_cutout(finite, x_min, y_min, sources, category_ids, *, min_pixels=4):
    """
    COCO annotations of one cutout from source masks on the tile grid.

    Parameters
    ----------
    finite : 2D bool ndarray, ``(size, size)``
        Valid (non-NaN) pixels of the radio cutout.
    x_min, y_min : int
        Tile pixel of the cutout's first pixel.
    sources : list of (source_id, bbox_x_min, bbox_y_min, mask)
        Each source's 2-D boolean mask on the tile grid, starting at its bbox origin.
    category_ids : list of int
        Category id of each source.
    min_pixels : int
        A source is annotated when at least this many finite pixels of its mask lie on the cutout.

    Returns
    -------
    list of dict
        ``bbox`` ``[x, y, w, h]`` in cutout pixels, ``segmentation`` (RLE of the full cutout),
        ``area`` (pixels), ``category_id``, ``iscrowd`` 0, ``source_id`` and ``truncated``
        (the mask is cut by the cutout's edge); ``id``/``image_id`` are left to the caller.
    """
    ny, nx = finite.shape
    out = []
    for (sid, bx, by, m), cat in zip(sources, category_ids):
        x0, y0 = max(bx, x_min), max(by, y_min)
        x1, y1 = min(bx + m.shape[1], x_min + nx), min(by + m.shape[0], y_min + ny)
        if x0 >= x1 or y0 >= y1:
            continue
        full = np.zeros((ny, nx), dtype=bool)
        full[y0 - y_min : y1 - y_min, x0 - x_min : x1 - x_min] = m[y0 - by : y1 - by, x0 - bx : x1 - bx]
        full &= finite
        area = int(full.sum())
        if area < min_pixels:
            continue
        truncated = int(full.sum()) < int(m.sum())
        out.append({"bbox": _bbox_xywh(full), "segmentation": _rle(full), "area": area,
                    "category_id": int(cat), "iscrowd": 0, "source_id": str(sid), "truncated": bool(truncated)})
    return out


def _coco_document(images, annotations, scheme, info):
    cats = [{"id": i + 1, "name": n, "supercategory": "radio source"} for i, n in enumerate(_scheme(scheme))]
    for k, a in enumerate(annotations, start=1):
        a["id"] = k
    return {"info": {**info, "scheme": scheme}, "images": images, "annotations": annotations, "categories": cats}


def _write_json(doc, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def _source_peak_snr(truth_sources, truth_components):
    snr = truth_components.groupby("source_id")["snr"].max()
    return truth_sources["source_id"].map(snr).fillna(0.0).to_numpy(float)


def build_simulated_training_set(radio_path, truth_sources_path, truth_components_path, tile_id, out_h5, out_json,
                                 *, ir_path=None, size=256, overlap=64, scheme="rgz", min_snr=5.0, min_pixels=4):
    """
    Training cutouts and COCO annotations of one simulated tile.

    Parameters
    ----------
    radio_path, truth_sources_path, truth_components_path : str
        Outputs of `skysift.simulate.simulate_tile`.
    tile_id : str
    out_h5, out_json : str
        The cutouts (one shard in the `skysift.cutouts.write_shards` layout) and the COCO JSON;
        each image's ``index`` is its row in the HDF5 file.
    ir_path : str, optional
        Infrared image, resampled onto every cutout.
    size, overlap : int
        Cutout grid (pixels), as for the tiles being catalogued.
    scheme : {'rgz', 'fr'}
    min_snr : float
        A source is annotated when its brightest true component reaches this S/N.
    min_pixels : int
        See `annotate_cutout`.

    Returns
    -------
    dict
        Numbers of images, annotations and annotations per category.
    """
    from ..cutouts import write_shards
    from ..masks import decode_mask
    from ..tileio import open_tile

    names = _scheme(scheme)
    truth = pd.read_parquet(truth_sources_path)
    snr = _source_peak_snr(truth, pd.read_parquet(truth_components_path))
    cats = truth_categories(truth, scheme)
    keep = (snr >= min_snr) & truth["mask_rle"].notna().to_numpy()
    sources, cat_ids = [], []
    for row, cat in zip(truth[keep].itertuples(index=False), cats[keep]):
        if cat not in names:
            continue  # e.g. an FR scheme class the simulator does not produce
        sources.append((row.source_id, int(row.bbox_x_min), int(row.bbox_y_min), decode_mask(row.mask_rle)))
        cat_ids.append(names.index(cat) + 1)
    tile = open_tile(radio_path)
    tmp_h5 = Path(out_h5).with_name(Path(out_h5).name + ".part")
    table = write_shards(tile, tile_id, [str(tmp_h5)], size=size, overlap=overlap, ir_path=ir_path)
    images, annotations = [], []
    boxes = np.array([(b, by, b + m.shape[1], by + m.shape[0]) for _, b, by, m in sources]).reshape(-1, 4)
    with h5py.File(tmp_h5, "r") as f:
        for i, row in enumerate(table.itertuples(index=False)):
            finite = np.isfinite(f["radio"][i])
            near = np.nonzero((boxes[:, 0] < row.x_max) & (boxes[:, 2] > row.x_min)
                              & (boxes[:, 1] < row.y_max) & (boxes[:, 3] > row.y_min))[0]
            anns = annotate_cutout(finite, row.x_min, row.y_min, [sources[k] for k in near],
                                   [cat_ids[k] for k in near], min_pixels=min_pixels)
            for a in anns:
                a["image_id"] = i
            annotations += anns
            images.append({"id": i, "index": i, "file_name": Path(out_h5).name, "cutout_id": row.cutout_id,
                           "width": size, "height": size, "tile_id": tile_id,
                           "x_min": int(row.x_min), "y_min": int(row.y_min)})
    os.replace(tmp_h5, out_h5)
    doc = _coco_document(images, annotations, scheme,
                         {"description": f"skysift training cutouts of simulated tile {tile_id}",
                          "min_snr": min_snr, "size": size, "overlap": overlap})
    _write_json(doc, out_json)
    per_cat = {n: sum(a["category_id"] == k + 1 for a in annotations) for k, n in enumerate(names)}
    log.info("%s: %d training cutouts, %d annotations %s", tile_id, len(images), len(annotations), per_cat)
    return {"images": len(images), "annotations": len(annotations), "per_category": per_cat}


# --------------------------------------------------------------------------- labels by sky position


def _fail(path, what, problem):
    raise LabelError(path, f"{what}: {problem}")


def _decode_segmentation(seg, height, width):
    """Boolean (height, width) mask of a COCO segmentation (polygons, RLE or compressed RLE)."""
    import warnings

    from pycocotools import mask as mask_utils

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        if isinstance(seg, list):
            polys = [p for p in seg if len(p) >= 6]
            if not polys:
                return np.zeros((height, width), dtype=bool)
            rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
        elif isinstance(seg, dict) and isinstance(seg.get("counts"), list):
            rle = mask_utils.frPyObjects(seg, height, width)
        elif isinstance(seg, dict) and isinstance(seg.get("counts"), str):
            rle = {"size": seg["size"], "counts": seg["counts"].encode("ascii")}
        else:
            raise TypeError("segmentation must be polygons or an RLE")
        return mask_utils.decode(rle).astype(bool)


def read_sky_coco(path, scheme):
    """
    Read and validate a COCO JSON whose images are given by sky position.

    Parameters
    ----------
    path : str
        COCO JSON. Each image needs ``id``, ``ra`` and ``dec`` (deg, ICRS, the image centre),
        ``size`` (arcsec, the image side along ``width``), ``width`` and ``height`` (pixels).
        Pixel ``(0, 0)`` is the south-east corner (x grows to the west, y to the north, as in a
        FITS image with ``CDELT1 < 0``) unless ``info.y_axis`` is ``"south"`` (images stored
        top row first, as PNG files are). Each annotation needs ``id``, ``image_id``,
        ``category_id`` and ``bbox`` ``[x, y, w, h]``; ``segmentation`` (polygons or RLE) is
        optional (boxes only: the box is the mask).
    scheme : {'rgz', 'fr'}
        Category names must belong to it.

    Returns
    -------
    images : dict of int to dict
        Validated image records.
    annotations : list of dict
        Each with ``mask`` (bool ``(height, width)``) and ``category`` (name).

    Raises
    ------
    LabelError
        Naming the file and the record: missing or bad field, box outside the image, empty mask,
        unknown category or image.
    """
    names = _scheme(scheme)
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise LabelError(path, f"cannot read the COCO JSON: {err}") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            _fail(path, "document", f"needs a list {key!r}")
    y_south = str(doc.get("info", {}).get("y_axis", "north")).lower() == "south"
    categories = {}
    for c in doc["categories"]:
        if "id" not in c or "name" not in c:
            _fail(path, f"category {c!r}", "needs 'id' and 'name'")
        if c["name"] not in names:
            _fail(path, f"category id={c['id']}", f"unknown category {c['name']!r}; scheme {scheme!r} has {list(names)}")
        categories[c["id"]] = c["name"]
    images = {}
    for im in doc["images"]:
        what = f"image id={im.get('id')!r}"
        for key in ("id", "ra", "dec", "size", "width", "height"):
            if key not in im:
                _fail(path, what, f"missing {key!r}")
        if im["id"] in images:
            _fail(path, what, "duplicate image id")
        if not (0 <= float(im["ra"]) < 360 and -90 <= float(im["dec"]) <= 90):
            _fail(path, what, f"position ra={im['ra']!r}, dec={im['dec']!r} is not on the sky")
        if not (float(im["size"]) > 0 and int(im["width"]) > 0 and int(im["height"]) > 0):
            _fail(path, what, f"size={im['size']!r} arcsec, width={im['width']!r}, height={im['height']!r} must be positive")
        images[im["id"]] = {**im, "y_south": y_south}
    annotations = []
    for a in doc["annotations"]:
        what = f"annotation id={a.get('id')!r} (image {a.get('image_id')!r})"
        for key in ("id", "image_id", "category_id", "bbox"):
            if key not in a:
                _fail(path, what, f"missing {key!r}")
        if a["image_id"] not in images:
            _fail(path, what, "unknown image")
        if a["category_id"] not in categories:
            _fail(path, what, f"unknown category id {a['category_id']!r}")
        im = images[a["image_id"]]
        w_img, h_img = int(im["width"]), int(im["height"])
        bbox = a["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4):
            _fail(path, what, f"bbox must be [x, y, w, h], got {bbox!r}")
        x, y, w, h = (float(v) for v in bbox)
        tol = 0.5
        if w <= 0 or h <= 0 or x < -tol or y < -tol or x + w > w_img + tol or y + h > h_img + tol:
            _fail(path, what, f"bbox {bbox} lies outside the {w_img}x{h_img} image or is empty")
        seg = a.get("segmentation")
        if seg:
            try:
                mask = _decode_segmentation(seg, h_img, w_img)
            except (TypeError, ValueError, KeyError) as err:
                _fail(path, what, f"unreadable segmentation ({err})")
            if mask.shape != (h_img, w_img):
                _fail(path, what, f"mask size {mask.shape} differs from the image ({h_img}, {w_img})")
            if not mask.any():
                _fail(path, what, "empty mask")
        else:
            mask = np.zeros((h_img, w_img), dtype=bool)
            mask[int(math.floor(max(y, 0))) : int(math.ceil(min(y + h, h_img))),
                 int(math.floor(max(x, 0))) : int(math.ceil(min(x + w, w_img)))] = True
        if im["y_south"]:
            mask = mask[::-1]
        annotations.append({"id": a["id"], "image_id": a["image_id"], "category": categories[a["category_id"]],
                            "mask": mask})
    return images, annotations


def label_frame_wcs(ra, dec, size_arcsec, width, height):
    """
    TAN WCS of a labelled image: centred on (ra, dec), north up, east left, square pixels.

    Returns
    -------
    `~astropy.wcs.WCS` with 0-based pixel ``(x, y)`` over ``(width, height)``.
    """
    from astropy.wcs import WCS

    scale = float(size_arcsec) / float(width) / 3600.0
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [float(ra), float(dec)]
    w.wcs.crpix = [(width + 1) / 2.0, (height + 1) / 2.0]
    w.wcs.cdelt = [-scale, scale]
    w.wcs.radesys = "ICRS"
    w.pixel_shape = (int(width), int(height))
    return w


def _read_window(data, x0, y0, size):
    """``(size, size)`` float32 window of an image starting at ``(x0, y0)`` (any sign), NaN-padded."""
    out = np.full((size, size), np.nan, dtype=np.float32)
    ny, nx = data.shape
    ys, ye, xs, xe = max(y0, 0), min(y0 + size, ny), max(x0, 0), min(x0 + size, nx)
    if ys < ye and xs < xe:
        out[ys - y0 : ye - y0, xs - x0 : xe - x0] = data[ys:ye, xs:xe]
    return out


def build_labelled_training_set(coco_path, tiles, out_h5, out_json, *, size=256, scheme="rgz", min_pixels=4):
    """
    Training cutouts of survey tiles from a COCO JSON placed by sky position.

    Parameters
    ----------
    coco_path : str
        See `read_sky_coco`.
    tiles : dict of tile_id to dict(radio_path=str, ir_path=str or None)
        The survey tiles the labels lie on (``training.manifest``).
    out_h5, out_json : str
        Outputs, as `build_simulated_training_set` writes them.
    size : int
        Cutout side (pixels of the survey tile), centred on each labelled image.
    scheme : {'rgz', 'fr'}
    min_pixels : int
        Annotations with fewer pixels on the cutout are dropped.

    Returns
    -------
    dict
        Numbers of images and annotations.

    Raises
    ------
    LabelError
        A bad record, or a labelled image whose centre lies on no tile.
    """
    from astropy.coordinates import SkyCoord

    from ..cutouts import _init_shard, _ir_reprojector, _ShardWriter, resample_to_cutout
    from ..tileio import celestial_header, open_tile

    names = _scheme(scheme)
    images, annotations = read_sky_coco(coco_path, scheme)
    by_image = {}
    for a in annotations:
        by_image.setdefault(a["image_id"], []).append(a)
    opened = {tid: open_tile(t["radio_path"]) for tid, t in sorted(tiles.items())}
    ir = {tid: _ir_reprojector(t.get("ir_path"), opened[tid].wcs, size) for tid, t in sorted(tiles.items())}
    has_ir = all(v is not None for v in ir.values()) and bool(ir)
    out_h5 = Path(out_h5)
    out_h5.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_h5.with_name(out_h5.name + ".part")
    coco_images, coco_anns = [], []
    first = next(iter(opened.values()))
    with h5py.File(tmp, "w") as f:
        _init_shard(f, size, None, has_ir)
        f.create_dataset("tile_id", shape=(0,), maxshape=(None,), dtype=h5py.string_dtype())
        f.attrs.update(tile_id="labelled", shard=0, n_shards=1, size=size, overlap=0,
                       wcs_header=celestial_header(first.header).tostring(), bmaj_arcsec=first.bmaj or np.nan,
                       bmin_arcsec=first.bmin or np.nan, bpa_deg=first.bpa or 0.0, bunit=first.bunit, has_ir=has_ir)
        writer = _ShardWriter(f)
        tile_ids = []
        for n, (iid, im) in enumerate(sorted(images.items(), key=lambda kv: str(kv[0]))):
            pos = SkyCoord(float(im["ra"]), float(im["dec"]), unit="deg", frame="icrs")
            home = None
            for tid, tile in opened.items():
                x, y = (float(v) for v in tile.wcs.world_to_pixel(pos))
                xi, yi = int(round(x)), int(round(y))
                if 0 <= xi < tile.shape[1] and 0 <= yi < tile.shape[0] and np.isfinite(tile.data[yi, xi]):
                    home = tid
                    break
            if home is None:
                raise LabelError(coco_path, f"image id={iid!r}: centre ra={im['ra']}, dec={im['dec']} lies on no "
                                            f"training tile ({', '.join(opened)})")
            tile = opened[home]
            x0, y0 = int(round(x - (size - 1) / 2)), int(round(y - (size - 1) / 2))
            radio = _read_window(tile.data, x0, y0, size)
            frame = label_frame_wcs(im["ra"], im["dec"], im["size"], int(im["width"]), int(im["height"]))
            finite = np.isfinite(radio)
            cats, masks = [], []
            for a in by_image.get(iid, []):
                m = resample_to_cutout(a["mask"].astype(np.float32), frame, tile.wcs, x0, y0, size)
                m = np.nan_to_num(m) >= 0.5
                cats.append(names.index(a["category"]) + 1)
                masks.append(m)
            anns = annotate_cutout(finite, x0, y0, [(f"label{a['id']}", x0, y0, m) for a, m in
                                                    zip(by_image.get(iid, []), masks)], cats, min_pixels=min_pixels)
            for a in anns:
                a["image_id"] = n
            coco_anns += anns
            ir_img = ir[home](x0, y0) if has_ir else None
            writer.append(radio, ir_img, f"{home}_label{iid}", x0, y0)
            tile_ids.append(home)
            coco_images.append({"id": n, "index": n, "file_name": out_h5.name, "cutout_id": f"{home}_label{iid}",
                                "width": size, "height": size, "tile_id": home, "x_min": x0, "y_min": y0,
                                "label_image_id": iid})
        writer.flush()
        f["tile_id"].resize(len(tile_ids), axis=0)
        f["tile_id"][:] = tile_ids
    os.replace(tmp, out_h5)
    doc = _coco_document(coco_images, coco_anns, scheme, {"description": f"skysift training cutouts from {coco_path}",
                                                           "size": size})
    _write_json(doc, out_json)
    log.info("%s: %d labelled cutouts, %d annotations", coco_path, len(coco_images), len(coco_anns))
    return {"images": len(coco_images), "annotations": len(coco_anns)}


def read_training_set(json_path):
    """
    One training set: its COCO document and the path of its HDF5 cutouts.

    Returns
    -------
    doc : dict
        The COCO JSON.
    h5_path : Path
        The HDF5 file named by the images (beside the JSON).
    """
    json_path = Path(json_path)
    doc = json.loads(json_path.read_text())
    files = {im["file_name"] for im in doc["images"]}
    if len(files) > 1:
        raise LabelError(json_path, f"images refer to several files {sorted(files)}; expected one")
    name = files.pop() if files else json_path.with_suffix(".h5").name
    return doc, json_path.parent / name
