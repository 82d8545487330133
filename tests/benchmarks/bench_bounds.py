"""Benchmark (not a test): bound propagation cost on CNN7 at 3x32x32, as ratios to a forward pass.

    python tests/benchmarks/bench_bounds.py [--device cuda] [--full-crown]

Everything is measured in one run on the same model and inputs, so the ratios are
comparable even on a noisy machine. Each measurement runs in a fresh subprocess so that its
memory peak (CPU: max RSS growth; GPU: torch.cuda.max_memory_allocated) is its own.

Full CROWN at batch 8: by default one backward chunk is timed per ReLU layer and the total
is projected from the measured unstable-neuron counts (printed as a projection); with
``--full-crown`` the whole computation runs (projected at about 3 hours on 2 CPU cores for
a randomly initialised CNN7, whose neurons are nearly all unstable; meant for a GPU).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

import torch

EPS = 2 / 255


def _setup(device: str, batch: int):
    from trainables.models import build_model

    torch.manual_seed(0)
    model = build_model("cnn7", (3, 32, 32), 10).to(device).eval()
    x = torch.rand(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    return model, x, y


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device: str, repeats: int) -> float:
    fn()  # warm-up
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeats


def _measure(task: str, device: str, batch: int, repeats: int, queue) -> None:
    """Run one measurement in this (fresh) process; put (seconds, peak bytes, extra)."""
    from trainables.bounds import compute_bounds, margin_spec

    model, x, y = _setup(device, batch)
    lower, upper = (x - EPS).clamp(0, 1), (x + EPS).clamp(0, 1)
    C = margin_spec(y, 10)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    extra = None
    with torch.no_grad():
        if task == "forward":
            seconds = _timed(lambda: model(x), device, repeats)
        elif task in ("ibp", "crown-ibp", "crown"):
            seconds = _timed(lambda: compute_bounds(model, lower, upper, task, C), device, repeats)
        else:  # "crown-projection"
            seconds, extra = _project_full_crown(model, lower, upper)
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base_rss
    queue.put((seconds, peak, extra))


def _project_full_crown(model, lower, upper):
    """Time one chunk per ReLU layer; project the total from the unstable counts."""
    from trainables.bounds.interval import propagate_intervals
    from trainables.bounds.linear import (
        DEFAULT_CHUNK_ELEMENTS,
        ReLURelaxation,
        _ibp_is_exact,
        two_sided,
    )
    from trainables.bounds.ops import ReLUOp, linearize

    ops, _ = linearize(model, (lower + upper) / 2)
    _, relu_bounds = propagate_intervals(ops, lower, upper)
    relaxations = [ReLURelaxation.from_bounds(*b) for b in relu_bounds]
    positions = [i for i, op in enumerate(ops) if isinstance(op, ReLUOp)]
    centre, radius = (upper + lower) / 2, (upper - lower) / 2
    batch = lower.shape[0]
    total, rows_report = 0.0, []
    for k, position in enumerate(positions):
        low, high = relu_bounds[k]
        unstable = int(((low < 0) & (high > 0)).flatten(1).any(0).sum())
        if _ibp_is_exact(ops[:position]) or unstable == 0:
            rows_report.append((k + 1, unstable, 0.0, "IBP exact" if unstable else "stable"))
            continue
        shape = low.shape[1:]
        rows = max(1, DEFAULT_CHUNK_ELEMENTS // (2 * batch * 64 * 32 * 32))
        rows = min(rows, unstable)
        A = low.new_zeros(batch, rows, shape.numel())
        A[:, torch.arange(rows), torch.arange(rows)] = 1.0
        start = time.perf_counter()
        two_sided(ops[:position], A.reshape(batch, rows, *shape), relaxations[:k], centre, radius)
        chunk = time.perf_counter() - start
        layer_total = chunk * unstable / rows
        total += layer_total
        rows_report.append((k + 1, unstable, layer_total, f"{rows} neurons/chunk: {chunk:.2f} s"))
    return total, rows_report


def run(task: str, device: str, batch: int, repeats: int):
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_measure, args=(task, device, batch, repeats, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--full-crown", action="store_true", help="run full CROWN in full")
    args = parser.parse_args()
    print(f"CNN7 (width 64, linear 512) at 3x32x32, eps {EPS:.4f}, device {args.device}")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    forward, forward_mem, _ = run("forward", args.device, 32, args.repeats)
    print(f"{'measurement':<34}{'seconds':>10}{'x forward':>11}{'peak MiB':>10}")
    print(f"{'forward, batch 32':<34}{forward:>10.4f}{1.0:>11.2f}{forward_mem / 2**20:>10.1f}")
    for method in ("ibp", "crown-ibp"):
        seconds, peak, _ = run(method, args.device, 32, args.repeats)
        ratio = seconds / forward
        print(f"{method + ', batch 32':<34}{seconds:>10.4f}{ratio:>11.2f}{peak / 2**20:>10.1f}")
    forward8, _, _ = run("forward", args.device, 8, args.repeats)
    if args.full_crown:
        seconds, peak, _ = run("crown", args.device, 8, 1)
        label = "full CROWN, batch 8"
    else:
        seconds, peak, layers = run("crown-projection", args.device, 8, 1)
        label = "full CROWN, batch 8 (PROJECTED)"
        for layer, unstable, layer_seconds, note in layers:
            print(f"    ReLU layer {layer}: {unstable} unstable, {layer_seconds:8.1f} s ({note})")
    print(f"{label:<34}{seconds:>10.1f}{seconds / forward8:>11.0f}{peak / 2**20:>10.1f}")


if __name__ == "__main__":
    main()
