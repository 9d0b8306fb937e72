"""tlwidgets: transfer learning for image classifiers, interactively in Jupyter.

The engine (:mod:`tlwidgets.core`) works without any widget library; the panels
(:mod:`tlwidgets.widgets`) are imported only when first used, so scripts and
training jobs never pay for them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "Session": "tlwidgets.core.session",
    "list_models": "tlwidgets.core.catalog",
    "get_spec": "tlwidgets.core.catalog",
    "register_checkpoint": "tlwidgets.core.catalog",
    "measure_speed": "tlwidgets.core.speed",
    "TrainConfig": "tlwidgets.core.training",
    "Callback": "tlwidgets.core.training",
    "History": "tlwidgets.core.training",
    "Augment": "tlwidgets.core.data",
    "App": "tlwidgets.widgets.app",
    "ModelPicker": "tlwidgets.widgets.model_picker",
    "DatasetBrowser": "tlwidgets.widgets.dataset_browser",
    "LayerTable": "tlwidgets.widgets.layer_table",
    "HeadEditor": "tlwidgets.widgets.head_editor",
    "TrainingPanel": "tlwidgets.widgets.training_panel",
    "DataCollector": "tlwidgets.widgets.data_collector",
    "Webcam": "tlwidgets.widgets.webcam",
    "RunsView": "tlwidgets.widgets.runs_view",
    "CompareView": "tlwidgets.widgets.compare_view",
    "Cleaner": "tlwidgets.widgets.cleaner",
    "compare_models": "tlwidgets.core.compare",
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:  # pragma: no cover
    from .core.catalog import get_spec, list_models, register_checkpoint
    from .core.data import Augment
    from .core.session import Session
    from .core.speed import measure_speed
    from .core.training import Callback, History, TrainConfig
    from .widgets.app import App
    from .widgets.data_collector import DataCollector
    from .widgets.dataset_browser import DatasetBrowser
    from .widgets.head_editor import HeadEditor
    from .widgets.layer_table import LayerTable
    from .widgets.model_picker import ModelPicker
    from .widgets.training_panel import TrainingPanel
    from .widgets.webcam import Webcam
    from .widgets.runs_view import RunsView
    from .widgets.compare_view import CompareView
    from .widgets.cleaner import Cleaner
    from .core.compare import compare_models


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tlwidgets' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
