"""The layer side of a session: the layer table, freezing and per-layer learning rates.

:class:`SessionLayers` is a part of :class:`~tlwidgets.core.session.Session` (which inherits
it). Freezing a layer sets its learning rate to zero (``requires_grad=False``, so the optimiser
never sees it); every change updates the session's ``frozen`` and ``lr_factors`` traits so that
panels showing them follow. The work is done in :mod:`tlwidgets.core.layers`.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from . import heads, layers
from .session_state import SessionState


class SessionLayers(SessionState):
    """Layer table, freezing and learning-rate factor methods of a session."""

    # ------------------------------------------------------------------ layers
    def layers(self) -> pd.DataFrame:
        """One row per layer: name, type, output shape, parameters, trainable, LR factor, group."""
        model = self._require_model()
        head_path = self.head.path if self.head is not None else None
        return layers.layer_table(model, input_size=self.input_size, head_path=head_path, lr_factors=self.lr_factors)

    def _after_freeze_change(self) -> None:
        model = self._require_model()
        self.frozen = layers.frozen_names(model)
        self.model_version += 1

    def freeze(self, names: str | Iterable[str]) -> None:
        """Freeze these layers (or whole blocks): their learning rate becomes zero."""
        with self._change("freeze layers"):
            names = [names] if isinstance(names, str) else list(names)
            layers.freeze(self._require_model(), names)
            self.lr_factors = {k: v for k, v in self.lr_factors.items() if k not in names}
            self._after_freeze_change()

    def unfreeze(self, names: str | Iterable[str]) -> None:
        """Make these layers (or whole blocks) trainable again."""
        with self._change("unfreeze layers"):
            names = [names] if isinstance(names, str) else list(names)
            layers.unfreeze(self._require_model(), names)
            self.lr_factors = {k: v for k, v in self.lr_factors.items() if not (k in names and v == 0)}
            self._after_freeze_change()

    def freeze_up_to(self, name: str) -> None:
        """Freeze every layer from the input up to and including ``name``; the rest trains."""
        with self._change("freeze layers"):
            layers.freeze_up_to(self._require_model(), name)
            self._after_freeze_change()

    def freeze_backbone(self) -> None:
        """Freeze everything but the classifier head (the usual transfer-learning start)."""
        with self._change("freeze layers"):
            model = self._require_model()
            layers.freeze_backbone(model, heads.find_head(model)[0])
            self._after_freeze_change()

    def unfreeze_all(self) -> None:
        """Make every layer trainable."""
        with self._change("unfreeze layers"):
            model = self._require_model()
            for p in model.parameters():
                p.requires_grad_(True)
            self.lr_factors = {k: v for k, v in self.lr_factors.items() if v != 0}
            self._after_freeze_change()

    def set_lr_factor(self, name: str, factor: float) -> None:
        """Scale the learning rate of layer (or block) ``name`` by ``factor``; 0 freezes it."""
        with self._change("change learning-rate factors"):
            model = self._require_model()
            self.lr_factors = layers.set_lr_factor(model, dict(self.lr_factors), name, float(factor))
            self._after_freeze_change()

    def trainable_params(self) -> tuple[int, int]:
        """(trainable, total) parameter counts."""
        model = self._require_model()
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return trainable, total
