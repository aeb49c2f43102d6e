"""The installed version of varloss (recorded in every report's settings)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("varloss")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"
