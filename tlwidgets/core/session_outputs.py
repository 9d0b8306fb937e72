"""What a trained session gives back: assessment, predictions, bundles, ONNX and a training script.

:class:`SessionOutputs` is a part of :class:`~tlwidgets.core.session.Session` (which inherits
it); its methods use the session's model, data, classes and options, and each of them leads to
the module that does the work.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from . import _restore, bundle, evaluation, export, script, webapp
from . import data as data_mod
from .errors import ConfigError, DataError
from .session_state import SessionState

if TYPE_CHECKING:
    from .session import Session


class SessionOutputs(SessionState):
    """Assessment, prediction, saving, export and scale-out methods of a session."""

    # ------------------------------------------------------------------ assessment
    def evaluate(self, data: str | Path | None = None, batch_size: int = 32) -> evaluation.EvalResult:
        """Accuracy, per-class metrics and confusion matrix.

        Args:
            data: ``None`` for the validation split, or a folder of held-out images
                whose class sub-folders use the training class names.
        """
        self.require_idle("evaluate")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= 4096:
            raise ConfigError(f"batch_size={batch_size!r} must be a whole number from 1 to 4,096 (32 is a good start).")
        model = self._require_model()
        loaded = self._require_data()
        if data is None:
            samples = loaded.val
            if not samples:
                raise DataError("The validation split is empty: load data with val_fraction > 0, or pass a folder.")
        else:
            samples = data_mod.holdout_samples(data, list(loaded.classes))
        dataset = data_mod.ImageDataset(samples, loaded.eval_tf)
        result = evaluation.evaluate(
            model, dataset, list(self.classes), device=self.device, batch_size=batch_size, precision=self.config.precision
        )
        self.last_eval = result
        return result

    def predict(self, images: Any, k: int = 3) -> pd.DataFrame:
        """Top-``k`` classes with probabilities for file paths or PIL images.

        Images are decoded and run as :meth:`evaluate` runs them (same decoding, same
        precision), so a photo gets the same probabilities from both.
        """
        self.require_idle("predict")
        model = self._require_model()
        eval_tf = self.data.eval_tf if self.data is not None else data_mod.make_transforms(
            self._norm_spec(), None, self.image_size
        )[1]
        return evaluation.predict(model, images, eval_tf, list(self.classes), k=k, device=self.device,
                                  precision=self.config.precision)

    # ------------------------------------------------------------------ save, export, scale out
    def save(self, path: str | Path) -> Path:
        """Save model, head, classes, transforms, freezing, options, history and split to a bundle.

        ``path`` becomes a folder (or a ``.zip`` when it ends so) holding ``model.safetensors``,
        ``tlwidgets.json`` and ``split.json``; :meth:`load` opens it. See :mod:`tlwidgets.core.bundle`.
        """
        with self._change("save"):
            path = bundle.save(self, path)
            self.message = f"Saved to {path}."
            return path

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = None, data: bool | str | Path = True) -> Session:
        """Open a bundle written by :meth:`save` (or by a generated training script) as a new session.

        Args:
            path: bundle folder or ``.zip``.
            device: where the model goes (``None``: the best device).
            data: ``True`` restores the stored split when its files exist, ``False`` skips it,
                a folder is the data's new location.
        """
        return _restore.load(path, device, data, cls)

    def export_onnx(self, path: str | Path, images: Any = None, **options: Any) -> Any:
        """Export the model to ONNX (fp32, dynamic batch axis) and check it against PyTorch.

        Args:
            path: the ``.onnx`` file.
            images: image files to check on (default: a few images of the data).
            **options: ``exporter``, ``opset``, ``verify``, ``atol`` (see :func:`tlwidgets.core.export.export_onnx`).

        Returns:
            An :class:`~tlwidgets.core.export.OnnxExport` with the path and the largest
            difference to PyTorch (when onnxruntime is installed).
        """
        with self._change("export"):
            result = export.export_session(self, path, images, **options)
            self.message = result.summary()
            return result

    def export_webapp(self, folder: str | Path, images: Any = None, *, runtime: str | Path | None = None,
                      title: str | None = None, **options: Any) -> Any:
        """Write a static web page that classifies pictures and the webcam in the browser.

        The folder holds ``index.html`` and its scripts, ``model.onnx`` and ``classifier.json``
        (classes and preprocessing); any static host serves it. ``runtime`` is where the page
        gets ONNX Runtime Web: ``None`` for the pinned CDN release, a URL, or a local
        onnxruntime-web folder to copy in for hosting without internet. Returns a
        :class:`~tlwidgets.core.webapp.WebAppExport`; see :func:`tlwidgets.core.webapp.export_webapp`.
        """
        with self._change("export a web app"):
            result = webapp.export_webapp(self, folder, images, runtime=runtime, title=title, **options)
            self.message = result.summary()
            return result

    def to_script(self, path: str | Path) -> Any:
        """Write a standalone training script (torch + torchvision) that reproduces this session.

        It rebuilds the model, head, freezing, image pipeline, split (listed in
        ``<name>.split.json`` beside it) and training options, runs as ``python train.py`` or
        ``torchrun --nproc_per_node=N train.py`` (DistributedDataParallel), and writes a bundle
        that :meth:`load` opens. Returns a :class:`~tlwidgets.core.script.ScriptFiles`.
        """
        files = script.to_script(self, path)
        self.message = f"Wrote {files.script}; run it with: {files.commands()['single']}"
        return files
