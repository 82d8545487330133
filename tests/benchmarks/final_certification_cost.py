"""Benchmark (not a test): what the ready MNIST / CIFAR-10 / TinyImageNet configs' certificates
cost.

    python tests/benchmarks/final_certification_cost.py [--device cuda] [--batch 32]

For each ready config's network (CNN7 on MNIST 1x28x28 and CIFAR-10 3x32x32 with 10
classes, CNN7-TIN on 3x64x64 with 200 classes) this times, per image, a forward pass, one
IBP training step (forward, bounds, backward, Adam step) and each registry verifier the
config uses (through the registry's own ``certify``), round-robin in one process, medians
over the rounds. The cascades are timed in their worst case: the labels are the network's
own predictions (no sample is skipped as misclassified) and, the network being untrained,
IBP certifies nothing, so every sample reaches every stage. It then prints each config's
certification time per trial, the final certificate (``eval.final_subset`` images with
``eval.final_verifier``) and the per-epoch one (``eval.subset`` images with ``eval.verifier``
each ``eval.every`` epochs, and at the end), read from ``sweeps/configs/*.yaml``, in minutes
of this device and in epochs of IBP training on it (the train split less ``val_size``):
the second figure carries over to another device where the first does not. An IBP step is
the cheapest certified step (CC/MTL-IBP add a PGD attack), so the epochs are an upper bound.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch
import yaml

from trainables.certify.verifiers import make_verifier
from trainables.config import load_config
from trainables.models import build_model
from trainables.training.optim import build_optimizer
from trainables.training.step import TrainingStep

CONFIGS = Path(__file__).parents[2] / "sweeps" / "configs"
TRAIN_IMAGES = {"mnist": 60_000, "cifar10": 50_000, "tinyimagenet": 100_000}
NETWORKS = {  # dataset -> (model, input shape, classes)
    "mnist": ("cnn7", (1, 28, 28), 10),
    "cifar10": ("cnn7", (3, 32, 32), 10),
    "tinyimagenet": ("cnn7_tin", (3, 64, 64), 200),
}


def per_image_seconds(
    dataset: str, eps: float, verifiers: set[str], batch: int, device: str, rounds: int
) -> dict[str, float]:
    """Median seconds per image over ``rounds`` round-robin rounds (a warm-up first)."""
    name, shape, classes = NETWORKS[dataset]
    torch.manual_seed(0)
    model = build_model(name, shape, classes).to(device)
    x = torch.rand(batch, *shape, device=device)
    with torch.no_grad():
        y = model.eval()(x).argmax(dim=1)  # every sample "correct": the cascade skips none
    config = load_config({"eps": eps, "method.name": "ibp", "warmup.weight": 0.0})
    student = copy.deepcopy(model).train()  # trained apart: the verifiers see fixed weights
    step = TrainingStep(student, student, config, classes, torch.Generator().manual_seed(0))
    optimizer = build_optimizer(student.parameters(), config.optim)

    def train_step() -> None:
        loss = step(x, y, eps).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def forward() -> None:
        with torch.no_grad():
            model(x)

    tasks = {"forward": forward, "ibp train step": train_step}
    for name in sorted(verifiers | {"ibp"}):
        verifier = make_verifier(name)
        tasks[name] = lambda v=verifier: v.certify(model, x, y, eps)
    times: dict[str, list[float]] = {task: [] for task in tasks}
    for round_ in range(rounds + 1):
        for task, run in tasks.items():
            _sync(device)
            started = time.perf_counter()
            run()
            _sync(device)
            if round_:  # round 0 warms up
                times[task].append((time.perf_counter() - started) / batch)
    return {task: statistics.median(values) for task, values in times.items()}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="+", help="config names (default: every ready one)")
    args = parser.parse_args()
    print(f"device {args.device}, {torch.get_num_threads()} threads, batch {args.batch}")
    for path in sorted(CONFIGS.glob("*.yaml")):
        training = yaml.safe_load(path.read_text())["training"]
        dataset = training.get("dataset.name")
        if dataset not in NETWORKS or (args.only and path.stem not in args.only):
            continue
        eps = float(training["eps"])
        final, during = training["eval.final_verifier"], training["eval.verifier"]
        seconds = per_image_seconds(
            dataset, eps, {final, during}, args.batch, args.device, args.rounds
        )
        per_image = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in seconds.items())
        print(f"\n{path.name} ({dataset}, eps {eps:.4g}), per image: {per_image}")
        train_images = TRAIN_IMAGES[dataset] * (1 - training.get("dataset.val_size", 0.1))
        epoch = train_images * seconds["ibp train step"]
        epochs, every = training["epochs"], training.get("eval.every", 1)
        evaluations = epochs // every + (epochs % every > 0)  # the last epoch always
        final_seconds = training["eval.final_subset"] * seconds[final]
        during_seconds = evaluations * training["eval.subset"] * seconds[during]
        print(
            f"  final: {training['eval.final_subset']} x {final} = {final_seconds / 60:.0f} min"
            f" ({final_seconds / epoch:.2f} IBP training epochs);"
            f" during: {evaluations} x {training['eval.subset']} x {during} ="
            f" {during_seconds / 60:.0f} min ({during_seconds / epoch:.2f} epochs);"
            f" training: {epochs} epochs"
        )


if __name__ == "__main__":
    main()
