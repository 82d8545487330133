"""Atomic, safely loadable training checkpoints.

A checkpoint is a dict of tensors and plain Python values (model, optimiser and scheduler
state, epoch, eps-schedule step, RNG states, metric history), written to a temporary file
in the same directory and renamed over the old one: a crash mid-write leaves the previous
checkpoint intact. Loading uses ``torch.load(weights_only=True)``, which refuses pickled
code, so a checkpoint from an untrusted place cannot run anything.
"""

from __future__ import annotations

import io
import os
import random
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow.fs as pafs
import torch
from torch import nn

CHECKPOINT_NAME = "checkpoint.pt"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or does not fit the model."""


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temp file, fsync, rename); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; a clear error if it is missing or bad.

    ``path`` is a local path or a URI (``file://``, ``s3://``, ``gs://``, ``hdfs://``, ...)
    that pyarrow's filesystems can open; remote files are read into memory first.
    """
    if isinstance(path, str) and "://" in path:
        return _safe_load(io.BytesIO(_read_uri(path)), path, map_location)
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    return _safe_load(path, str(path), map_location)


def _read_uri(uri: str) -> bytes:
    try:
        filesystem, location = pafs.FileSystem.from_uri(uri)
        with filesystem.open_input_stream(location) as stream:
            return stream.read()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {uri} does not exist") from None
    except Exception as err:  # pyarrow raises several types (bad scheme, no access, ...)
        raise CheckpointError(f"checkpoint URI {uri!r} cannot be read: {err}") from err


def _safe_load(
    source: Path | BinaryIO, name: str, map_location: str | torch.device
) -> dict[str, Any]:
    try:
        state = torch.load(source, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or unsafe files
        raise CheckpointError(f"checkpoint {name} cannot be read safely: {err}") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {name} holds {type(state).__name__}, not a dict")
    return state


def load_model_state(model: nn.Module, state_dict: dict[str, Any], source: str) -> None:
    """Load weights strictly; a mismatch lists the missing, unexpected and mis-shaped keys."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    misshaped = sorted(
        f"{key} {tuple(state_dict[key].shape)} != {tuple(expected[key].shape)}"
        for key in set(expected) & set(state_dict)
        if tuple(state_dict[key].shape) != tuple(expected[key].shape)
    )
    if missing or unexpected or misshaped:
        lines = [f"{source} does not fit this model (another architecture or options?)"]
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches (checkpoint != model)", misshaped),
        ):
            if keys:
                lines.append(f"  {label}: {', '.join(keys)}")
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(state_dict)


def rng_state() -> dict[str, Any]:
    """The global RNG states a resumed run must continue from (torch CPU/CUDA, random)."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": _to_lists(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(value: Any) -> Any:
    return [_to_lists(v) for v in value] if isinstance(value, tuple) else value
