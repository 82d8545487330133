"""Benchmark (not a test): one training step per method on CNN7 at 3x32x32, batch 32.

    python tests/benchmarks/bench_training.py [--device cuda] [--rounds 5] [--steps 3] [--threads N]

A step is what the loop does per batch: the method's loss (clean pass, attack, bounds),
backward, gradient clipping and the optimiser step, at the final eps (2/255, the CIFAR-10
recipe: 8 PGD steps in training, attack eps factor 2.1, CC-IBP alpha 0.01, MTL-IBP 4e-3).
Methods are timed round-robin in one process on the same model and batch, and each method's
median over the rounds is reported as a ratio to the plain (standard) step, so a noisy
machine moves all rows together. Target from the training-loop issue: IBP <= 2.5x plain.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from trainables.config import load_config
from trainables.models import build_model
from trainables.training.optim import build_optimizer
from trainables.training.step import TrainingStep

EPS = 2 / 255
ATTACK_FACTOR = {"method.attack_eps_factor": 2.1}  # a setting of the attacking methods only
METHODS = {
    "plain (standard)": {"method.name": "standard"},
    "IBP": {"method.name": "ibp"},
    "CROWN-IBP (bound weight 0.5)": {
        "method.name": "crown-ibp",
        "method.crown_bound_weight_start": 0.5,
        "method.crown_bound_weight_end": 0.5,
    },
    "CC-IBP (PGD-8)": {"method.name": "cc-ibp", "method.alpha": 0.01, **ATTACK_FACTOR},
    "MTL-IBP (PGD-8)": {"method.name": "mtl-ibp", "method.alpha": 0.004, **ATTACK_FACTOR},
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="steps per method per round")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.rand(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    model = build_model("cnn7", (3, 32, 32), 10).to(device).train()
    steps = {}
    for label, overrides in METHODS.items():
        config = load_config(
            {
                "eps": EPS,
                "attack.steps": 8,
                "warmup.weight": 0.0,
                **overrides,
            }
        )
        optimizer = build_optimizer(model.parameters(), config.optim)
        step = TrainingStep(model, model, config, 10, torch.Generator().manual_seed(0))
        steps[label] = (step, optimizer)

    def train_step(step: TrainingStep, optimizer: torch.optim.Optimizer) -> None:
        out = step(x, y, EPS)
        optimizer.zero_grad(set_to_none=True)
        out.total.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()

    times: dict[str, list[float]] = {label: [] for label in steps}
    for step, optimizer in steps.values():
        train_step(step, optimizer)  # warm-up
    for round_index in range(args.rounds):
        for label, (step, optimizer) in steps.items():
            _sync(device)
            start = time.perf_counter()
            for _ in range(args.steps):
                train_step(step, optimizer)
            _sync(device)
            times[label].append((time.perf_counter() - start) / args.steps)
        print(f"round {round_index + 1}/{args.rounds} done", flush=True)
    plain = statistics.median(times["plain (standard)"])
    print(
        f"\nCNN7 3x32x32, batch {args.batch}, eps {EPS:.5f}, device {device}, "
        f"torch threads {torch.get_num_threads()}, median of {args.rounds} rounds"
    )
    print("| step | seconds | ratio to plain | examples / s |\n|---|---|---|---|")
    for label, values in times.items():
        seconds = statistics.median(values)
        print(f"| {label} | {seconds:.4f} | {seconds / plain:.2f} | {args.batch / seconds:.1f} |")


if __name__ == "__main__":
    main()
