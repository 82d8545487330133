"""Certificates run in full float32: no TF32 in matmuls or cuDNN convolutions.

On Ampere and later GPUs, cuDNN convolutions (and, when enabled, matmuls) default to TF32, a
10-bit mantissa: a bound computed that way is not a sound bound of the float32 network.
``full_float32()`` switches TF32 off (``torch.backends.cuda.matmul.allow_tf32``,
``torch.backends.cudnn.allow_tf32``, float32 matmul precision "highest", which also covers
oneDNN on CPUs) for the duration of a certificate and restores the caller's settings
afterwards. The flags exist without a GPU, so this is testable on a CPU.

torch >= 2.9 also has per-backend ``fp32_precision`` attributes; once a process sets those,
the legacy getters refuse to read a mixed state. The caller's state is then saved and
restored through the per-backend attributes instead (the legacy setters used inside override
both views).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def full_float32() -> Iterator[None]:
    """Run the body with TF32 off everywhere; restore the previous settings on exit."""
    legacy = _legacy_state()
    backends = _backend_state()
    torch.set_float32_matmul_precision("highest")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        if legacy is not None:
            precision, matmul, cudnn = legacy
            torch.set_float32_matmul_precision(precision)
            torch.backends.cuda.matmul.allow_tf32 = matmul
            torch.backends.cudnn.allow_tf32 = cudnn
        else:
            for backend, value in backends:
                backend.fp32_precision = value


def _legacy_state() -> tuple[str, bool, bool] | None:
    """(matmul precision, cuBLAS TF32, cuDNN TF32), or None if torch refuses a mixed state."""
    try:
        return (
            torch.get_float32_matmul_precision(),
            torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32,
        )
    except RuntimeError:  # the per-backend API was used (torch >= 2.9)
        return None


def _backend_state() -> list[tuple[object, str]]:
    """The per-backend ``fp32_precision`` settings (torch >= 2.9; empty before)."""
    backends = torch.backends
    candidates = [backends.cuda.matmul]
    for family in ("cudnn", "mkldnn"):
        module = getattr(backends, family, None)
        candidates += [getattr(module, op, None) for op in ("conv", "rnn", "matmul")]
    return [(b, b.fp32_precision) for b in candidates if hasattr(b, "fp32_precision")]
