"""Weights from the Hugging Face Hub for timm models, through ``huggingface_hub``.

Files are fetched with ``hf_hub_download``, so they land in huggingface_hub's own cache
(``HF_HOME`` / ``HF_HUB_CACHE``), resume after an interruption and are found again with
``HF_HUB_OFFLINE=1``; ``HF_ENDPOINT`` (read at each download) points at a mirror. Only
``model.safetensors`` is ever read as weights, so no file can run code when opened, and
nothing asks for remote code: a Hub repository that is not a timm model is refused.

A file placed by hand at :func:`manual_path` is used before any download, which is
what the offline error message tells the user to do.
"""

from __future__ import annotations

import json
import os
import re
import socket
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from tlwidgets.core.errors import ModelError, WeightsUnavailableError
from tlwidgets.core.model_spec import ModelSpec

Progress = Callable[[int, int], None]

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
#: Largest config.json read from a Hub repository.
MAX_CONFIG_BYTES = 1 << 20
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` if it is a plain ``<org>/<name>`` Hub id, else a :class:`ModelError`."""
    if not isinstance(repo_id, str) or not _REPO_RE.match(repo_id) or ".." in repo_id:
        raise ModelError(
            f"{repo_id!r} is not a Hugging Face Hub model id; write it as '<org>/<name>', "
            "e.g. 'hf:timm/resnet18.a1_in1k'."
        )
    return repo_id


def endpoint() -> str:
    """The Hub address: ``HF_ENDPOINT`` as set now, else huggingface_hub's default."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hub_cache() -> Path:
    """huggingface_hub's cache folder (``HF_HUB_CACHE``, under ``HF_HOME``), as set now."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _offline() -> bool:
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE")
    return constants.HF_HUB_OFFLINE if value is None else value.strip().lower() in ("1", "on", "true", "yes")


def manual_path(repo_id: str, filename: str = WEIGHTS_FILE) -> Path:
    """Where a file of ``repo_id`` fetched by hand is looked for first:
    ``<tlwidgets cache>/hub/<org>/<name>/<filename>``."""
    base = Path(os.environ.get("TLWIDGETS_CACHE_DIR") or Path.home() / ".cache" / "tlwidgets")
    org, name = check_repo_id(repo_id).split("/")
    return base / "hub" / org / name / filename


def cached_file(repo_id: str, filename: str = WEIGHTS_FILE) -> Path | None:
    """The file if it is already here (placed by hand or in huggingface_hub's cache), else None."""
    manual = manual_path(repo_id, filename)
    if manual.is_file():
        return manual
    cache = hub_cache()
    if not (cache / f"models--{repo_id.replace('/', '--')}").is_dir():
        return None  # the common case, answered without importing huggingface_hub
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=cache)
    return Path(found) if isinstance(found, str) and os.path.isfile(found) else None


def _progress_class(progress: Progress) -> type:
    from huggingface_hub.utils import tqdm

    class _Report(tqdm):  # type: ignore[misc, valid-type]
        """A silent bar that passes the bytes on to ``progress(done, total)``."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self.done = int(kwargs.get("initial") or 0)

        def update(self, n: float | None = 1) -> bool | None:
            self.done += int(n or 0)
            progress(self.done, int(self.total or 0))
            return super().update(n)

    return _Report


def _unavailable(repo_id: str, filename: str, reason: object) -> WeightsUnavailableError:
    url = f"{endpoint()}/{repo_id}/resolve/main/{filename}"
    return WeightsUnavailableError(
        f"Could not get {filename} of the Hub repository {repo_id} ({reason}). Without internet "
        f"access, fetch {url} on another machine and place it at {manual_path(repo_id, filename)} "
        f"— it is then used offline (huggingface_hub's cache, {hub_cache()}, is searched too)."
    )


def _unreachable(url: str, timeout: float = 5) -> str:
    """Why the Hub at ``url`` cannot be reached ("" when a connection opens), checked once
    so that an offline machine gets its answer at once instead of after minutes of retries."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "", port), timeout=timeout).close()
    except OSError as exc:
        return f"cannot reach {parts.hostname}:{port}: {exc.strerror or exc}"
    return ""


def fetch(repo_id: str, filename: str = WEIGHTS_FILE, progress: Progress | None = None) -> Path:
    """``filename`` of Hub repository ``repo_id``: from a hand-placed copy, the cache, or a download.

    Raises:
        WeightsUnavailableError: not here and not downloadable (offline, no such file, network
            error); the message names the repository, the file and where to place it.
    """
    found = cached_file(repo_id, filename)
    if found is not None:
        return found
    if _offline():
        raise _unavailable(repo_id, filename, "HF_HUB_OFFLINE is set and the file is not in the cache")
    reason = _unreachable(endpoint())
    if reason:
        raise _unavailable(repo_id, filename, reason)
    from huggingface_hub import errors as hub_errors
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(
            repo_id, filename, cache_dir=hub_cache(), endpoint=endpoint(), library_name="tlwidgets",
            tqdm_class=_progress_class(progress) if progress is not None else None,
        )
    except hub_errors.GatedRepoError as exc:
        raise _unavailable(repo_id, filename, "the repository is gated: accept its terms and log in") from exc
    except (hub_errors.RepositoryNotFoundError, hub_errors.RemoteEntryNotFoundError) as exc:
        raise _unavailable(repo_id, filename, "no such repository or file on the Hub") from exc
    except (hub_errors.LocalEntryNotFoundError, hub_errors.HfHubHTTPError, OSError) as exc:
        raise _unavailable(repo_id, filename, f"{type(exc).__name__}: {str(exc)[:200]}") from exc
    except Exception as exc:  # httpx and connection errors of the transport
        if type(exc).__module__.split(".")[0] in ("httpx", "httpcore", "requests", "urllib3"):
            raise _unavailable(repo_id, filename, f"{type(exc).__name__}: {str(exc)[:200]}") from exc
        raise
    return Path(path)


def build_timm(spec: ModelSpec, pretrained: bool, progress: Progress | None = None) -> nn.Module:
    """The timm network of a ``timm:`` or ``hf:`` catalog entry, with its Hub weights if asked.

    The weights go through timm's own loading (``pretrained_cfg_overlay`` with the local
    file), so timm's key conversions apply exactly as for ``pretrained=True``.
    """
    try:
        import timm
    except ImportError as exc:
        raise ModelError(f"{spec.name!r} is a timm model: pip install timm") from exc
    kwargs = create_args(spec.name)
    cfg = kwargs.pop("pretrained_cfg", {})
    if not pretrained:
        return timm.create_model(spec.arch, pretrained=False, **kwargs)
    if not spec.hub_id:
        raise ModelError(f"{spec.name!r} has no weights on the Hugging Face Hub.")
    path = fetch(spec.hub_id, WEIGHTS_FILE, progress)
    overlay = {**cfg, "file": str(path), "hf_hub_id": None, "url": None}
    try:
        return timm.create_model(spec.arch, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    except (RuntimeError, ValueError, KeyError, OSError) as exc:
        raise ModelError(
            f"The weights in {path} do not fit {spec.arch}: {str(exc)[:300]}. Delete the file "
            "and let it download again."
        ) from exc


# ------------------------------------------------------------------ hf:<org>/<name>
# "hf:" entries built so far: name -> create_model arguments from the repository's config.json.
_HUB_ARGS: dict[str, dict[str, Any]] = {}
_HUB_SPECS: dict[str, ModelSpec] = {}


def create_args(name: str) -> dict[str, Any]:
    """Arguments of ``timm.create_model`` besides the architecture for catalog model ``name``
    (an ``hf:`` model's ``num_classes``, ``model_args`` and ``pretrained_cfg``; none for ``timm:``)."""
    return json.loads(json.dumps(_HUB_ARGS.get(name, {})))


def hub_specs() -> dict[str, ModelSpec]:
    """The ``hf:`` models described so far (see :func:`hub_spec`)."""
    return dict(_HUB_SPECS)


def _read_config(repo_id: str) -> dict[str, Any]:
    path = fetch(repo_id, CONFIG_FILE)
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ModelError(f"{path} ({repo_id}'s {CONFIG_FILE}) is larger than {MAX_CONFIG_BYTES} bytes; refused.")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{repo_id}'s {CONFIG_FILE} ({path}) is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise ModelError(f"{repo_id}'s {CONFIG_FILE} ({path}) is not a JSON object.")
    return config


def _refuse(repo_id: str, why: str) -> ModelError:
    return ModelError(
        f"hf:{repo_id} cannot be loaded: {why}. tlwidgets loads timm models from the Hub (their "
        "config.json names a timm 'architecture') and never runs code from a repository "
        "(no trust_remote_code); pick a timm model, e.g. from tlwidgets.list_models()."
    )


def hub_spec(repo_id: str, class_names: tuple[str, ...] = ()) -> ModelSpec:
    """Describe Hub model ``hf:<repo_id>`` from its config.json (downloaded once, never run).

    Raises:
        ModelError: not a timm model (no known ``architecture``, or it needs remote code).
        WeightsUnavailableError: the config cannot be fetched.
    """
    name = f"hf:{check_repo_id(repo_id)}"
    if name in _HUB_SPECS:
        return _HUB_SPECS[name]
    config = _read_config(repo_id)
    if "auto_map" in config or "architectures" in config:
        raise _refuse(repo_id, "it is a transformers model that needs its own code")
    arch = config.get("architecture")
    import timm

    if not isinstance(arch, str) or not timm.is_model(arch):
        raise _refuse(repo_id, f"its config.json names no architecture timm knows (found {arch!r})")
    cfg = config.get("pretrained_cfg") or {}
    args = config.get("model_args") or {}
    num_classes = config.get("num_classes", cfg.get("num_classes", 1000))
    if not isinstance(cfg, dict) or not isinstance(args, dict) or not isinstance(num_classes, int) or not (
        0 < num_classes <= 100_000
    ):
        raise _refuse(repo_id, "its config.json has a malformed pretrained_cfg, model_args or num_classes")
    kwargs = {**{k: v for k, v in args.items() if isinstance(k, str)}, "num_classes": num_classes,
              "pretrained_cfg": {**{k: v for k, v in cfg.items() if k in _CFG_KEYS}, "num_classes": num_classes}}
    import torch

    try:
        with torch.device("meta"):
            model = timm.create_model(arch, pretrained=False, **{k: v for k, v in kwargs.items() if k != "pretrained_cfg"})
    except Exception as exc:
        raise _refuse(repo_id, f"timm cannot build it ({type(exc).__name__}: {str(exc)[:200]})") from exc
    params = sum(p.numel() for p in model.parameters())
    size = cfg.get("input_size") or [3, 224, 224]
    crop = float(cfg.get("crop_pct") or 0.875)
    from tlwidgets.core.timm_catalog import family_for, resize_for

    spec = ModelSpec(
        name=name, family=family_for(arch), source="hub", arch=arch, params_m=params / 1e6,
        gflops=float("nan"), size_mb=params * 4 / 2**20, top1=None, top5=None,
        input_size=int(size[-1]), resize_size=resize_for(int(size[-1]), crop),
        mean=tuple(float(v) for v in cfg.get("mean") or (0.485, 0.456, 0.406)),  # type: ignore[arg-type]
        std=tuple(float(v) for v in cfg.get("std") or (0.229, 0.224, 0.225)),  # type: ignore[arg-type]
        interpolation=cfg.get("interpolation") if cfg.get("interpolation") in ("bilinear", "nearest") else "bicubic",
        weights_url=None, weights_path=None, num_classes=num_classes,
        class_names=class_names if num_classes == len(class_names) else (),
        license=str(cfg.get("license") or ""), hub_id=repo_id,
    )
    _HUB_ARGS[name] = kwargs
    _HUB_SPECS[name] = spec
    return spec


_CFG_KEYS = ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std", "num_classes",
             "pool_size", "first_conv", "classifier", "license")
