"""Cutting a model into a frozen front (the *prefix*) and a trainable rest (the *suffix*).

When every trainable parameter sits behind one tensor that depends only on frozen
layers, that tensor can be computed once per image and the suffix trained on it
(see :mod:`tlwidgets.core.features`). Two ways to find the cut:

* **head input** — only the classifier head trains (the usual transfer-learning start).
  The prefix is a shallow copy of the model with the head replaced by ``Identity``; it
  shares every weight with the model. Works for any model whose output is the head's
  output (checked on a probe image).
* **stage output** — frozen up to some stage (``freeze_up_to("layer3")``). The model is
  traced with ``torch.fx`` (with timm's non-traceable leaf modules when timm is
  installed); the cut must be one tensor through which every trainable node reads
  the input. Models that do not trace, or cuts that need more than one tensor (a
  skip connection across the cut), fall back to full passes.

The prefix always runs in eval mode: frozen Dropout and stochastic depth are off for it
(BatchNorm layers with frozen parameters already use their stored statistics in
training). A model with Dropout inside the frozen part (torchvision's EfficientNet
``classifier.0``) therefore trains slightly differently from full passes.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.fx as fx
from torch import nn

from tlwidgets.core.errors import TLWidgetsError
from tlwidgets.core.evaluation import logits_of


@dataclass
class Split:
    """A model cut in two: ``suffix(prefix(x))`` computes ``model(x)``.

    Attributes:
        prefix: images -> features; frozen, always run in eval mode under ``no_grad``.
        suffix: features -> model output in training mode (holds every trainable parameter).
        suffix_eval: the same in eval mode (differs from ``suffix`` for traced models,
            whose ``self.training`` checks are fixed at trace time).
        where: where the cut is, for people: ``"head input"`` or ``"input of layer4.0.conv1"``.
        prefix_only: modules used by the prefix and not by the suffix.
    """

    prefix: nn.Module
    suffix: nn.Module
    suffix_eval: nn.Module
    where: str
    prefix_only: list[nn.Module] = field(default_factory=list)

    def prefix_eval(self) -> None:
        """Put the prefix's own modules in eval mode (the suffix keeps its mode)."""
        self.prefix.training = False
        for module in self.prefix_only:
            module.training = False

    def suffix_params(self) -> list[nn.Parameter]:
        """Parameters the suffix uses (trainable or not)."""
        seen: dict[int, nn.Parameter] = {}
        for module in (self.suffix, self.suffix_eval):
            for p in module.parameters():
                seen.setdefault(id(p), p)
        return list(seen.values())


def _matches(name: str, key: str) -> bool:
    return name == key or name.startswith(key + ".")


def first_trainable(model: nn.Module) -> str | None:
    """Name of the first parameter (in registration order) that requires grad."""
    return next((n for n, p in model.named_parameters() if p.requires_grad), None)


@contextlib.contextmanager
def _modes(model: nn.Module, training: bool) -> Iterator[None]:
    """Set ``model``'s mode for the block; every module's own mode is restored after."""
    saved = [(m, m.training) for m in model.modules()]
    model.train(training)
    try:
        yield
    finally:
        for module, mode in saved:
            module.training = mode


def _without(model: nn.Module, path: str) -> nn.Module:
    """A shallow copy of ``model`` whose module at ``path`` is ``Identity``; weights are shared."""
    parts = path.split(".")
    root = copy.copy(model)
    root._modules = type(model._modules)(model._modules)
    parent = root
    for name in parts[:-1]:
        child = copy.copy(parent._modules[name])
        child._modules = type(child._modules)(child._modules)
        parent._modules[name] = child
        parent = child
    parent._modules[parts[-1]] = nn.Identity()
    return root


def head_split(model: nn.Module, head_path: str, probe: torch.Tensor) -> Split | str:
    """Cut at the head's input, or return why that is not possible."""
    head = model.get_submodule(head_path)
    seen: dict[str, object] = {}

    def pre_hook(_m: nn.Module, args: tuple) -> None:
        seen["calls"] = int(seen.get("calls", 0)) + 1
        seen["input"] = args[0] if len(args) == 1 else None

    def hook(_m: nn.Module, _args: tuple, out: object) -> None:
        seen["output"] = out

    handles = [head.register_forward_pre_hook(pre_hook), head.register_forward_hook(hook)]
    try:
        with _modes(model, False), torch.no_grad():
            out = model(probe)
    finally:
        for handle in handles:
            handle.remove()
    captured = seen.get("input")
    if seen.get("calls") != 1 or not isinstance(captured, torch.Tensor):
        return f"the head {head_path} is not called once on one tensor"
    if not (out is seen.get("output") or logits_of(out) is seen.get("output")):
        return f"the model changes the output of its head {head_path}"
    prefix = _without(model, head_path)
    with _modes(model, False), torch.no_grad():
        prefix.eval()
        features = prefix(probe)
    if not (isinstance(features, torch.Tensor) and torch.allclose(features, captured, rtol=1e-4, atol=1e-5)):
        return "the model without its head does not reproduce the head's input"
    head_ids = {id(m) for m in head.modules()}
    prefix_only = [m for m in prefix.modules() if id(m) not in head_ids]
    return Split(prefix, head, head, "head input", prefix_only)


# ---------------------------------------------------------------------------- torch.fx
class _Tracer(fx.Tracer):
    """fx tracer that keeps timm's non-traceable modules and functions as leaves."""

    def __init__(self) -> None:
        self._leaf_types: tuple[type, ...] = ()
        functions: tuple = ()
        try:
            from timm.layers import _fx as timm_fx

            self._leaf_types = tuple(timm_fx.get_notrace_modules())
            functions = tuple(timm_fx.get_notrace_functions())
        except Exception:  # timm absent or changed: plain tracing
            pass
        super().__init__(autowrap_functions=functions)

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, self._leaf_types) or super().is_leaf_module(m, qualname)


def _trace(model: nn.Module, training: bool) -> fx.GraphModule:
    with _modes(model, training):
        graph = _Tracer().trace(model)
    return fx.GraphModule(model, graph)


def _boundary(gm: fx.GraphModule) -> tuple[fx.Node | None, set[fx.Node], str]:
    """The one frozen, input-dependent node that trainable nodes read, its ancestors, or why not."""
    modules = dict(gm.named_modules())
    params = dict(gm.named_parameters())
    dep: dict[fx.Node, bool] = {}
    trains: dict[fx.Node, bool] = {}
    for node in gm.graph.nodes:
        ins = node.all_input_nodes
        dep[node] = node.op == "placeholder" or any(dep[i] for i in ins)
        own = False
        if node.op == "get_attr":
            p = params.get(str(node.target))
            own = p is not None and p.requires_grad
        elif node.op == "call_module":
            own = any(p.requires_grad for p in modules[str(node.target)].parameters())
        trains[node] = own or any(trains[i] for i in ins)
    cut = {n for n in gm.graph.nodes if dep[n] and not trains[n] and any(trains[u] for u in n.users)}
    if len(cut) != 1:
        return None, set(), f"{len(cut)} tensors cross the cut"
    node = next(iter(cut))
    if node.op == "placeholder":
        return None, set(), "the first layer trains"
    ancestors: set[fx.Node] = set()
    stack = list(node.all_input_nodes)
    while stack:
        n = stack.pop()
        if n not in ancestors:
            ancestors.add(n)
            stack.extend(n.all_input_nodes)
    return node, ancestors, ""


def _prefix_module(gm: fx.GraphModule, cut: fx.Node, ancestors: set[fx.Node]) -> fx.GraphModule:
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in gm.graph.nodes:
        if node in ancestors or node is cut:
            env[node] = graph.node_copy(node, lambda n: env[n])
    graph.output(env[cut])
    return fx.GraphModule(gm, graph)


def _suffix_module(gm: fx.GraphModule, cut: fx.Node, ancestors: set[fx.Node]) -> fx.GraphModule:
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {cut: graph.placeholder("features")}
    for node in gm.graph.nodes:
        if node is cut or node in ancestors or node.op == "placeholder":
            continue
        if all(i in env for i in node.all_input_nodes):
            env[node] = graph.node_copy(node, lambda n: env[n])
    if not any(n.op == "output" for n in graph.nodes):
        raise TLWidgetsError("the traced suffix has no output")
    module = fx.GraphModule(gm, graph)
    module.graph.eliminate_dead_code()
    module.recompile()
    return module


def fx_split(model: nn.Module, probe: torch.Tensor) -> Split | str:
    """Cut at the one tensor between the frozen and the trainable nodes, or say why not."""
    try:
        gm_eval = _trace(model, False)
        gm_train = _trace(model, True)
    except Exception as exc:  # fx cannot trace every model
        return f"the model cannot be traced ({type(exc).__name__})"
    cut, ancestors, why = _boundary(gm_eval)
    if cut is None:
        return why
    cut_t, ancestors_t, why = _boundary(gm_train)
    if cut_t is None or (cut_t.name, cut_t.op, cut_t.target) != (cut.name, cut.op, cut.target):
        return why or "training and evaluation graphs cut at different places"
    try:
        prefix = _prefix_module(gm_eval, cut, ancestors)
        suffix = _suffix_module(gm_train, cut_t, ancestors_t)
        suffix_eval = _suffix_module(gm_eval, cut, ancestors)
    except Exception as exc:
        return f"the traced graph cannot be split ({exc})"
    with _modes(model, False), torch.no_grad():
        prefix.eval()
        suffix_eval.eval()
        try:
            ref = logits_of(model(probe))
            got = logits_of(suffix_eval(prefix(probe)))
        except Exception as exc:
            return f"the split model fails on a probe image ({type(exc).__name__})"
    if got.shape != ref.shape or not torch.allclose(got, ref, rtol=1e-4, atol=1e-5):
        return "the split model does not reproduce the model's output"
    suffix_ids = {id(m) for s in (suffix, suffix_eval) for m in s.modules()}
    prefix_only = [m for m in prefix.modules() if id(m) not in suffix_ids]
    first = first_trainable(model) or ""
    return Split(prefix, suffix, suffix_eval, f"input of {first.rsplit('.', 1)[0]}", prefix_only)


def find_split(model: nn.Module, head_path: str | None, probe: torch.Tensor) -> Split | str:
    """The best cut between frozen and trainable parts, or why there is none.

    Args:
        model: the model with its ``requires_grad`` flags set.
        head_path: qualified name of the classifier head (``None``: not known).
        probe: one input batch (e.g. one image) used to check the cut.
    """
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if not names:
        return "nothing is trainable"
    if not any(not p.requires_grad for p in model.parameters()):
        return "all layers trainable"
    if head_path and all(_matches(n, head_path) for n in names):
        split = head_split(model, head_path, probe)
        if isinstance(split, Split):
            return split
    return fx_split(model, probe)
