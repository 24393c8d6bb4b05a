"""qpsam's version, in a module of its own so that reading it does not import the package's face."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("qpsam")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"
