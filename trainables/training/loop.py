"""The training loop every trial runs: config in, metrics and checkpoints out, no Ray.

``train(config)`` builds data, model and optimiser from a ``TrainConfig``, resumes from the
checkpoint directory when one holds a checkpoint, trains with the configured method and eps
schedule, evaluates on the validation split each ``eval.every`` epochs, reports through
callbacks, and finally evaluates on ``eval.final_split`` with ``eval.final_verifier`` and
``eval.final_attack``, and certifies the validation split (``eval.subset`` examples) with
``eval.final_verifier`` (``val_final_cert_acc``: what a sweep tunes on).
A non-finite loss ends the run with status "diverged" (before the bad step is applied).
With ``teacher.name`` set, the loop loads the teacher (it never trains one: recipe teachers
come from ``trainables.training.teacher_cache.ensure_teacher``), adds the teacher's
validation accuracy (``teacher_val_clean_acc``, ``teacher_val_pgd_acc``, constant) and the
epoch's time in teacher passes (``teacher_seconds``) to every epoch's metrics, and optimises
and checkpoints the distillation projection together with the model.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from trainables.certify.verifiers import make_configured_verifier
from trainables.checkpoints import (
    CHECKPOINT_NAME,
    CheckpointError,
    load_checkpoint,
    load_model_state,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from trainables.config import TrainConfig
from trainables.data import DatasetSplits, load_dataset
from trainables.evaluation import evaluate
from trainables.models import build_model_for
from trainables.models.init import shi_ibp_init
from trainables.schedules import EpsSchedule
from trainables.teachers import load_teacher
from trainables.training.callbacks import RunInfo, TrainingCallback
from trainables.training.distiller import Distiller
from trainables.training.distributed import Distributed
from trainables.training.optim import build_lr_scheduler, build_optimizer
from trainables.training.step import TrainingStep

Status = Literal["completed", "diverged"]


@dataclass
class RunResult:
    status: Status
    epochs_completed: int
    history: list[dict[str, Any]]  # one metrics dict per epoch
    final: dict[str, float]  # final evaluation (empty when diverged)
    checkpoint: Path | None
    model: nn.Module = field(repr=False)
    diverged_epoch: int | None = None  # 1-based epoch where the loss became non-finite


def resolve_device(name: str) -> torch.device:
    """``auto`` picks this rank's GPU when there is one, else the CPU."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def checkpoint_path(config: TrainConfig) -> Path | None:
    return None if config.checkpoint.dir is None else Path(config.checkpoint.dir) / CHECKPOINT_NAME


def train(
    config: TrainConfig,
    callbacks: Sequence[TrainingCallback] = (),
    *,
    splits: DatasetSplits | None = None,
) -> RunResult:
    """Run (or resume) one training run; ``splits`` overrides loading ``config.dataset``."""
    return _Run(config, callbacks, splits).run()


class _Run:
    def __init__(
        self,
        config: TrainConfig,
        callbacks: Sequence[TrainingCallback],
        splits: DatasetSplits | None,
    ) -> None:
        self.config, self.callbacks = config, list(callbacks)
        self.dist = Distributed.current()
        self.device = resolve_device(config.device)
        torch.manual_seed(config.seed)
        self.splits = splits or load_splits(config)
        info = self.splits.info
        self.model = build_model_for(info, config.model.name, config.model.options).to(self.device)
        if config.init == "shi":
            shi_ibp_init(self.model)
        self.loader = self._train_loader()
        self.distiller, self.teacher_metrics = None, {}
        if config.distilling:
            teacher = load_teacher(config, info, self.device)
            self.distiller = Distiller(
                config, teacher, self.model, info.input_shape, info.num_classes
            )
            self.teacher_metrics = self._teacher_metrics(teacher.model)
        self.projection = self.distiller.projection if self.distiller else None
        self.parameters = list(self.model.parameters())
        if self.projection is not None:
            self.parameters += list(self.projection.parameters())
        self.optimizer = build_optimizer(self.parameters, config.optim)
        self.lr_scheduler = build_lr_scheduler(self.optimizer, config.optim, config.epochs)
        schedule = config.eps_schedule
        self.eps_schedule = EpsSchedule(
            config.eps, len(self.loader), schedule.start, schedule.length, schedule.kind
        )
        self.attack_generator = torch.Generator().manual_seed(config.seed + 7919 * self.dist.rank)
        self.epoch, self.step, self.history = 0, 0, []
        self.checkpoint = checkpoint_path(config)
        if self.checkpoint is not None and config.checkpoint.resume and self.checkpoint.exists():
            self._resume(self.checkpoint)
        self.forward = self.dist.wrap(self.model, self.device)
        self.training_step = TrainingStep(
            self.model,
            self.forward,
            config,
            info.num_classes,
            self.attack_generator,
            self.distiller,
        )

    # -- the run ---------------------------------------------------------------------------

    def run(self) -> RunResult:
        info = RunInfo(
            self.config.epochs,
            len(self.loader),
            self.epoch,
            self.dist.rank,
            self.dist.world_size,
        )
        for callback in self.callbacks:
            callback.on_train_begin(info)
        status: Status = "completed"
        diverged_epoch = None
        written = self.checkpoint if self.history and self.checkpoint else None
        while self.epoch < self.config.epochs:
            metrics = self._train_epoch()
            if metrics is None:
                status, diverged_epoch = "diverged", self.epoch + 1
                break
            self.epoch += 1
            self.lr_scheduler.step()
            last = self.epoch == self.config.epochs
            if last or self.epoch % self.config.eval.every == 0:
                metrics.update(self._validate())
            self.history.append(metrics)
            written = None
            if self.checkpoint and (last or self.epoch % self.config.checkpoint.every == 0):
                written = self._save()
            for callback in self.callbacks:
                callback.on_epoch_end(metrics, written)
        final = self._final_evaluation() if status == "completed" else {}
        result = RunResult(
            status, self.epoch, self.history, final, written, self.model, diverged_epoch
        )
        for callback in self.callbacks:
            callback.on_train_end(result)
        return result

    def _train_epoch(self) -> dict[str, Any] | None:
        """One epoch; its metrics, or None if a loss became non-finite (step not applied)."""
        self.model.train()
        self.loader.sampler.set_epoch(self.epoch)
        sums: dict[str, float] = {}
        seen = correct = 0
        started = time.perf_counter()
        eps = 0.0
        progress = (self.epoch + 1) / self.config.epochs  # IGDM's ramp: epoch / epochs
        for x, y in self.loader:
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            eps = self.eps_schedule(self.step)
            out = self.training_step(x, y, eps, progress)
            total = out.total
            if self.dist.any(not bool(torch.isfinite(total)), self.device):
                return None
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            if self.projection is not None:  # not inside the DDP wrapper: average by hand
                self.dist.average_gradients(self.projection.parameters())
            if self.config.optim.grad_clip is not None:
                nn.utils.clip_grad_norm_(self.parameters, self.config.optim.grad_clip)
            self.optimizer.step()
            self.step += 1
            terms = {f"loss_{k}": v.item() for k, v in out.terms.items()}
            terms["loss"] = total.item()
            for key, value in {**terms, **out.diagnostics}.items():
                sums[key] = sums.get(key, 0.0) + value * len(y)
            seen += len(y)
            correct += int((out.logits.argmax(dim=1) == y).sum())
            for callback in self.callbacks:
                callback.on_batch_end(self.epoch, self.step, terms)
        self.dist.broadcast_buffers(self.model)  # each rank's last step updated its own
        seconds = time.perf_counter() - started
        teacher_seconds = self.distiller.teacher.take_seconds() if self.distiller else 0.0
        keys = sorted(sums)
        totals = self.dist.sum(
            torch.tensor(
                [seen, correct, teacher_seconds, *(sums[k] for k in keys)], dtype=torch.float64
            )
        ).tolist()
        seen_all = max(totals[0], 1.0)
        metrics: dict[str, Any] = {
            "epoch": self.epoch + 1,
            "eps": eps,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_clean_acc": totals[1] / seen_all,
            **{k: v / seen_all for k, v in zip(keys, totals[3:], strict=True)},
            "seconds": seconds,
            "examples_per_second": totals[0] / max(seconds, 1e-9),
        }
        if self.distiller is not None:  # time in teacher passes (mean over ranks); constants
            metrics["teacher_seconds"] = totals[2] / self.dist.world_size
            metrics.update(self.teacher_metrics)
        return metrics

    def _validate(self) -> dict[str, float]:
        ev = self.config.eval
        split = self.splits.val if ev.split == "val" else self.splits.test
        metrics = self._evaluate(split, ev.verifier, ev.subset, seed=self.epoch)
        return {f"{ev.split}_{k}": v for k, v in metrics.items()}

    def _teacher_metrics(self, teacher: nn.Module) -> dict[str, float]:
        """The teacher's clean and PGD accuracy on the validation split (no certificate)."""
        metrics = self._evaluate(self.splits.val, None, self.config.eval.subset, 0, teacher)
        return {f"teacher_val_{k}": v for k, v in metrics.items() if k.endswith("_acc")}

    def _final_evaluation(self) -> dict[str, float]:
        ev = self.config.eval
        split = self.splits.val if ev.final_split == "val" else self.splits.test
        metrics = self._evaluate(
            split, ev.final_verifier, ev.final_subset, seed=0, attack=ev.final_attack
        )
        metrics["verifier"] = ev.final_verifier
        final = {f"{ev.final_split}_{k}": v for k, v in metrics.items()}
        return {**final, **self._final_val_certificate()}

    def _final_val_certificate(self) -> dict[str, float]:
        """The final verifier's certificate of the validation split (its first
        ``eval.subset`` examples, those the epochs evaluate by default), so that a sweep
        ranks trials on the certificate it reports: ``val_final_cert_acc``, its counters
        (``val_final_cert_by_<stage>``, ...) and ``val_final_n``; nothing without a final
        verifier. No attack: only the certificate is needed."""
        ev = self.config.eval
        if ev.final_verifier is None:
            return {}
        metrics = self._evaluate(self.splits.val, ev.final_verifier, ev.subset, seed=0, pgd_steps=0)
        return {f"val_final_{k}": v for k, v in metrics.items() if k != "clean_acc"}

    def _evaluate(
        self,
        dataset,
        verifier,
        subset,
        seed: int,
        model: nn.Module | None = None,
        attack: str = "pgd",
        pgd_steps: int | None = None,
    ) -> dict[str, float]:
        ev = self.config.eval
        seed = self.config.seed * 100003 + seed
        if verifier is not None:
            settings = {"time_limit": ev.milp_time_limit, "seed": seed}
            verifier = make_configured_verifier(
                verifier, {**settings, "alpha_iterations": ev.alpha_iterations}
            )
        return evaluate(
            self.model if model is None else model,
            dataset,
            eps=self.config.eval_eps,
            verifier=verifier,
            pgd_steps=ev.pgd_steps if pgd_steps is None else pgd_steps,
            pgd_restarts=ev.pgd_restarts,
            subset=subset,
            batch_size=ev.batch_size,
            device=self.device,
            seed=seed,
            distributed=self.dist,
            attack=attack,
        )

    # -- data and checkpoints --------------------------------------------------------------

    def _train_loader(self) -> DataLoader:
        """Per-epoch shuffles from (seed, epoch) alone, so resuming needs no loader state.

        ``DistributedSampler`` also serves one process (one replica); rank r takes every
        world-size-th index of the same permutation, so the ranks' batches together are the
        single-process batch of the same step (when the training set size is a multiple of
        the process count; otherwise the sampler drops the remainder).
        """
        batch, world = self.config.batch_size, self.dist.world_size
        if batch % world:
            raise ValueError(f"batch_size={batch} is not divisible by the {world} processes")
        sampler = DistributedSampler(
            self.splits.train,
            num_replicas=world,
            rank=self.dist.rank,
            shuffle=True,
            seed=self.config.seed,
            drop_last=True,
        )
        return DataLoader(
            self.splits.train,
            batch_size=batch // world,
            sampler=sampler,
            num_workers=self.config.num_workers,
            pin_memory=self.device.type == "cuda",
        )

    def _state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "history": self.history,
            "rng": rng_state(),
            "attack_rng": self.attack_generator.get_state(),
            "config": self.config.model_dump(mode="json"),
            **({} if self.projection is None else {"projection": self.projection.state_dict()}),
        }

    def _save(self) -> Path:
        state = self._state()  # every rank builds it (cheap); only rank 0 writes
        if self.dist.is_main:
            save_checkpoint(self.checkpoint, state)
        self.dist.barrier()
        return self.checkpoint

    def _resume(self, path: Path) -> None:
        state = load_checkpoint(path, map_location=self.device)
        load_model_state(self.model, state["model"], f"checkpoint {path}")
        if self.projection is not None:
            if "projection" not in state:
                raise CheckpointError(f"checkpoint {path} has no distillation projection")
            load_model_state(self.projection, state["projection"], f"checkpoint {path}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.epoch, self.step, self.history = state["epoch"], state["step"], state["history"]
        restore_rng_state(state["rng"])
        self.attack_generator.set_state(state["attack_rng"].cpu())


def load_splits(config: TrainConfig) -> DatasetSplits:
    """The dataset splits a run of ``config`` uses (its validation split depends on the seed)."""
    data = config.dataset
    return load_dataset(
        data.name,
        data.root,
        val_size=data.val_size,
        seed=config.seed,
        download=data.download,
        augment=data.augment,
        **data.options,
    )
