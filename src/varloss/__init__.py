"""varloss: measure, explain and correct the variance loss of variational autoencoders."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("varloss")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = ["__version__"]
