"""What the loop needs to know about torch.distributed, and nothing when it is not running.

When a process group is initialised (Ray Train, torchrun, or the tests' spawned processes)
the loop shards data with ``DistributedSampler``, wraps the model in
``DistributedDataParallel`` and sums its metric counters over ranks, so every rank reports
the same global numbers. BatchNorm: each rank normalises with its own shard's statistics
(plain DDP). DDP broadcasts rank 0's running statistics at the start of every forward pass,
so after an epoch's last step each rank holds them updated with its own last batch; the
loop broadcasts rank 0's buffers at the end of every epoch, so evaluation and checkpoints
see buffers that, like the parameters, are identical across ranks. Only rank 0 writes
checkpoints.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1

    @classmethod
    def current(cls) -> Distributed:
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum(self, values: Tensor) -> Tensor:
        """Sum a tensor over ranks (identity in a single process)."""
        if self.enabled:
            values = values.clone()
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank if ``flag`` is true on any rank (keeps ranks in step)."""
        if not self.enabled:
            return flag
        return bool(self.sum(torch.tensor([float(flag)], device=device)).item() > 0)

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """``DistributedDataParallel(model)`` when distributed, else ``model`` itself."""
        if not self.enabled:
            return model
        device_ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def average_gradients(self, params: Iterable[nn.Parameter]) -> None:
        """Average ``.grad`` over ranks, for parameters outside the DDP wrapper."""
        if self.enabled:
            for param in params:
                if param.grad is not None:
                    dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
                    param.grad /= self.world_size

    def broadcast_buffers(self, model: nn.Module) -> None:
        """Copy rank 0's buffers (BatchNorm running statistics) to every rank, in place."""
        if self.enabled:
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()
