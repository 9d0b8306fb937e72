"""Three training presets, Quick, Better and Best, and how long each takes on this machine.

- **Quick**: freeze the backbone and train the new head (cheap: the frozen backbone's
  features are computed once and cached).
- **Better**: Quick, then unfreeze the backbone's last stage with a tenth of the learning
  rate and train again until the validation loss stops improving.
- **Best**: fastai-style ``fine_tune`` (see :mod:`tlwidgets.core.recipes`): the head first,
  then every layer with learning rates rising from 1/100 (first stage) to 1 (head).

How presets and the session's options combine: every preset trains with the session's
options (``session.config``: learning rate, batch size, optimizer, ...). Quick uses them
as they are, its number of epochs too (``"auto"`` by default). Every phase of Better and
Best trains with ``epochs="auto"`` (the full-pass phase of Best with a patience of at most
:data:`FULL_PASS_PATIENCE`), and the presets set the freezing and the LR factors they
name; once the preset ends, ``epochs`` and ``patience`` are put back to the session's.

A preset runs through the session's public methods only (``freeze_backbone``,
``set_lr_factor``, ``unfreeze_all``, ``fit``), so panels observing the session follow it.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tlwidgets.core import features, speed, stopping, training
from tlwidgets.core.errors import ConfigError, DataError, ModelError
from tlwidgets.core.recipes import stage_factors

if TYPE_CHECKING:
    from tlwidgets.core.session import Session

#: Preset name -> what it does, in plain words.
PRESETS: dict[str, str] = {
    "Quick": "Freezes the backbone and trains only the new head with your training options "
             "(by default until the validation loss stops improving).",
    "Better": "Quick, then also trains the backbone's last stage at a tenth of the learning rate; "
              "keeps the best epoch.",
    "Best": "Trains the head, then every layer with learning rates rising from 1/100 (first stage) "
            "to 1 (head); keeps the best epoch of each phase.",
    "Custom": "Trains the layers as they are set in the Layers tab (frozen layers, LR factors) with "
              "your training options.",
}
#: LR factor of the last stage in Better (the head keeps 1).
LAST_STAGE_FACTOR = 0.1
#: Ratio of the head's learning rate to the first stage's in Best.
BEST_LR_MULT = 100.0
#: Largest patience of Best's full-pass phase: each of its epochs runs the whole network.
FULL_PASS_PATIENCE = 3
#: Epochs an ``epochs="auto"`` phase is assumed to improve for in the time estimate; early
#: stopping then waits ``patience`` more (all within the phase's budget).
ASSUMED_AUTO_EPOCHS = 10
#: The last stage of Better holds at least this share of the backbone's parameters: a last
#: group of only a normalisation layer (ViT's ``encoder.ln``) comes with the group before.
LAST_STAGE_MIN_PARAMS = 0.05
#: Seconds per phase and per optimizer step that the forward speed leaves out (setup, Python).
PHASE_OVERHEAD_S = 0.5
STEP_OVERHEAD_S = 0.002
#: Seconds per trainable parameter and optimizer step (the Adam update, the gradient's zeroing
#: and the finite-weights check read every trainable weight; measured on a 2-core CPU, and
#: about a hundredth of that on a GPU).
UPDATE_S_PER_PARAM = {"cpu": 5e-9}
UPDATE_S_PER_PARAM_ACCELERATOR = 5e-11


@dataclass(frozen=True)
class Phase:
    """One ``fit`` of a preset.

    Attributes:
        title: what trains, for a progress line ("last stage unfrozen (LR ×0.1)").
        change: what the phase changes, in words ("unfroze layer4 with LR ×0.1").
        trainable: ``"head"``, ``"last"`` (last stage and head), ``"all"``, or ``"as set"``
            (the freezing the session has).
        factors: LR factors set before the fit, in order (stages, then the head).
        options: TrainConfig fields for this fit only.
        share: the trainable layers' share of the forward pass (0 to 1), for the estimate.
        params: trainable parameters during the phase, for the estimate.
    """

    title: str
    change: str
    trainable: str
    factors: dict[str, float] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    share: float = 0.0
    params: int = 0


def preset_name(name: str) -> str:
    """The preset's name as in :data:`PRESETS` (any case); ConfigError for an unknown one."""
    for known in PRESETS:
        if isinstance(name, str) and name.strip().casefold() == known.casefold():
            return known
    raise ConfigError(f"Unknown preset {name!r}; known presets: {', '.join(PRESETS)}.")


# ---------------------------------------------------------------------------- layer costs
_COSTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _layer_costs(session: Session) -> list[tuple[str, bool, int, float]]:
    """``(group, is_head, params, cost)`` per layer; cost ~ multiply-adds (params x output positions).

    Kept per model while its head and the input size stay the same (freezing and training
    change neither), so a panel may ask again after every change.
    """
    model = session.model
    if model is None:
        raise ModelError("No model loaded yet: load a model first (see tlwidgets.list_models()).")
    key = (session.input_size, session.head)
    cached = _COSTS.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    rows: list[tuple[str, bool, int, float]] = []
    positions = 1.0
    for r in session.layers().itertuples(index=False):
        shape = r.output_shape
        if shape is not None and len(shape) >= 2:
            # channels-first for convolutions and image norms, channels-last otherwise (tokens)
            first = r.type.startswith(("Conv", "BatchNorm", "GroupNorm")) or r.type.endswith("2d")
            width = shape[1] if first else shape[-1]
            positions = math.prod(shape[1:]) / max(int(width), 1)
        rows.append((str(r.group), bool(r.is_head), int(r.params), float(r.params) * positions))
    _COSTS[model] = (key, rows)
    return rows


def last_stage(session: Session) -> list[str]:
    """The backbone's last stage: the last group before the head in ``session.layers()``.

    Earlier groups join while the stage holds under :data:`LAST_STAGE_MIN_PARAMS` of the
    backbone's parameters (a final LayerNorm alone learns little).
    """
    params: dict[str, int] = {}
    for group, is_head, n, _ in _layer_costs(session):
        if not is_head and n > 0:
            params[group] = params.get(group, 0) + n
    if not params:
        raise ModelError("The model has no layers before its head, so there is no stage to unfreeze.")
    total, stage, held = sum(params.values()), [], 0
    for group in reversed(params):
        stage.insert(0, group)
        held += params[group]
        if held >= LAST_STAGE_MIN_PARAMS * total:
            break
    return stage


def _cost(session: Session, groups: Sequence[str] | None) -> dict[str, Any]:
    """``share`` of the forward pass and ``params`` in the head plus ``groups`` (None: every layer)."""
    rows = _layer_costs(session)
    total = sum(c for *_, c in rows) or 1.0
    mine = [(n, c) for g, is_head, n, c in rows if groups is None or is_head or g in groups]
    return {"share": 1.0 if groups is None else min(sum(c for _, c in mine) / total, 1.0),
            "params": sum(n for n, _ in mine)}


# ---------------------------------------------------------------------------- phases
def _factor(value: float) -> str:
    return f"×{value:.2g}"


def plan_preset(session: Session, name: str) -> list[Phase]:
    """The phases ``name`` runs on this session, in order (nothing is changed)."""
    name = preset_name(name)
    if session.model is None:
        raise ModelError("No model loaded yet: load a model first (see tlwidgets.list_models()).")
    head = session.head.path if session.head is not None else None
    if name == "Custom":
        trainable = {n.split(".")[0] for n, p in session.model.named_parameters() if p.requires_grad}
        groups = [g for g, is_head, n, _ in _layer_costs(session) if not is_head and g.split(".")[0] in trainable]
        return [Phase("layers as set in the Layers tab", "trained the layers as set in the Layers tab", "as set",
                      **_cost(session, groups))]
    auto = {} if name == "Quick" else {"epochs": "auto"}
    phases = [Phase("backbone frozen, head only", "trained the head with the backbone frozen", "head",
                    options=auto, **_cost(session, ()))]
    if name == "Better":
        stage = last_stage(session)
        factors = {**{g: LAST_STAGE_FACTOR for g in stage}, **({head: 1.0} if head else {})}
        names = " and ".join(stage)
        phases.append(Phase(f"last stage ({names}) unfrozen (LR {_factor(LAST_STAGE_FACTOR)})",
                            f"unfroze {names} with LR {_factor(LAST_STAGE_FACTOR)}", "last", factors,
                            {"epochs": "auto"}, **_cost(session, stage)))
    elif name == "Best":
        stages = stage_factors(session, BEST_LR_MULT)
        factors = {**stages, **({head: 1.0} if head else {})}
        first = next(iter(stages), None)
        rates = f"LR {_factor(stages[first])} ({first}) rising to ×1 (head)" if first else "LR ×1"
        patience = min(session.config.patience, FULL_PASS_PATIENCE)
        phases.append(Phase(f"every layer unfrozen, {rates}", f"unfroze every layer with {rates}", "all",
                            factors, {"epochs": "auto", "patience": patience}, **_cost(session, None)))
    return phases


def phase_label(name: str, index: int, count: int, phase: Phase) -> str:
    """A progress line's start: ``"Better, phase 2 of 2: last stage (layer4) unfrozen (LR ×0.1)"``."""
    return f"{name}{f', phase {index} of {count}' if count > 1 else ''}: {phase.title}"


def summary(name: str, index: int, count: int, changes: Sequence[str]) -> str:
    """What a run changed: ``"Better: trained the head ..., then unfroze layer4 with LR ×0.1."``.

    ``index`` is the phase the run ended in; before the last one, the line says so.
    """
    head = name if index >= count else f"{name} ended in phase {index} of {count}"
    return f"{head}: {', then '.join(changes)}."


def _prepare(session: Session, phase: Phase) -> None:
    if phase.trainable == "as set":
        return
    if phase.trainable == "all":
        session.unfreeze_all()
    else:
        session.freeze_backbone()
    for layer, factor in phase.factors.items():
        session.set_lr_factor(layer, factor)


def run_preset(
    session: Session,
    name: str,
    callbacks: Sequence[training.Callback] = (),
    on_phase: Callable[[int, int, Phase], bool | None] | None = None,
) -> training.History:
    """Train with a preset (see :data:`PRESETS` and this module's notes on options).

    Args:
        session: a session ready to train (model, data, a head for the data's classes).
        name: ``"Quick"``, ``"Better"`` or ``"Best"`` (any case).
        callbacks: passed to every phase's ``fit`` (live curves, progress).
        on_phase: called as ``on_phase(index, count, phase)`` before each phase changes
            anything; returning ``False`` ends the preset there (a Stop between phases).

    Returns:
        The session's history: every phase continues it. A phase stopped with Stop ends
        the preset there.

    Raises:
        ConfigError: an unknown preset. BusyError: training runs. ModelError, DataError:
        the session is not ready to train.
    """
    phases = plan_preset(session, name)
    session.require_idle("run a preset")
    if session.data is None:
        raise DataError("No data loaded yet: call load_data(folder) or load_data('demo') first.")
    before = session.config
    try:
        for index, phase in enumerate(phases, 1):
            if on_phase is not None and on_phase(index, len(phases), phase) is False:
                break
            _prepare(session, phase)
            history = session.fit(callbacks=callbacks, **phase.options)
            if history.stopped:
                break
    finally:
        changed = {k: getattr(before, k) for k in ("epochs", "patience")
                   if getattr(session.config, k) != getattr(before, k)}
        if changed:
            session.configure(**changed)
    return session.history


# ---------------------------------------------------------------------------- time
def _forward_seconds(session: Session) -> float:
    """Seconds of one forward pass per image at the session's input size, measured here."""
    spec = session.spec
    ms = speed.cached_speed(spec.name, session.device)
    if ms is None:
        ms = speed.measure_speed(spec.name, session.device, batch_size=4, repeats=3)["ms_per_image"]
    # measured at the model's own input size; convolutions scale with the pixel count
    return float(ms) / 1000.0 * (session.input_size / spec.input_size) ** 2


def estimate_preset_seconds(session: Session, name: str) -> float:
    """Seconds a preset should take on this session's data and device, before it runs.

    Made from the forward speed measured on this machine (``speed.cached_speed``; when
    there is none, :func:`~tlwidgets.core.speed.measure_speed` runs once, a second or
    two) scaled to the session's input size, and the layers' multiply-adds:

    - a phase on cached features runs the frozen layers forward once over the training
      images (once per cached view with augmentation) and the validation images;
    - a training image costs 3 forward passes through the trainable layers (forward and
      backward), a validation image one; a layer's share of the forward pass is its
      parameters times its output positions (multiply-adds);
    - each optimizer step reads every trainable weight (:data:`UPDATE_S_PER_PARAM`);
    - an ``epochs="auto"`` phase is assumed to improve for :data:`ASSUMED_AUTO_EPOCHS`
      epochs, then wait ``patience`` more, within the budget of
      :func:`tlwidgets.core.stopping.budget` (a small data set trains more epochs); a fixed
      number of epochs is taken as given;
    - image decoding is not counted (decoded images are kept in memory when they fit).

    It is a rough figure: the epochs early stopping takes depend on the data, and on a
    CPU the backward pass of the deep, narrow stages runs slower than their share of
    multiply-adds says (resnet18 at 128 pixels on 300 photos, 2 busy CPU cores: Quick and
    Best took 0.5 and 1.6 times their estimates, Better 6 times, with 48 epochs in its
    second phase where 18 were assumed).

    Raises:
        ConfigError: an unknown preset. ModelError, DataError: no model or no data.
    """
    phases = plan_preset(session, name)
    bundle = session.data
    if bundle is None:
        raise DataError("No data loaded yet: call load_data(folder) or load_data('demo') first.")
    forward_s = _forward_seconds(session)
    n_train, n_val = len(bundle.train), len(bundle.val)
    config = session.config
    views = config.augment_views if features.is_random_transform(bundle.train_tf) else 1
    update_s = UPDATE_S_PER_PARAM.get(session.device.split(":")[0], UPDATE_S_PER_PARAM_ACCELERATOR)
    total = 0.0
    for phase in phases:
        cfg = config.replaced(**phase.options)
        per_epoch = n_train if cfg.max_batches_per_epoch is None else min(
            n_train, cfg.max_batches_per_epoch * cfg.batch_size)
        steps = max(math.ceil(per_epoch / cfg.batch_size), 1)
        share = phase.share
        cached = share < 1.0 and cfg.cache_features != "off"
        if isinstance(cfg.epochs, int):
            epochs = cfg.epochs
        else:
            limits = stopping.budget(steps, cached, n_val > 0)
            epochs = min(max(ASSUMED_AUTO_EPOCHS + cfg.patience, limits.min_epochs), limits.max_epochs)
        per_epoch_passes = 3 * share * per_epoch + share * n_val
        if cached:
            passes = (1 - share) * (min(n_train * views, epochs * per_epoch) + n_val) + epochs * per_epoch_passes
        else:
            passes = epochs * ((1 - share) * (per_epoch + n_val) + per_epoch_passes)
        step_s = STEP_OVERHEAD_S + update_s * phase.params
        total += forward_s * passes + PHASE_OVERHEAD_S + step_s * epochs * steps
    return total
