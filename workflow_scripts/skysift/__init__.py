"""skysift: radio continuum survey tiles to a science-ready Parquet catalogue."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("skysift")
except PackageNotFoundError:  # running from a checkout that was not pip-installed
    __version__ = "0.1.0+checkout"
