"""
Image defects of the simulated survey, injected per quality region, with their truth labels.

Radio analogues of the five image-quality classes of Teimoorinia et al. (2020), who sorted
MegaCam CCDs into good, bad tracking, really bad tracking, bad seeing and background problems:

``good``
    Nothing added.
``artefacts``
    ASKAP-like calibration artefacts around a bright source: radial sidelobe spokes (6, 8 or 12,
    one beam wide) and concentric ripples, falling as ``r**-1.5`` from ``ARTEFACT_LEVEL`` of the
    source peak at one beam. The brightest compact source of the region (peak >=
    ``ARTEFACT_MIN_PEAK``, on valid sky away from the region edge) carries them; when the region
    has none, a bright compact source is added there (and to the truth) to carry them.
``high_noise``
    The noise rms multiplied by ``HIGH_NOISE_FACTOR`` (3-5), as at a footprint edge or under a
    bad beam; the truth ``rms`` (and ``snr``) of the components there include the factor.
``striping``
    Low-level ripples of the background (one or two plane waves of ``STRIPE_WAVELENGTH``, 1.3-3
    beams, as a bad baseline or RFI leaves them; total amplitude ``STRIPE_AMPLITUDE`` times the
    local rms): the seed's background problems.
``poor_psf``
    Every source centred in the region is smeared by an extra elongated Gaussian
    (``PSF_SMEAR_MAJ`` x ``PSF_SMEAR_MIN`` FWHM, random position angle), flux conserved: the
    seed's bad seeing and bad tracking. The truth peak, sizes and S/N are those of the smeared
    source.

A region's class is drawn so that each tile holds the configured fractions as nearly as its
number of regions allows (regions with less than ``MIN_VALID_FOR_DEFECT`` of valid sky stay
``good``). With probability ``mixed_fraction`` a defective region also gets a second, different
defect at ``SECONDARY_STRENGTH`` of its strength; the label stays the dominant (first) class.
Every defect is confined to its region and fades in over ``TAPER_PX`` pixels inside the region
edge, so the neighbouring regions keep their own label.

All draws come from a generator of their own (seeded from the tile seed), so a tile without
defects is byte-identical to one simulated before defects existed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from .columns import QUALITY_CLASSES
from .regions import region_grid

__all__ = [
    "QUALITY_CLASSES",
    "DEFECT_CLASSES",
    "RegionDefect",
    "check_defect_settings",
    "plan_defects",
    "inject_defects",
    "smear_sources",
    "artefact_carriers",
    "rms_factor_at",
    "apply_noise_defects",
    "add_defect_patterns",
    "truth_region_rows",
]

log = logging.getLogger(__name__)

DEFECT_CLASSES = QUALITY_CLASSES[1:]

HIGH_NOISE_FACTOR = (3.0, 5.0)  # rms multiplier
PSF_SMEAR_MAJ = (15.0, 40.0)  # arcsec, FWHM of the extra smearing kernel (major axis)
PSF_SMEAR_MIN = (0.0, 6.0)  # arcsec, FWHM of its minor axis
STRIPE_AMPLITUDE = (2.5, 3.5)  # peak amplitude of the ripples, in units of the local rms
STRIPE_WAVELENGTH = (20.0, 45.0)  # arcsec: 1.3-3 beams (baselines of 1.5-3 km at 943 MHz): fringes in a stamp
ARTEFACT_LEVEL = (0.008, 0.025)  # artefact amplitude at one beam from the source, over its peak
ARTEFACT_FALLOFF = 1.5  # the amplitude falls as r**-ARTEFACT_FALLOFF
ARTEFACT_SPOKES = (6, 8, 12)
ARTEFACT_RING_PERIOD = (3.0, 6.0)  # beam FWHM
ARTEFACT_RING_WEIGHT = 0.15  # ripple amplitude relative to a spoke
ARTEFACT_MIN_PEAK = 0.2  # Jy/beam: fainter sources get no artefacts, a brighter one is added
ARTEFACT_ADDED_FLUX = (0.2, 2.0)  # Jy, log-uniform, for an added bright compact source
ARTEFACT_RADIUS = 0.45  # of the region side: extent of the pattern
SECONDARY_STRENGTH = 0.25
MIN_VALID_FOR_DEFECT = 0.05
SEED_STREAM = 0xDEFEC7  # second word of the defect generator's seed: [tile seed, SEED_STREAM]
TAPER_PX = 32


@dataclass
class RegionDefect:
    """
    Defects of one quality region.

    Attributes
    ----------
    region_id : str
    row, col : int
        Position in the region grid.
    x_min, x_max, y_min, y_max : int
        Half-open pixel bounds.
    quality_class : str
        Truth label: the dominant class.
    secondary_class : str
        Weaker second defect, or ``""``.
    rms_factor : float
        Noise multiplier in the region interior (1 without ``high_noise``).
    psf_smear : tuple of float or None
        ``(maj, min, pa)`` of the extra smearing kernel: FWHM in arcsec, degrees east of north.
    stripes : list of tuple
        ``(amplitude_rms, wavelength_px, angle_rad, phase_rad)`` per plane wave.
    artefact_level : float
        Artefact amplitude at one beam over the carrier's peak (0 without artefacts).
    artefact_spokes : int
    artefact_angle : float
        Direction of the first spoke, radians from +x.
    artefact_ring_period : float
        Ripple period, pixels.
    artefact_source : int
        Index of the carrier in the source list (-1: none yet).
    """

    region_id: str
    row: int
    col: int
    x_min: int
    x_max: int
    y_min: int
    y_max: int
    quality_class: str = "good"
    secondary_class: str = ""
    rms_factor: float = 1.0
    psf_smear: tuple | None = None
    stripes: list = field(default_factory=list)
    artefact_level: float = 0.0
    artefact_spokes: int = 0
    artefact_angle: float = 0.0
    artefact_ring_period: float = 0.0
    artefact_source: int = -1

    def contains(self, x, y):
        """True where pixel position ``(x, y)`` lies in the region."""
        xp, yp = np.floor(np.asarray(x) + 0.5), np.floor(np.asarray(y) + 0.5)
        return (xp >= self.x_min) & (xp < self.x_max) & (yp >= self.y_min) & (yp < self.y_max)

    def taper(self, x, y):
        """Weight of the defect at ``(x, y)``: 1 inside, cosine fade over TAPER_PX, 0 outside."""
        def ramp(d):
            t = np.clip(np.asarray(d, dtype=float) / TAPER_PX, 0.0, 1.0)
            return 0.5 - 0.5 * np.cos(np.pi * t)

        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        wx = ramp(np.minimum(x - self.x_min + 0.5, self.x_max - 0.5 - x))
        wy = ramp(np.minimum(y - self.y_min + 0.5, self.y_max - 0.5 - y))
        return wx * wy


def check_defect_settings(defects):
    """
    Validate the ``defects`` simulation settings and return normalised class fractions.

    Parameters
    ----------
    defects : dict
        ``{"fractions": {class: weight}, "mixed_fraction": p}``; both optional. No fractions
        (or an empty dict) means every region is ``good``.

    Returns
    -------
    fractions : dict of str to float
        Over `QUALITY_CLASSES`, summing to 1.
    mixed_fraction : float

    Raises
    ------
    ValueError
        Unknown key or class, negative weight, all weights zero, mixed_fraction outside [0, 1].
    """
    defects = dict(defects or {})
    unknown = set(defects) - {"fractions", "mixed_fraction"}
    if unknown:
        raise ValueError(f"unknown defect setting(s) {sorted(unknown)}; expected fractions, mixed_fraction")
    weights = dict(defects.get("fractions") or {"good": 1.0})
    bad = [k for k in weights if k not in QUALITY_CLASSES]
    if bad:
        raise ValueError(f"unknown quality class(es) {bad} in defects.fractions; expected {list(QUALITY_CLASSES)}")
    if any(not np.isfinite(v) or v < 0 for v in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"defects.fractions must be non-negative with a positive sum, got {weights!r}")
    total = float(sum(weights.values()))
    fractions = {k: float(weights.get(k, 0.0)) / total for k in QUALITY_CLASSES}
    mixed = float(defects.get("mixed_fraction", 0.0))
    if not 0.0 <= mixed <= 1.0:
        raise ValueError(f"defects.mixed_fraction must lie in [0, 1], got {mixed!r}")
    return fractions, mixed


def _stratified_classes(rng, n, fractions):
    """n class names holding the fractions as nearly as possible (largest remainder), shuffled."""
    p = np.array([fractions[k] for k in QUALITY_CLASSES])
    exact = p * n
    counts = np.floor(exact).astype(int)
    short = n - counts.sum()
    if short > 0:
        # ties broken at random so that small tiles do not always favour the same class
        order = np.lexsort((rng.random(len(p)), -(exact - counts)))
        counts[order[:short]] += 1
    labels = np.repeat(np.array(QUALITY_CLASSES), counts)
    return list(rng.permutation(labels))


def _draw_defect(rng, d: RegionDefect, kind, strength, pixel_scale, beam_fwhm):
    """Parameters of one defect (``strength`` 1 for the dominant one) into ``d``."""
    if kind == "high_noise":
        f = rng.uniform(*HIGH_NOISE_FACTOR)
        d.rms_factor *= 1.0 + strength * (f - 1.0)
    elif kind == "poor_psf":
        d.psf_smear = (strength * rng.uniform(*PSF_SMEAR_MAJ), strength * rng.uniform(*PSF_SMEAR_MIN),
                       rng.uniform(0.0, 180.0))
    elif kind == "striping":
        amp = strength * rng.uniform(*STRIPE_AMPLITUDE)
        n_waves = 1 + int(rng.random() < 0.5)
        split = rng.dirichlet(np.ones(n_waves)) if n_waves > 1 else np.ones(1)
        for a in split:
            d.stripes.append((float(amp * a), float(rng.uniform(*STRIPE_WAVELENGTH) / pixel_scale),
                              float(rng.uniform(0.0, np.pi)), float(rng.uniform(0.0, 2 * np.pi))))
    elif kind == "artefacts":
        d.artefact_level = strength * rng.uniform(*ARTEFACT_LEVEL)
        d.artefact_spokes = int(rng.choice(ARTEFACT_SPOKES))
        d.artefact_angle = float(rng.uniform(0.0, 2 * np.pi))
        d.artefact_ring_period = float(rng.uniform(*ARTEFACT_RING_PERIOD) * beam_fwhm / pixel_scale)
    elif kind != "good":
        raise ValueError(f"unknown quality class {kind!r}")


def plan_defects(rng, settings, region_size, valid_fraction_of):
    """
    Draw the class and defect parameters of every quality region of a tile.

    Parameters
    ----------
    rng : numpy.random.Generator
        The defect generator (not the one drawing the sky).
    settings : skysift.simulate.SimulationSettings
        ``size``, ``pixel_scale``, ``beam_fwhm`` and ``defects`` are used.
    region_size : int
        Region side (pixels).
    valid_fraction_of : callable
        ``valid_fraction_of(x_min, x_max, y_min, y_max) -> float``: expected valid fraction.

    Returns
    -------
    list of RegionDefect, row-major as in `skysift.regions.region_grid`.
    """
    fractions, mixed = check_defect_settings(settings.defects)
    grid = region_grid((settings.size, settings.size), region_size, "")
    plan = [RegionDefect(r.region_id, int(r.row), int(r.col), int(r.x_min), int(r.x_max), int(r.y_min), int(r.y_max))
            for r in grid.itertuples(index=False)]
    usable = [d for d in plan if valid_fraction_of(d.x_min, d.x_max, d.y_min, d.y_max) >= MIN_VALID_FOR_DEFECT]
    if fractions["good"] >= 1.0:
        return plan
    for d, kind in zip(usable, _stratified_classes(rng, len(usable), fractions)):
        d.quality_class = str(kind)
        if kind == "good":
            continue
        _draw_defect(rng, d, kind, 1.0, settings.pixel_scale, settings.beam_fwhm)
        if rng.random() < mixed:
            d.secondary_class = str(rng.choice([k for k in DEFECT_CLASSES if k != kind]))
            _draw_defect(rng, d, d.secondary_class, SECONDARY_STRENGTH, settings.pixel_scale, settings.beam_fwhm)
    counts = {k: sum(d.quality_class == k for d in plan) for k in QUALITY_CLASSES}
    log.info("defects: %d regions of %d px: %s", len(plan), region_size, counts)
    return plan


def smear_sources(sources, plan, settings):
    """
    Convolve the sources centred in ``poor_psf`` regions with the region's smearing kernel.

    Parameters
    ----------
    sources : list of skysift.simulate.SourceModel
        Modified in place (their ``gaussians``); integrated fluxes are kept.
    plan : list of RegionDefect
    settings : skysift.simulate.SimulationSettings

    Returns
    -------
    int, the number of sources smeared.
    """
    from .simulate import Gaussians, convolve_gaussians

    from .regions import region_index

    n = 0
    ps = settings.pixel_scale
    idx = region_index([s.x for s in sources], [s.y for s in sources], (settings.size, settings.size),
                       settings.region_size)
    for src, i in zip(sources, idx):
        d = plan[i] if i >= 0 else None
        if d is None or d.psf_smear is None:
            continue
        kmaj, kmin, kpa = d.psf_smear
        g = src.gaussians
        maj, mn, pa = convolve_gaussians(g.maj, g.min, g.pa, kmaj / ps, kmin / ps, kpa)
        src.gaussians = Gaussians(g.x, g.y, maj, mn, pa, g.peak * (g.maj * g.min) / (maj * mn))
        n += 1
    return n


def artefact_carriers(rng, sources, plan, settings):
    """
    Choose (or add) the bright compact source carrying the artefacts of each ``artefacts`` region.

    Parameters
    ----------
    rng : numpy.random.Generator
        The defect generator.
    sources : list of skysift.simulate.SourceModel
        Added sources are appended (they are real sky sources and enter the truth tables).
    plan : list of RegionDefect
        ``artefact_source`` is set for regions with artefacts.
    settings : skysift.simulate.SimulationSettings

    Returns
    -------
    int, the number of sources added.
    """
    from .simulate import (GALAXY_SIZE_RANGE, HOST_MAG_COMPACT, HOST_OFFSET_COMPACT, SourceModel, _compact_gaussians,
                           footprint_distance)

    added = 0
    margin = max(TAPER_PX, 2 * settings.beam_fwhm / settings.pixel_scale)
    xs = np.array([s.x for s in sources])
    ys = np.array([s.y for s in sources])
    peaks = np.array([float(s.gaussians.peak.max()) if s.kind == "compact" else 0.0 for s in sources])
    for d in plan:
        if d.artefact_level <= 0:
            continue
        side = min(d.x_max - d.x_min, d.y_max - d.y_min)
        m = min(margin + 0.15 * side, 0.45 * side)
        inner = (xs >= d.x_min + m) & (xs < d.x_max - m) & (ys >= d.y_min + m) & (ys < d.y_max - m)
        inner &= footprint_distance(xs, ys, settings) > margin  # on valid sky: its artefacts show
        cand = np.nonzero(inner & (peaks >= ARTEFACT_MIN_PEAK))[0]
        if cand.size:
            d.artefact_source = int(cand[np.argmax(peaks[cand])])
            continue
        for _ in range(100):  # a position on valid sky (the region holds some: MIN_VALID_FOR_DEFECT)
            x = rng.uniform(d.x_min + m, d.x_max - m)
            y = rng.uniform(d.y_min + m, d.y_max - m)
            if footprint_distance(x, y, settings) > margin:
                break
        flux = math.exp(rng.uniform(*np.log(ARTEFACT_ADDED_FLUX)))
        maj = rng.uniform(0.5, 3.0)
        g = _compact_gaussians(np.array([x]), np.array([y]), np.array([flux]), np.array([maj]),
                               np.array([rng.uniform(0.5, 1.0)]), np.array([rng.uniform(0.0, 180.0)]), settings)
        hdx, hdy = rng.normal(0.0, HOST_OFFSET_COMPACT, 2)
        sources.append(SourceModel("compact", float(x), float(y), float(flux), g, float(hdx), float(hdy),
                                   float(rng.uniform(*HOST_MAG_COMPACT)), float(rng.uniform(*GALAXY_SIZE_RANGE))))
        d.artefact_source = len(sources) - 1
        added += 1
    return added


def rms_factor_at(x, y, plan):
    """
    Noise multiplier of the defects at pixel positions (1 outside ``high_noise`` regions).

    Parameters
    ----------
    x, y : array-like
        0-based tile pixels.
    plan : list of RegionDefect

    Returns
    -------
    float64 ndarray, shape of ``x``.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    f = np.ones(np.broadcast(x, y).shape)
    for d in plan:
        if d.rms_factor != 1.0 and np.any(d.contains(x, y)):
            f += (d.rms_factor - 1.0) * d.taper(x, y)
    return f


def _box(d, n):
    """Slices and pixel coordinates of a region box clipped to the tile."""
    x0, x1, y0, y1 = max(d.x_min, 0), min(d.x_max, n), max(d.y_min, 0), min(d.y_max, n)
    xs = np.arange(x0, x1, dtype=float)[None, :]
    ys = np.arange(y0, y1, dtype=float)[:, None]
    return (slice(y0, y1), slice(x0, x1)), xs, ys


def apply_noise_defects(noise, plan):
    """
    Multiply a noise-only image by the ``high_noise`` factors, in place.

    Parameters
    ----------
    noise : 2D float32 ndarray, ``(size, size)``
        Noise in Jy/beam, before any source is added.
    plan : list of RegionDefect
    """
    n = noise.shape[0]
    for d in plan:
        if d.rms_factor != 1.0:
            sl, xs, ys = _box(d, n)
            noise[sl] *= (1.0 + (d.rms_factor - 1.0) * d.taper(xs, ys)).astype(np.float32)


def add_defect_patterns(img, plan, sources, settings):
    """
    Add the stripes and the artefact patterns of every region to an image, in place.

    Parameters
    ----------
    img : 2D float32 ndarray, ``(size, size)``, Jy/beam
    plan : list of RegionDefect
        After `artefact_carriers`.
    sources : list of skysift.simulate.SourceModel
    settings : skysift.simulate.SimulationSettings
    """
    from .simulate import FWHM_TO_SIGMA, rms_at

    n = img.shape[0]
    beam_sigma = settings.beam_fwhm * FWHM_TO_SIGMA / settings.pixel_scale
    beam_px = settings.beam_fwhm / settings.pixel_scale
    for d in plan:
        if not d.stripes and d.artefact_source < 0:
            continue
        sl, xs, ys = _box(d, n)
        w = d.taper(xs, ys)
        add = np.zeros(w.shape)
        for amp, wavelength, angle, phase in d.stripes:
            u = xs * math.cos(angle) + ys * math.sin(angle)
            add += amp * np.cos(2 * np.pi * u / wavelength + phase)
        if d.stripes:
            add *= rms_at(xs, ys, settings)
        if d.artefact_source >= 0:
            src = sources[d.artefact_source]
            peak = float(src.gaussians.peak.max())
            dx, dy = xs - src.x, ys - src.y
            r = np.hypot(dx, dy)
            theta = np.arctan2(dy, dx)
            spokes = np.zeros(np.broadcast(dx, dy).shape)
            for k in range(d.artefact_spokes):
                delta = np.angle(np.exp(1j * (theta - d.artefact_angle - 2 * np.pi * k / d.artefact_spokes)))
                across = np.where(np.abs(delta) < np.pi / 2, r * np.abs(np.sin(delta)), np.inf)
                spokes += np.exp(-0.5 * (across / beam_sigma) ** 2)
            rings = ARTEFACT_RING_WEIGHT * np.cos(2 * np.pi * r / d.artefact_ring_period)
            radius = ARTEFACT_RADIUS * min(d.x_max - d.x_min, d.y_max - d.y_min)
            envelope = (d.artefact_level * peak * (beam_px / np.maximum(r, beam_px)) ** ARTEFACT_FALLOFF
                        * (1.0 - np.exp(-0.5 * (r / beam_px) ** 2))
                        * np.clip((radius - r) / (0.25 * radius), 0.0, 1.0))
            add += envelope * (spokes + rings)
        img[sl] += (w * add).astype(np.float32)


def inject_defects(rng, settings, sources, noise):
    """
    Plan a tile's defects and put them into its sky model and noise image.

    Call between drawing the sources and adding them to the image: poor-PSF sources are
    smeared and artefact carriers added in ``sources``, the noise is scaled and the stripes
    and artefact patterns are added to ``noise``.

    Parameters
    ----------
    rng : numpy.random.Generator
        The defect generator.
    settings : skysift.simulate.SimulationSettings
    sources : list of skysift.simulate.SourceModel
        Modified in place.
    noise : 2D float32 ndarray, ``(size, size)``
        Noise-only image (Jy/beam), modified in place.

    Returns
    -------
    list of RegionDefect
    """
    from .simulate import footprint_mask

    def expected_valid(x0, x1, y0, y1):
        xs = np.arange(x0, x1, 8, dtype=float)[None, :]
        ys = np.arange(y0, y1, 8, dtype=float)[:, None]
        covered = footprint_mask(xs, ys, settings).mean() * (x1 - x0) * (y1 - y0)
        return covered / float(settings.region_size) ** 2

    plan = plan_defects(rng, settings, settings.region_size, expected_valid)
    if all(d.quality_class == "good" for d in plan):
        return plan
    n_smeared = smear_sources(sources, plan, settings)
    n_added = artefact_carriers(rng, sources, plan, settings)
    apply_noise_defects(noise, plan)
    add_defect_patterns(noise, plan, sources, settings)
    log.info("defects: %d sources smeared, %d bright artefact carriers added", n_smeared, n_added)
    return plan


def truth_region_rows(plan, tile_id, valid, source_ids, pixel_scale):
    """
    The ``truth_regions`` table of a tile (`skysift.columns.TRUTH_REGIONS`) as a dict of lists.

    Parameters
    ----------
    plan : list of RegionDefect
    tile_id : str
    valid : 1D array
        Measured valid fraction of each region (row-major).
    source_ids : list of str
        Truth source id of every source (for the artefact carriers).
    pixel_scale : float
        arcsec per pixel.
    """
    from .regions import region_id

    rows = {k: [] for k in ("region_id", "tile_id", "row", "col", "x_min", "x_max", "y_min", "y_max",
                            "valid_fraction", "quality_class", "secondary_class", "rms_factor",
                            "psf_smear_maj", "psf_smear_min", "psf_smear_pa", "stripe_amplitude",
                            "stripe_wavelength", "artefact_level", "artefact_source_id")}
    for d, v in zip(plan, valid):
        rows["region_id"].append(region_id(tile_id, d.row, d.col))
        rows["tile_id"].append(tile_id)
        for k in ("row", "col", "x_min", "x_max", "y_min", "y_max", "quality_class", "secondary_class",
                  "rms_factor", "artefact_level"):
            rows[k].append(getattr(d, k))
        rows["valid_fraction"].append(float(v))
        smear = d.psf_smear or (math.nan, math.nan, math.nan)
        rows["psf_smear_maj"].append(smear[0])
        rows["psf_smear_min"].append(smear[1])
        rows["psf_smear_pa"].append(smear[2])
        rows["stripe_amplitude"].append(float(sum(s[0] for s in d.stripes)) if d.stripes else 0.0)
        rows["stripe_wavelength"].append(float(np.mean([s[1] for s in d.stripes])) * pixel_scale
                                        if d.stripes else math.nan)
        rows["artefact_source_id"].append(source_ids[d.artefact_source] if d.artefact_source >= 0 else None)
    return rows
