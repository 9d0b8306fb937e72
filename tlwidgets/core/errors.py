"""Exceptions raised by tlwidgets.

Every message names the offending file or value and says what to do next, so a
notebook user can act on it without reading a traceback.
"""

from __future__ import annotations


class TLWidgetsError(Exception):
    """Base class of every error tlwidgets raises on purpose."""


class DataError(TLWidgetsError, ValueError):
    """A dataset, folder, archive or image cannot be used."""


class ModelError(TLWidgetsError, ValueError):
    """A model name, layer name, head or checkpoint cannot be used."""


class WeightsUnavailableError(TLWidgetsError, RuntimeError):
    """Pretrained weights are neither cached nor downloadable."""


class TrainingError(TLWidgetsError, RuntimeError):
    """Training could not run or had to stop (for example a NaN loss)."""


class ConfigError(TLWidgetsError, ValueError):
    """An option or setting is out of its allowed range; nothing was changed."""


class BusyError(TLWidgetsError, RuntimeError):
    """The session is training; the requested change has to wait."""
