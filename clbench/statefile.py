"""Nested run state (tensors, numbers, strings, lists, dicts) in one safetensors file, no pickle.

A checkpoint holds the model's changed tensors and the strategy's ``state_dict()``, which mixes
tensors with plain Python values (bank sizes, task logs, buffers, optimizer-like ``{int: ...}``
maps). Tensors go into the safetensors payload under generated keys; everything else goes into
the file's metadata as one JSON document whose tensor leaves point at those keys. Loading reads
the JSON and the tensors back and never runs code from the file (safetensors holds no code and
the JSON holds only data), so a checkpoint from an untrusted source cannot execute anything.

JSON cannot hold tuples, non-string dict keys or keys that look like our markers, so those are
written as tagged objects (``{"$tuple": [...]}``, ``{"$items": [[key, value], ...]}``) and come
back as the same Python types.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes

METADATA_KEY = "clbench.state"
"""The safetensors metadata field that holds the JSON skeleton."""
FORMAT = "clbench-state-1"

_TENSOR, _NDARRAY, _TUPLE, _ITEMS = "$tensor", "$ndarray", "$tuple", "$items"


class StateFormatError(ValueError):
    """The file is not a clbench state file, or its skeleton is inconsistent."""


def _encode(value: Any, tensors: dict[str, torch.Tensor], seen: set[int], where: str) -> Any:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        if t.numel() and t.untyped_storage().data_ptr() in seen:  # safetensors refuses tensors that share memory
            t = t.clone()
        if t.numel():
            seen.add(t.untyped_storage().data_ptr())
        key = f"t{len(tensors)}"
        tensors[key] = t
        return {_TENSOR: key}
    if isinstance(value, np.ndarray):
        encoded = _encode(torch.from_numpy(np.ascontiguousarray(value)), tensors, seen, where)
        return {_NDARRAY: encoded[_TENSOR]}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(v, tensors, seen, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, tensors, seen, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {k: _encode(v, tensors, seen, f"{where}.{k}") for k, v in value.items()}
        return {_ITEMS: [[_encode(k, tensors, seen, f"{where} key"), _encode(v, tensors, seen, f"{where}[{k!r}]")] for k, v in value.items()]}
    raise TypeError(f"{where} is a {type(value).__name__}, which a checkpoint cannot hold (tensors, numbers, strings, lists and dicts only)")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        (tag, inner), = value.items()
        if tag in (_TENSOR, _NDARRAY):
            if not isinstance(inner, str) or inner not in tensors:
                raise StateFormatError(f"the state names a tensor {inner!r} the file does not hold")
            return tensors[inner] if tag == _TENSOR else tensors[inner].numpy()
        if tag == _TUPLE and isinstance(inner, list):
            return tuple(_decode(v, tensors) for v in inner)
        if tag == _ITEMS and isinstance(inner, list):
            if not all(isinstance(pair, list) and len(pair) == 2 for pair in inner):
                raise StateFormatError("a '$items' entry is not a list of [key, value] pairs")
            return {_hashable(_decode(k, tensors)): _decode(v, tensors) for k, v in inner}
        if tag == "$float" and inner in ("nan", "inf", "-inf"):
            return float(inner)
    return {k: _decode(v, tensors) for k, v in value.items()}


def _hashable(key: Any) -> Any:
    if isinstance(key, list | dict) or isinstance(key, torch.Tensor):
        raise StateFormatError(f"a dict key is a {type(key).__name__}")
    return key


def to_bytes(state: dict[str, Any]) -> bytes:
    """``state`` as the bytes of a safetensors file (tensors copied to CPU).

    Raises:
        TypeError: the state holds a value other than tensors, arrays, numbers, strings, ``None``,
            lists, tuples and dicts (naming where).
    """
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _encode(state, tensors, set(), "state")
    metadata = {"format": FORMAT, METADATA_KEY: json.dumps(skeleton, allow_nan=False)}
    return safetensors_bytes(tensors, metadata=metadata)


def load(path: Path) -> dict[str, Any]:
    """Read a file written from :func:`to_bytes`.

    Raises:
        FileNotFoundError: no file.
        StateFormatError: not a clbench state file (foreign or damaged bytes, no skeleton, a
            skeleton that names tensors the file lacks).
    """
    if not path.exists():
        raise FileNotFoundError(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (safe_open has no iterator)
    except Exception as exc:  # safetensors raises its own error type for truncated or foreign bytes
        raise StateFormatError(f"not a safetensors file ({type(exc).__name__}: {str(exc).strip()[:160]})") from None
    if metadata.get("format") != FORMAT or METADATA_KEY not in metadata:
        raise StateFormatError(f"a safetensors file without clbench's state record (metadata 'format' is {metadata.get('format')!r})")
    try:
        skeleton = json.loads(metadata[METADATA_KEY])
    except ValueError:
        raise StateFormatError("its state record is not valid JSON") from None
    state = _decode(skeleton, tensors)
    if not isinstance(state, dict):
        raise StateFormatError("its state record is not an object")
    return state
