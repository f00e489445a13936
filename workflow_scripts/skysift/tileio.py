"""
Reading survey tiles: lazy FITS access, celestial WCS, restoring beam.

ASKAP/CASDA tiles are 4-D (RA, Dec, FREQ, STOKES) float32 big-endian images with NaN blanks.
`open_tile` memory-maps the primary image, squeezes the degenerate axes and returns a 2-D
``(ny, nx)`` view without copying; `native_float32` gives the copy that SEP needs.
"""


import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import proj_plane_pixel_scales

__all__ = ["TileError", "Tile", "open_tile", "native_float32", "beam_area_pixels", "pixel_scale_arcsec",
           "gaussian_sigma_pixels", "celestial_header"]

log = logging.getLogger(__name__)


class TileError(ValueError):
    """A survey tile cannot be used; the message names the file and the problem."""

    def __init__(self, path, problem):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


@dataclass
class Tile:
    """
    A survey tile opened lazily.

    Attributes
    ----------
    path : str
    data : 2D ndarray, ``(ny, nx)``
        Memory-mapped pixels in the file's byte order (often big-endian), NaN where blanked.
        Unit: ``bunit`` (Jy/beam for radio tiles).
    wcs : `~astropy.wcs.WCS`
        2-D celestial WCS; pixel coordinates are 0-based ``(x, y)``.
    bmaj, bmin, bpa : float or None
        Restoring beam FWHM (arcsec) and position angle (deg E of N); None when absent.
    pixel_scale : float
        Geometric mean side of one pixel (arcsec).
    bunit : str
    header : `~astropy.io.fits.Header`
        The primary header as read (all axes).
    """

    path: str
    data: np.ndarray
    wcs: WCS
    bmaj: float | None
    bmin: float | None
    bpa: float | None
    pixel_scale: float
    bunit: str
    header: fits.Header
    hdu_index: int = 0

    @property
    def shape(self):
        """``(ny, nx)`` of the 2-D image."""
        return self.data.shape

    def read_rows(self, start, stop):
        """
        Rows ``[start, stop)`` of the image as a native float32 array, read from disk.

        Unlike slicing `data`, this leaves nothing mapped: pages of a memory map stay in the
        process's resident memory once read, which would make a whole-tile pass in strips
        look (and, under SLURM's accounting, count) as big as the tile.

        Returns
        -------
        2D float32 ndarray, ``(stop - start, nx)``; NaN where blanked.
        """
        with fits.open(self.path, memmap=False, lazy_load_hdus=True) as hdul:
            hdu = hdul[self.hdu_index]
            lead = (0,) * (hdu.header["NAXIS"] - 2)
            return np.array(hdu.section[(*lead, slice(start, stop), slice(None))], dtype=np.float32)

    @property
    def has_beam(self):
        """True when BMAJ and BMIN are known."""
        return self.bmaj is not None and self.bmin is not None

    @property
    def mjy_per_unit(self):
        """Factor from the pixel unit (BUNIT) to mJy/beam; Jy/beam assumed when BUNIT is empty."""
        b = self.bunit.replace(" ", "").lower()
        if b in ("", "jy/beam", "jy/bm", "jybeam-1", "jy.beam-1", "jy/beam."):
            return 1000.0
        if b in ("mjy/beam", "mjy/bm"):
            return 1.0
        raise TileError(self.path, f"unsupported BUNIT {self.bunit!r} (expected Jy/beam)")

    @property
    def beam_area(self):
        """Beam area in pixels (``pi bmaj bmin / (4 ln 2) / pixel_scale**2``)."""
        if not self.has_beam:
            raise TileError(self.path, "no restoring beam (BMAJ/BMIN) in the header")
        return beam_area_pixels(self.bmaj * u.arcsec, self.bmin * u.arcsec, self.pixel_scale * u.arcsec)


@u.quantity_input
def beam_area_pixels(bmaj: u.arcsec, bmin: u.arcsec, pixel_scale: u.arcsec):
    """
    Area of an elliptical Gaussian restoring beam, in pixels.

    Parameters
    ----------
    bmaj, bmin, pixel_scale : `~astropy.units.Quantity` ['angle']
        Beam FWHM along the major and minor axes; side of one square pixel.

    Returns
    -------
    area : float
        ``pi * bmaj * bmin / (4 ln 2) / pixel_scale**2``.
    """
    if bmaj <= 0 or bmin <= 0 or pixel_scale <= 0:
        msg = f"beam and pixel sizes must be positive, got {bmaj=}, {bmin=}, {pixel_scale=}"
        raise ValueError(msg)
    return float((np.pi * bmaj * bmin / (4 * np.log(2)) / pixel_scale**2).to_value(u.one))


def pixel_scale_arcsec(wcs):
    """Side of a pixel of a celestial WCS (arcsec; geometric mean of the two axes)."""
    return float(np.sqrt(np.prod(proj_plane_pixel_scales(wcs.celestial)))) * 3600.0


FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))  # of a Gaussian


def gaussian_sigma_pixels(fwhm_arcsec, wcs_header):
    """
    Sigma of a Gaussian of ``fwhm_arcsec`` (arcsec) in pixels of the grid of ``wcs_header``,
    a `celestial_header` as a string (a cutout shard's ``wcs_header`` attribute).
    """
    scale = pixel_scale_arcsec(WCS(fits.Header.fromstring(wcs_header)))
    return float(fwhm_arcsec) / scale / FWHM_PER_SIGMA


def celestial_header(header):
    """
    2-D celestial copy of a FITS header (degenerate spectral/Stokes axes dropped).

    Parameters
    ----------
    header : `~astropy.io.fits.Header`

    Returns
    -------
    `~astropy.io.fits.Header` with NAXIS=2 and the celestial WCS keywords.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header).celestial
    h = wcs.to_header()
    h["NAXIS"] = 2
    h["NAXIS1"] = header.get("NAXIS1", 0)
    h["NAXIS2"] = header.get("NAXIS2", 0)
    return h


def _squeeze_to_2d(path, data):
    """Drop length-1 leading axes; the last two must be the image plane."""
    if data is None:
        raise TileError(path, "the primary HDU holds no image")
    extra = data.shape[:-2]
    if data.ndim < 2 or any(n != 1 for n in extra):
        raise TileError(path, f"expected a 2-D image with degenerate extra axes, got shape {data.shape}")
    return data.reshape(data.shape[-2:])


def _beam_from_header(header):
    """(bmaj, bmin, bpa) in arcsec, arcsec, deg from BMAJ/BMIN/BPA (deg), else Nones."""
    if "BMAJ" in header and "BMIN" in header:
        return float(header["BMAJ"]) * 3600, float(header["BMIN"]) * 3600, float(header.get("BPA", 0.0))
    return None, None, None


def open_tile(path, *, require_beam=True, require_celestial=True):
    """
    Open a FITS tile lazily and validate what skysift needs.

    Parameters
    ----------
    path : str or Path
        FITS file; the image is the primary HDU, or the first image extension if that is empty.
    require_beam : bool
        Raise `TileError` when BMAJ/BMIN are missing (radio tiles need the beam for fluxes).
    require_celestial : bool
        Raise `TileError` when the header has no celestial WCS.

    Returns
    -------
    Tile

    Raises
    ------
    TileError
        Missing or unreadable/truncated file, no image, non-degenerate extra axes, no celestial
        WCS, missing beam. The message names the file and the problem.
    """
    path = Path(path)
    if not path.exists():
        raise TileError(path, "file does not exist")
    try:
        # the memory map outlives the closed file handle: pixels stay readable, lazily
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", AstropyUserWarning)  # astropy warns on truncation
            # memmap left to astropy: it maps float images, and scaled integer images (BSCALE)
            # are read into memory, which an explicit memmap=True refuses
            with fits.open(path, lazy_load_hdus=True) as hdul:
                hdu_index = 0
                if hdul[0].data is None and len(hdul) > 1:
                    hdu_index = 1
                hdu = hdul[hdu_index]
                header = hdu.header
                raw = hdu.data
    except (OSError, ValueError, TypeError, IndexError) as err:
        raise TileError(path, f"unreadable or truncated FITS ({err})") from None
    for w in caught:
        text = str(w.message)
        if issubclass(w.category, AstropyUserWarning) and "truncated" in text:
            raise TileError(path, f"unreadable or truncated FITS ({text})")
        log.info("%s: %s", path, text)  # e.g. non-standard header cards: harmless
    if raw is None:
        raise TileError(path, "the file holds no image data")
    data = _squeeze_to_2d(path, raw)
    if data.dtype.kind not in "fiu":
        raise TileError(path, f"pixel type {data.dtype} is not numeric")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header, naxis=None).celestial
        except Exception as err:  # astropy raises a zoo of types on broken WCS
            raise TileError(path, f"invalid WCS ({err})") from None
    if require_celestial and (not wcs.has_celestial or wcs.naxis != 2):
        raise TileError(path, "no celestial WCS (CTYPE1/CTYPE2 must be RA/DEC projections)")
    bmaj, bmin, bpa = _beam_from_header(header)
    if require_beam and bmaj is None:
        raise TileError(path, "no restoring beam: BMAJ/BMIN missing from the header")
    if bmaj is not None and (not np.isfinite(bmaj) or bmaj <= 0 or not np.isfinite(bmin) or bmin <= 0):
        raise TileError(path, f"invalid restoring beam BMAJ={bmaj}\" BMIN={bmin}\"")
    scale = pixel_scale_arcsec(wcs) if wcs.has_celestial else 1.0
    return Tile(
        path=str(path),
        data=data,
        wcs=wcs,
        bmaj=bmaj,
        bmin=bmin,
        bpa=bpa,
        pixel_scale=scale,
        bunit=str(header.get("BUNIT", "")).strip(),
        header=header,
        hdu_index=hdu_index,
    )


def native_float32(a):
    """
    Native-byte-order float32 copy of an array (SEP rejects big-endian input).

    Parameters
    ----------
    a : ndarray
        Any numeric array, e.g. a memory-mapped ``'>f4'`` FITS image.

    Returns
    -------
    ndarray, same shape, dtype ``float32`` in native byte order (always a new array).
    """
    return np.array(a, dtype=np.float32, order="C", copy=True)
