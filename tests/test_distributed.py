"""The training loop under torch.distributed: two CPU processes (DDP, gloo) equal one.

Two processes are spawned once for both tests (``torch.multiprocessing``, start method
"spawn", gloo, a FileStore in a temporary directory); each calls ``train`` for each config
and sends its results back through ``{config}/rank{r}.pt`` files (``torch.save``).

* Equivalence: IBP training of an MLP (no BatchNorm, no PGD in training or evaluation,
  warm-up regularisers off, which are ratios of batch means and so not sums over examples)
  has a loss that is a mean over examples, so with the same global batch DDP's averaged
  gradient is the single-process gradient and the runs agree up to float rounding (the
  2-process gradient is a mean of two 32-example means). The train split is made even
  (1286 examples): ``DistributedSampler(drop_last=True)`` drops one example of an odd
  split, so the last step's global batch would differ by one example. SGD, not Adam: Adam's
  first steps move every weight by about +-lr whatever the gradient's size, so weights whose
  gradient is rounding noise drift apart by up to 1e-2 (measured with Adam at lr 5e-3);
  with SGD the measured differences are <= 2e-6 (weights) and <= 1e-7 relative (losses),
  and accuracies were equal. Tolerances: losses rel 1e-6, weights atol 2e-5 / rel 1e-4
  (>= 10x the measured), accuracies at most one example apart (1/151 on val, 1/360 on test,
  1/1286 on train) in case a margin within rounding of 0 flips; counts ``n`` exactly.
* BatchNorm (CNN7, CC-IBP, a checkpoint directory): both ranks end with bit-identical
  parameters and BatchNorm buffers, report identical metrics, and only rank 0 calls
  ``save_checkpoint`` (each child wraps it to count its calls).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from training_helpers import digits_config

from trainables.checkpoints import CHECKPOINT_NAME, load_checkpoint
from trainables.config import load_config
from trainables.training.callbacks import RunInfo, TrainingCallback
from trainables.training.loop import train

WORLD_SIZE = 2
TIMEOUT_S = 300  # a hung collective fails the tests instead of blocking them
LOCAL_KEYS = ("seconds", "examples_per_second")  # timings, per rank by nature

#: IBP on an MLP: deterministic, and its loss is a mean over examples.
EQUIVALENCE = {
    "model.name": "mlp",
    "model.options": {"width": 64},
    "method.name": "ibp",
    "optim.name": "sgd",
    "optim.lr": 0.2,
    "dataset.val_size": 0.105,  # 1437 * 0.105 -> 151 val, 1286 (even) train examples
    "epochs": 3,
    "eps_schedule.start": 1,
    "eps_schedule.length": 2,
    "warmup.weight": 0.0,
    "eval.every": 1,
    "eval.pgd_steps": 0,
    "eval.verifier": "ibp",
    "eval.final_verifier": "crown-ibp",
    "device": "cpu",
}

#: CNN7 with BatchNorm, CC-IBP (PGD in training), checkpoints.
BATCHNORM = {
    "model.name": "cnn7",
    "model.options": {"width": 4, "linear_size": 32},
    "method.name": "cc-ibp",
    "attack.steps": 2,
    "epochs": 2,
    "eps_schedule.length": 1,
    "eval.every": 1,
    "eval.pgd_steps": 2,
    "eval.final_verifier": "ibp",
    "device": "cpu",
}


class _Record(TrainingCallback):
    def __init__(self) -> None:
        self.info: RunInfo | None = None
        self.batches = 0
        self.checkpoints: list[str | None] = []

    def on_train_begin(self, info: RunInfo) -> None:
        self.info = info

    def on_batch_end(self, epoch: int, step: int, terms: dict[str, float]) -> None:
        self.batches += 1

    def on_epoch_end(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        self.checkpoints.append(None if checkpoint is None else str(checkpoint))


def _worker(rank: int, world_size: int, store: str, runs: dict[str, Any], out: str) -> None:
    """One rank: train each of ``runs`` in turn, saving the results to ``out/{name}/rank{r}.pt``."""
    torch.set_num_threads(1)
    import trainables.training.loop as loop

    saves: list[str] = []
    save_checkpoint = loop.save_checkpoint

    def counting_save(path, state):
        saves.append(str(path))
        return save_checkpoint(path, state)

    loop.save_checkpoint = counting_save  # this process only
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        for name, settings in runs.items():
            saves.clear()
            record = _Record()
            result = train(load_config(settings), [record])
            report = {
                "rank": record.info.rank,
                "world_size": record.info.world_size,
                "is_main": record.info.is_main,
                "batches_per_epoch": record.info.batches_per_epoch,
                "batches": record.batches,
                "epoch_checkpoints": record.checkpoints,
                "saves": list(saves),
                "status": result.status,
                "history": result.history,
                "final": result.final,
                "checkpoint": None if result.checkpoint is None else str(result.checkpoint),
                "state": {k: v.detach().clone() for k, v in result.model.state_dict().items()},
            }
            torch.save(report, Path(out) / name / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def distributed(tmp_path_factory) -> dict[str, Any]:
    """Both 2-process runs from one spawn (process start-up is most of the cost), by name."""
    root = tmp_path_factory.mktemp("distributed")
    runs = {
        "equivalence": digits_config(EQUIVALENCE),
        "batchnorm": digits_config({**BATCHNORM, "checkpoint.dir": str(root / "checkpoints")}),
    }
    for name in runs:
        (root / name).mkdir()
    args = (WORLD_SIZE, str(root / "store"), runs, str(root))
    context = mp.start_processes(
        _worker, args=args, nprocs=WORLD_SIZE, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + TIMEOUT_S
    while not context.join(timeout=1):  # re-raises a rank's exception with its traceback
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the {WORLD_SIZE} ranks did not finish within {TIMEOUT_S} s (a hang?)")
    return {
        "checkpoints": root / "checkpoints",
        **{
            name: [
                torch.load(root / name / f"rank{r}.pt", weights_only=False)
                for r in range(WORLD_SIZE)
            ]
            for name in runs
        },
    }


def _global(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in m.items() if k not in LOCAL_KEYS} for m in history]


def _accuracy_close(a: float, b: float, n: float) -> bool:
    return abs(a - b) <= 1 / n + 1e-12


def test_two_processes_train_like_one_with_the_same_global_batch(distributed) -> None:
    record = _Record()
    single = train(load_config(digits_config(EQUIVALENCE)), [record])
    ranks = distributed["equivalence"]

    for r, report in enumerate(ranks):
        assert (report["rank"], report["world_size"]) == (r, WORLD_SIZE)
        assert report["status"] == "completed"
        # per-rank batch 32: as many steps per epoch as one process with batch 64
        assert report["batches_per_epoch"] == record.info.batches_per_epoch == 21
        assert report["batches"] == record.batches == 3 * 21
    zero, one = ranks
    assert _global(zero["history"]) == _global(one["history"])
    assert zero["final"] == one["final"]
    for key, value in zero["state"].items():
        assert torch.equal(value, one["state"][key]), key

    val_n, test_n = 151, single.final["test_n"]
    assert len(zero["history"]) == len(single.history) == 3
    for ours, theirs in zip(zero["history"], single.history, strict=True):
        assert ours["epoch"] == theirs["epoch"]
        assert ours["eps"] == theirs["eps"] and ours["lr"] == theirs["lr"]
        assert ours["val_n"] == theirs["val_n"] == val_n
        for key in ("loss", "loss_robust", "ibp_loss"):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-6), key
        assert _accuracy_close(ours["train_clean_acc"], theirs["train_clean_acc"], 1286)
        for key in ("val_clean_acc", "val_cert_acc"):
            assert _accuracy_close(ours[key], theirs[key], val_n), key
    assert zero["final"]["test_n"] == test_n == 360
    for key in ("test_clean_acc", "test_cert_acc"):
        assert _accuracy_close(zero["final"][key], single.final[key], test_n), key
    assert single.final["test_cert_acc"] > 0.1  # the comparison is not between two zeros
    for key, value in single.model.state_dict().items():
        torch.testing.assert_close(zero["state"][key], value, atol=2e-5, rtol=1e-4)


def test_batchnorm_run_keeps_ranks_identical_and_only_rank_zero_checkpoints(distributed) -> None:
    directory = distributed["checkpoints"]
    zero, one = distributed["batchnorm"]
    path = directory / CHECKPOINT_NAME

    assert [zero["is_main"], one["is_main"]] == [True, False]
    assert zero["status"] == one["status"] == "completed"
    assert _global(zero["history"]) == _global(one["history"])
    assert zero["final"] == one["final"]
    assert zero["history"][-1]["val_n"] == 144 and zero["final"]["test_n"] == 360
    buffers = [k for k in zero["state"] if "running_" in k or "num_batches" in k]
    assert len(buffers) == 3 * 6  # six BatchNorm layers
    for key, value in zero["state"].items():
        assert torch.equal(value, one["state"][key]), key

    assert zero["saves"] == [str(path)] * 2  # every epoch
    assert one["saves"] == []
    assert zero["checkpoint"] == one["checkpoint"] == str(path)
    assert zero["epoch_checkpoints"] == one["epoch_checkpoints"] == [str(path)] * 2
    assert sorted(p.name for p in directory.iterdir()) == [CHECKPOINT_NAME]
    state = load_checkpoint(path)
    assert state["epoch"] == 2
    for key, value in zero["state"].items():
        assert torch.equal(state["model"][key], value), key
