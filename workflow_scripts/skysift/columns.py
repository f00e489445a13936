"""
Column contracts of every table skysift writes.

One place defines, per table, each column's name, Arrow type, unit and description. Writers
build their Arrow schema from here (so an empty tile still has the right types), and the unit
and description go into the Parquet field metadata under the keys ``unit`` and
``description``, where pyarrow and DuckDB users read them. The schema metadata also holds
astropy's own description of the table (``table_meta_yaml`` and ``table::len::<column>``, as
astropy's Parquet writer stores them), so ``astropy.table.Table.read(path)`` gives every column
its unit and description and the file metadata as ``Table.meta``. (astropy's Parquet reader has
no nulls: a null string reads as ``'None'``, a null number as NaN.)

Conventions: sky positions are ICRS degrees as float64; fluxes are mJy (integrated) and
mJy/beam (peak, rms); sizes are FWHM in arcsec; position angles are degrees east of north;
pixel coordinates are 0-based ``(x, y)`` in the tile's FITS grid (x along NAXIS1), bounds are
half-open ``[min, max)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

__all__ = ["Column", "TABLES", "arrow_schema", "astropy_metadata", "table_from_columns"]


@dataclass(frozen=True)
class Column:
    """One column: name, Arrow type, unit ('' when dimensionless) and description."""

    name: str
    type: pa.DataType
    unit: str
    description: str


def _c(name, type_, unit, description):
    return Column(name, type_, unit, description)


F64, F32, I64, I32, STR, BOOL = pa.float64(), pa.float32(), pa.int64(), pa.int32(), pa.string(), pa.bool_()

COMPONENTS = [
    _c("component_id", STR, "", "Unique component identifier: <tile_id>_c<serial>"),
    _c("component_name", STR, "", "IAU-style name 'J' + HHMMSS.s + DDMMSS from the ICRS position"),
    _c("island_id", STR, "", "Identifier of the SEP detection island the component belongs to"),
    _c("tile_id", STR, "", "Survey tile the component was extracted from"),
    _c("ra_deg_cont", F64, "deg", "Right ascension (ICRS) of the windowed centroid"),
    _c("dec_deg_cont", F64, "deg", "Declination (ICRS) of the windowed centroid"),
    _c("ra_err", F32, "arcsec", "1-sigma uncertainty of the right ascension (times cos dec)"),
    _c("dec_err", F32, "arcsec", "1-sigma uncertainty of the declination"),
    _c("x", F64, "pix", "0-based x pixel (NAXIS1 axis) of the windowed centroid in the tile"),
    _c("y", F64, "pix", "0-based y pixel (NAXIS2 axis) of the windowed centroid in the tile"),
    _c("flux_peak", F32, "mJy/beam", "Peak surface brightness above the background"),
    _c("flux_peak_err", F32, "mJy/beam", "Uncertainty of flux_peak (local rms)"),
    _c("flux_int", F32, "mJy", "Integrated flux density in the Kron ellipse (sum / beam area)"),
    _c("flux_int_err", F32, "mJy", "Uncertainty of flux_int from the rms map and beam-correlated noise"),
    _c("flux_iso", F32, "mJy", "Isophotal flux density (pixels above threshold / beam area)"),
    _c("maj_axis", F32, "arcsec", "FWHM of the major axis: isophotal second moments corrected for the isophote cut of a Gaussian (not deconvolved)"),
    _c("min_axis", F32, "arcsec", "FWHM of the minor axis of the second-moment ellipse (not deconvolved)"),
    _c("pos_ang", F32, "deg", "Position angle of the major axis, east of north"),
    _c("kron_radius", F32, "", "Kron radius in units of the ellipse semi-axes"),
    _c("rms_image", F32, "mJy/beam", "Local rms noise from the background map at the component"),
    _c("snr", F32, "", "flux_peak / rms_image"),
    _c("npix", I32, "pix", "Number of pixels above the detection threshold"),
    _c("sep_flags", I32, "", "SEP extraction flags (1 merged, 2 truncated, 4..: see sep docs)"),
    _c("flags", I32, "", "skysift flags: 1 NaN within the aperture, 2 touches a strip seam, 4 SEP limit raised, 8 found in the residual pass"),
]

CUTOUTS = [
    _c("cutout_id", STR, "", "Unique cutout identifier: <tile_id>_y<row>_x<col>"),
    _c("tile_id", STR, "", "Survey tile the cutout is cut from"),
    _c("shard", I32, "", "Inference shard holding the cutout (results/cutouts/<tile>/shard-<k>.h5)"),
    _c("row", I32, "", "Row index of the cutout in the tile grid"),
    _c("col", I32, "", "Column index of the cutout in the tile grid"),
    _c("x_min", I32, "pix", "First tile x pixel of the cutout"),
    _c("x_max", I32, "pix", "One past the last tile x pixel of the cutout"),
    _c("y_min", I32, "pix", "First tile y pixel of the cutout"),
    _c("y_max", I32, "pix", "One past the last tile y pixel of the cutout"),
    _c("core_x_min", I32, "pix", "First tile x pixel of the core the cutout owns"),
    _c("core_x_max", I32, "pix", "One past the last x pixel of the owned core"),
    _c("core_y_min", I32, "pix", "First tile y pixel of the owned core"),
    _c("core_y_max", I32, "pix", "One past the last y pixel of the owned core"),
    _c("ra_centre", F64, "deg", "Right ascension (ICRS) of the cutout centre"),
    _c("dec_centre", F64, "deg", "Declination (ICRS) of the cutout centre"),
    _c("nan_frac", F32, "", "Fraction of blanked (NaN) pixels in the cutout"),
    _c("noise", F32, "mJy/beam", "MAD-clipped rms of the cutout (NaN when too few valid pixels)"),
]

SOURCES = [
    _c("source_id", STR, "", "Unique source identifier: <tile_id>_s<serial>"),
    _c("source_name", STR, "", "IAU-style name 'J' + HHMMSS.s + DDMMSS from the ICRS position"),
    _c("tile_id", STR, "", "Survey tile the source belongs to"),
    _c("ra", F64, "deg", "Right ascension (ICRS) of the flux-weighted centroid"),
    _c("dec", F64, "deg", "Declination (ICRS) of the flux-weighted centroid"),
    _c("n_components", I32, "", "Number of SEP components associated with the source"),
    _c("flux_int", F32, "mJy", "Sum of the components' integrated flux densities"),
    _c("flux_peak", F32, "mJy/beam", "Highest component peak surface brightness"),
    _c("component_ids", pa.list_(STR), "", "component_id of every component of the source"),
    _c("flags", I32, "", "skysift flags: bitwise OR of the components' flags, and 16 detection score < 0.8, "
                         "32 mask touches blanked (NaN) pixels, 64 mask cut by a cutout edge, 128 no SEP component"),
    _c("origin", STR, "", "How the source was formed: 'detection' (detector mask) or 'component' (a lone SEP component)"),
    _c("n_islands", I32, "", "Number of distinct SEP islands among the components (RGZ 'components')"),
    _c("n_peaks", I32, "", "Number of SEP components: deblended peaks (RGZ 'peaks')"),
    _c("morph_class", STR, "", "Morphology class from the detector (null for lone components)"),
    _c("morph_score", F32, "", "Detector probability of morph_class (CLARAN's P)"),
    _c("morph_probs", pa.list_(F32), "", "Detector probability of every class, in the order of the 'morph_classes' file metadata"),
    _c("las", F32, "arcsec", "Largest angular size of the detection mask"),
    _c("host_ra", F64, "deg", "Right ascension (ICRS) of the infrared host: maximum of the IR weighted by the source mask"),
    _c("host_dec", F64, "deg", "Declination (ICRS) of the infrared host"),
    _c("host_score", F32, "", "Host confidence: weighted IR peak over (itself + the next distinct peak); 1 unambiguous"),
    _c("bbox_x_min", I32, "pix", "First tile x pixel of the mask (origin of mask_rle)"),
    _c("bbox_y_min", I32, "pix", "First tile y pixel of the mask (origin of mask_rle)"),
    _c("bbox_x_max", I32, "pix", "One past the last tile x pixel of the mask"),
    _c("bbox_y_max", I32, "pix", "One past the last tile y pixel of the mask"),
    _c("mask_rle", STR, "", "COCO compressed RLE (JSON) of the detection mask within the bbox, rows = y"),
    _c("model_id", STR, "", "SHA-256 (first 16 hex) of the detector model file (null without detection)"),
]

PROVENANCE = [
    _c("skysift_version", STR, "", "skysift version that wrote the row"),
    _c("config_hash", STR, "", "SHA-256 (first 16 hex) of the resolved workflow configuration"),
]

SOURCE_LINK = [
    _c("source_id", STR, "", "Source the component belongs to (sources table)"),
]

QUALITY_CLASSES = ("good", "artefacts", "high_noise", "striping", "poor_psf")
"""Image-quality classes, in the order of every quality probability vector skysift writes."""

SOM = [
    _c("som_bmu_x", I32, "", "First (x) index of the component's best-matching unit on the quality SOM (-1: not mapped)"),
    _c("som_bmu_y", I32, "", "Second (y) index of the component's best-matching unit on the quality SOM (-1: not mapped)"),
    _c("som_cluster", I32, "", "K-means cluster (0-based) of the SOM codebook holding the best-matching unit (-1: not mapped)"),
]

SOM_MAP = [_c("component_id", STR, "", "Component (components table)")] + SOM


def _quality_columns(prefix="quality_prob_", what="M3, the production classifier"):
    return [_c(f"{prefix}{k}", F32, "", f"Probability that the quality region is '{k}' ({what})")
            for k in QUALITY_CLASSES]


QUALITY = [
    _c("quality_region", STR, "", "Quality region holding the row: <tile_id>_q<row>_<col> (null: off the region grid)"),
    _c("quality_class", STR, "", "Image-quality class of the quality region (most probable class; null: not judged)"),
] + _quality_columns()

CATALOGUE_COMPONENTS = COMPONENTS + SOURCE_LINK + SOM + QUALITY + PROVENANCE
CATALOGUE_SOURCES = SOURCES + QUALITY + PROVENANCE
CATALOGUE_CUTOUTS = CUTOUTS + QUALITY + PROVENANCE

REGIONS = [
    _c("region_id", STR, "", "Quality region identifier: <tile_id>_q<row>_<col>"),
    _c("tile_id", STR, "", "Survey tile"),
    _c("row", I32, "", "Row of the region in the tile's region grid"),
    _c("col", I32, "", "Column of the region in the tile's region grid"),
    _c("x_min", I32, "pix", "First tile x pixel of the region"),
    _c("x_max", I32, "pix", "One past the last tile x pixel of the region"),
    _c("y_min", I32, "pix", "First tile y pixel of the region"),
    _c("y_max", I32, "pix", "One past the last tile y pixel of the region"),
    _c("valid_fraction", F64, "", "Non-blank pixels of the region over region_size**2"),
]

QUALITY_REGIONS = REGIONS + [
    _c("n_components", I32, "", "SEP components in the region (mapped on the SOM)"),
    _c("quality_class", STR, "", "Most probable class of M3, the production classifier (null: no valid pixel)"),
] + _quality_columns() + [
    _c("quality_class_m1", STR, "", "Most probable class of M1 (CNN on the representative stamps)"),
] + _quality_columns("quality_prob_m1_", "M1, CNN on the stamps") + [
    _c("quality_class_m2", STR, "", "Most probable class of M2 (MLP on the cluster counts)"),
] + _quality_columns("quality_prob_m2_", "M2, MLP on the counts")

TRUTH_REGIONS = REGIONS + [
    _c("quality_class", STR, "", "True image-quality class: the dominant defect, or 'good'"),
    _c("secondary_class", STR, "", "Weaker second defect of a mixed region ('' when none)"),
    _c("rms_factor", F64, "", "Noise multiplier in the region interior (high_noise)"),
    _c("psf_smear_maj", F64, "arcsec", "FWHM major axis of the extra smearing kernel (poor_psf; NaN: none)"),
    _c("psf_smear_min", F64, "arcsec", "FWHM minor axis of the extra smearing kernel (poor_psf; NaN: none)"),
    _c("psf_smear_pa", F64, "deg", "Position angle of the smearing kernel, east of north (poor_psf; NaN: none)"),
    _c("stripe_amplitude", F64, "", "Peak amplitude of the background ripples in units of the local rms (striping)"),
    _c("stripe_wavelength", F64, "arcsec", "Mean wavelength of the background ripples (striping; NaN: none)"),
    _c("artefact_level", F64, "", "Artefact amplitude at one beam over the carrier's peak (artefacts)"),
    _c("artefact_source_id", STR, "", "Truth source carrying the artefacts (null: none)"),
]

TRUTH_COMPONENTS = [
    _c("component_id", STR, "", "Truth component identifier: <tile_id>_t<serial>"),
    _c("source_id", STR, "", "Truth source the component belongs to"),
    _c("tile_id", STR, "", "Simulated tile"),
    _c("ra", F64, "deg", "Right ascension (ICRS) of the component (peak of compact, centroid of island)"),
    _c("dec", F64, "deg", "Declination (ICRS)"),
    _c("x", F64, "pix", "0-based x pixel in the tile"),
    _c("y", F64, "pix", "0-based y pixel in the tile"),
    _c("flux_int", F64, "mJy", "True integrated flux density"),
    _c("flux_peak", F64, "mJy/beam", "True peak surface brightness of the noiseless, beam-convolved model"),
    _c("rms", F64, "mJy/beam", "True local noise rms at the component"),
    _c("snr", F64, "", "flux_peak / rms"),
    _c("maj_axis", F64, "arcsec", "FWHM major axis after beam convolution (compact components)"),
    _c("min_axis", F64, "arcsec", "FWHM minor axis after beam convolution (compact components)"),
    _c("pos_ang", F64, "deg", "Position angle east of north (compact components)"),
    _c("extended", BOOL, "", "True for an island of an extended source, False for a compact source"),
    _c("in_footprint", BOOL, "", "True when the position lies on valid (non-NaN) pixels"),
]

TRUTH_SOURCES = [
    _c("source_id", STR, "", "Truth source identifier: <tile_id>_t<serial>"),
    _c("tile_id", STR, "", "Simulated tile"),
    _c("morphology", STR, "", "Generated structure: compact, fr1, fr2 or double (core-less)"),
    _c("fr_class", STR, "", "FR-I / FR-II / FR-X / R from the peak separation over extent a/b (Gupta+23 2.3.2)"),
    _c("rgz_class", STR, "", "RGZ class iC_jP: 4-sigma islands x resolved peaks (Wu+19)"),
    _c("n_components", I32, "", "Number of separate 4-sigma islands of the noiseless source"),
    _c("n_peaks", I32, "", "Number of resolved peaks of the noiseless source"),
    _c("ra", F64, "deg", "Right ascension (ICRS) of the source centre (core or midpoint)"),
    _c("dec", F64, "deg", "Declination (ICRS) of the source centre"),
    _c("x", F64, "pix", "0-based x pixel of the source centre"),
    _c("y", F64, "pix", "0-based y pixel of the source centre"),
    _c("flux_int", F64, "mJy", "True total integrated flux density"),
    _c("las", F64, "arcsec", "Largest angular size of the 3-sigma mask"),
    _c("host_ra", F64, "deg", "Right ascension (ICRS) of the infrared host"),
    _c("host_dec", F64, "deg", "Declination (ICRS) of the infrared host"),
    _c("host_w1_mag", F64, "mag", "W1-like (Vega) magnitude of the host"),
    _c("bbox_x_min", I32, "pix", "First tile x pixel of the 3-sigma mask"),
    _c("bbox_y_min", I32, "pix", "First tile y pixel of the 3-sigma mask"),
    _c("bbox_x_max", I32, "pix", "One past the last x pixel of the 3-sigma mask"),
    _c("bbox_y_max", I32, "pix", "One past the last y pixel of the 3-sigma mask"),
    _c("mask_rle", STR, "", "COCO compressed RLE (JSON) of the 3-sigma mask within the bbox, rows = y"),
    _c("component_ids", pa.list_(STR), "", "Truth component ids of the source"),
    _c("in_footprint", BOOL, "", "True when the source centre lies on valid pixels"),
]

DETECTIONS = [
    _c("detection_id", STR, "", "Unique detection identifier: <cutout_id>_d<serial>, serial by the detector's decreasing "
       "score (before the peak recount)"),
    _c("cutout_id", STR, "", "Cutout the detection was made on"),
    _c("tile_id", STR, "", "Survey tile"),
    _c("box_x_min", F32, "pix", "Box left edge in cutout pixels (pixel i spans [i, i+1))"),
    _c("box_y_min", F32, "pix", "Box lower edge in cutout pixels"),
    _c("box_x_max", F32, "pix", "Box right edge in cutout pixels"),
    _c("box_y_max", F32, "pix", "Box upper edge in cutout pixels"),
    _c("tile_box_x_min", F32, "pix", "Box left edge in tile pixels"),
    _c("tile_box_y_min", F32, "pix", "Box lower edge in tile pixels"),
    _c("tile_box_x_max", F32, "pix", "Box right edge in tile pixels"),
    _c("tile_box_y_max", F32, "pix", "Box upper edge in tile pixels"),
    _c("morph_class", STR, "", "Most probable morphology class"),
    _c("score", F32, "", "Probability of morph_class"),
    _c("class_probs", pa.list_(F32), "", "Probability of every class, in the order of the 'categories' file metadata "
       "(after the peak recount when the 'recount_peaks' file metadata is true)"),
    _c("model_probs", pa.list_(F32), "", "The detector's own class probabilities, before the peak recount"),
    _c("n_peaks", I32, "", "Radio peaks in the mask: local maxima above 4 sigma, half a beam apart, dipping 0.5 sigma "
       "towards every brighter one (-1: beam or noise unknown)"),
    _c("mask_x_min", I32, "pix", "Tile x pixel of the first column of mask_rle"),
    _c("mask_y_min", I32, "pix", "Tile y pixel of the first row of mask_rle"),
    _c("mask_rle", STR, "", "COCO compressed RLE (JSON) of the binary mask (soft mask >= 0.5) within its own bbox"),
    _c("mask_npix", I32, "pix", "Pixels in the mask"),
    _c("edges", I32, "", "Cutout edges the mask touches: 1 left (x=0), 2 right, 4 bottom (y=0), 8 top"),
    _c("touches_nan", BOOL, "", "The mask touches blanked (NaN) pixels"),
    _c("host_x", F64, "pix", "Tile x pixel of the infrared host candidate (NaN: none, or no IR)"),
    _c("host_y", F64, "pix", "Tile y pixel of the infrared host candidate"),
    _c("host_score", F32, "", "Host confidence (see sources.host_score)"),
]

TABLES = {
    "components": COMPONENTS,
    "cutouts": CUTOUTS,
    "catalogue_components": CATALOGUE_COMPONENTS,
    "catalogue_sources": CATALOGUE_SOURCES,
    "catalogue_cutouts": CATALOGUE_CUTOUTS,
    "truth_components": TRUTH_COMPONENTS,
    "truth_sources": TRUTH_SOURCES,
    "detections": DETECTIONS,
    "truth_regions": TRUTH_REGIONS,
    "quality_regions": QUALITY_REGIONS,
    "som_map": SOM_MAP,
}


def arrow_schema(columns, metadata=None):
    """
    Arrow schema with the unit and description of each column in its field metadata.

    Parameters
    ----------
    columns : list of Column
    metadata : dict of str to str, optional
        Table-level metadata (provenance) stored in the schema.
    """
    fields = [
        pa.field(c.name, c.type, metadata={"unit": c.unit, "description": c.description})
        for c in columns
    ]
    return pa.schema(fields, metadata=metadata)


def table_from_columns(data, columns, metadata=None):
    """
    Arrow table in column order with the contract's types, from a mapping of arrays.

    Parameters
    ----------
    data : mapping of str to array-like, or pandas.DataFrame
        Every contract column must be present (extra keys raise, so typos do not slip by).
    columns : list of Column
    metadata : dict, optional
        Table-level metadata.
    """
    names = [c.name for c in columns]
    keys = list(data.keys())
    missing = [n for n in names if n not in keys]
    extra = [k for k in keys if k not in names]
    if missing or extra:
        raise KeyError(f"table columns do not match the contract: missing {missing}, unexpected {extra}")
    arrays = [pa.array(_values(data[c.name]), type=c.type, from_pandas=True) for c in columns]
    metadata = {**(metadata or {}), **astropy_metadata(columns, arrays, metadata)}
    return pa.Table.from_arrays(arrays, schema=arrow_schema(columns, metadata))


def astropy_metadata(columns, arrays, metadata=None):
    """
    Schema metadata with which ``astropy.table.Table.read(format="parquet")`` restores the table.

    Parameters
    ----------
    columns : list of Column
    arrays : list of pyarrow.Array, one per column
        The data, for the length of the longest string of each string column.
    metadata : dict of str to str, optional
        Table-level metadata, which astropy then gives as ``Table.meta``.

    Returns
    -------
    dict of str to str
        ``table_meta_yaml`` (astropy's YAML header: per column its name, type, unit and
        description; ``meta``) and ``table::len::<name>`` for every string column: its longest
        value, at least 1, and at least 4 where a null reads as ``'None'``.
    """
    import pyarrow.compute as pc
    from astropy.table import Column as AstropyColumn, Table
    from astropy.table.meta import get_yaml_from_table

    header = Table(meta=dict(metadata or {}))
    lengths = {}
    for c, values in zip(columns, arrays):
        nested = pa.types.is_list(c.type)
        value_type = c.type.value_type if nested else c.type
        if pa.types.is_string(value_type):
            flat = pc.list_flatten(values) if nested else values
            longest = (pc.max(pc.utf8_length(flat)).as_py() if len(flat) else None) or 1
            if flat.null_count:  # astropy reads a null as the string 'None': room for it whole
                longest = max(longest, len("None"))
            lengths[f"table::len::{c.name}"] = str(longest)
            dtype = object if nested else "U1"
        else:
            dtype = object if nested else value_type.to_pandas_dtype()
        header.add_column(AstropyColumn(name=c.name, dtype=dtype, length=0, unit=c.unit or None,
                                        description=c.description))
    return {"table_meta_yaml": "\n".join(get_yaml_from_table(header)), **lengths}


def _values(v):
    """Plain Python/numpy values from a pandas Series or anything array-like."""
    return v.to_numpy() if hasattr(v, "to_numpy") else v
