"""What the expert-model adapters (lungmask, cellpose, nnunet, sam) share: weights are files the user has, named
by a parameter; nothing is ever downloaded. A missing file is refused before any record is read, with the file
named and what to put there; a weights file whose keys or shapes do not fit the network is a clear error naming
the first keys that differ. The weights' hash joins the parameters (`weights_sha256`), so the proposals say
which weights made them and a changed file is a new fingerprint (its parts are computed again).

torch (and transformers, dynamic_network_architectures) are imported here only when an adapter runs.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from ..errors import ProposeError

CHUNK = 1 << 20


def need_file(method: str, param: str, value: str, what: str, where: str) -> Path:
    """The file `value` names, or ProposeError saying which file is missing and what to put there."""
    if not value:
        raise ProposeError(f"{method} needs --param {param}=PATH: {what}. Nothing is downloaded: {where}")
    path = Path(value).expanduser()
    if not path.is_file():
        raise ProposeError(f"{method}: {param} {str(path)!r} is not a file: {what} is needed there. {where}")
    return path


def need_folder(method: str, param: str, value: str, what: str, where: str) -> Path:
    if not value:
        raise ProposeError(f"{method} needs --param {param}=FOLDER: {what}. Nothing is downloaded: {where}")
    path = Path(value).expanduser()
    if not path.is_dir():
        raise ProposeError(f"{method}: {param} {str(path)!r} is not a folder: {what} is needed there. {where}")
    return path


def sha256(paths: list[Path]) -> str:
    """One hash of the files' contents (the weights' identity in the proposals' parameters)."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
    return h.hexdigest()[:16]


def torch_load(path: Path, method: str):
    """A checkpoint read with `weights_only=True` (no code runs from the file); numpy scalars, which training
    loops log (nnU-Net's), are allowed."""
    try:
        import torch
    except ImportError:
        raise ProposeError(f"{method} needs torch: pip install torch==2.13.0 (see constraints.txt)") from None
    import numpy as np

    allowed = [np.dtype, np.ndarray, type(np.dtype(np.float64)), type(np.dtype(np.float32)), type(np.dtype(np.int64))]
    try:
        allowed.append(np._core.multiarray.scalar)
    except AttributeError:  # numpy 1
        allowed.append(np.core.multiarray.scalar)
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ProposeError(f"{method}: {path} is not a torch weights file that loads safely ({type(e).__name__}: {e})") from None


def state_dict_of(obj, path: Path, method: str, keys: tuple[str, ...] = ("state_dict", "model", "network_weights")) -> dict:
    """The state dict in a loaded checkpoint: itself, or under one of `keys`."""
    if isinstance(obj, dict):
        for key in keys:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(hasattr(v, "shape") for v in obj.values()):
        raise ProposeError(f"{method}: {path} holds no state dict (a mapping of parameter names to tensors)")
    return {k.removeprefix("module."): v for k, v in obj.items()}  # saved from DataParallel


def fit(network, state: dict, path: Path, method: str, expected: str) -> None:
    """Load `state` into `network`, or ProposeError naming missing, unexpected and mis-shaped keys."""
    own = network.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or extra or shapes:
        parts = []
        for name, items in (("missing", missing), ("unexpected", extra), ("wrong shape", shapes)):
            if items:
                parts.append(f"{len(items)} {name}: {', '.join(items[:3])}" + (" ..." if len(items) > 3 else ""))
        raise ProposeError(f"{method}: {path} does not fit {expected}: {'; '.join(parts)}")
    network.load_state_dict(state)
    network.eval()


def device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@lru_cache(maxsize=4)
def cached(loader, *key):
    """A model loaded once per worker process (the key holds the file's path and hash)."""
    return loader(*key)
