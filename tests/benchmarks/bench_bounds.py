"""Benchmark (not a test): bound propagation cost on CNN7 at 3x32x32, side by side in one run.

    python tests/benchmarks/bench_bounds.py [--device cuda] [--repeats 5] [--full-crown]
        [--only half|full]

Two tables, every measurement on the same inputs (seeded, eps 2/255), each in a fresh
subprocess so that its memory peak (CPU: max RSS growth; GPU: max_memory_allocated) is its
own:

1. Half-width CNN7 with BatchNorm (channels 16-16-32-32-32, linear 128), batch 8: forward,
   IBP, CROWN-IBP, full CROWN and alpha-CROWN (20 iterations, output slopes only: the
   intermediate slopes of a CNN7 do not fit in memory), as seconds and ratios to IBP.
2. Full-width CNN7 (64-64-128-128-128, linear 512): forward, IBP and CROWN-IBP at batch 32;
   full CROWN at batch 8, projected from one timed chunk per ReLU layer and the exact
   number of backward-pass units of that layer (printed as a projection); ``--full-crown``
   runs it in full instead.

Randomly initialised networks: nearly every neuron is unstable, the worst case for CROWN.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

import torch

EPS = 2 / 255
HALF = {"width": 16, "linear_size": 128}


def _setup(device: str, batch: int, options: dict):
    from trainables.models import build_model

    torch.manual_seed(0)
    model = build_model("cnn7", (3, 32, 32), 10, **options).to(device).eval()
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


def _measure(task: str, device: str, batch: int, repeats: int, options: dict, queue) -> None:
    """Run one measurement in this (fresh) process; put (seconds, peak bytes, extra)."""
    from trainables.bounds import compute_bounds, margin_spec

    model, x, y = _setup(device, batch, options)
    lower, upper = (x - EPS).clamp(0, 1), (x + EPS).clamp(0, 1)
    C = margin_spec(y, 10)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    extra = None
    with torch.no_grad():
        if task == "forward":
            seconds = _timed(lambda: model(x), device, repeats)
        elif task in ("ibp", "crown-ibp"):
            seconds = _timed(lambda: compute_bounds(model, lower, upper, task, C), device, repeats)
        elif task == "crown":  # minutes: one run, no warm-up
            start = time.perf_counter()
            compute_bounds(model, lower, upper, "crown", C)
            _sync(device)
            seconds = time.perf_counter() - start
        elif task == "alpha-crown":
            start = time.perf_counter()
            compute_bounds(model, lower, upper, "alpha-crown", C, alpha_intermediate=False)
            _sync(device)
            seconds = time.perf_counter() - start
        else:  # "crown-projection"
            seconds, extra = _project_full_crown(model, lower, upper)
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base_rss
    queue.put((seconds, peak, extra))


def _project_full_crown(model, lower, upper):
    """Per ReLU layer: time one chunk of backward-pass units, scale by the unit count.

    Uses the same plan (row grouping, chunk size) as ``crown_relu_bounds``; the units are
    exactly those full CROWN computes (the pairs IBP leaves unstable).
    """
    from trainables.bounds import linear
    from trainables.bounds.interval import propagate_intervals
    from trainables.bounds.ops import ReLUOp, linearize

    ops, _ = linearize(model, (lower + upper) / 2)
    ops, lower, upper = linear.prepare(ops, lower, upper)
    _, relu_bounds = propagate_intervals(ops, lower, upper)
    relaxations = [linear.ReLURelaxation.from_bounds(*b) for b in relu_bounds]
    positions = [i for i, op in enumerate(ops) if isinstance(op, ReLUOp)]
    centre, radius = (upper + lower) / 2, (upper - lower) / 2
    total, report = 0.0, []
    for k, position in enumerate(positions):
        low, high = relu_bounds[k]
        unstable = (low < 0) & (high > 0)
        prefix = ops[:position]
        if linear.ibp_is_exact(prefix) or not unstable.any():
            report.append((k + 1, int(unstable.sum()), 0.0, "IBP exact or stable"))
            continue
        convolutional = unstable.dim() == 4
        plan = linear._row_plan(unstable, low) if convolutional else linear._DenseRows(unstable)
        per_unit = plan.rows_per_unit * linear.row_elements(prefix, centre, convolutional)
        units = min(plan.units, max(1, linear.DEFAULT_CHUNK_ELEMENTS // per_unit))
        A, samples = plan.start(slice(0, units), low)
        start = time.perf_counter()
        linear.backward_lower_bound(prefix, A, relaxations[:k], centre, radius, samples)
        chunk = time.perf_counter() - start
        layer_total = chunk * plan.units / units
        total += layer_total
        note = f"{type(plan).__name__}: {units} of {plan.units} units in {chunk:.2f} s"
        report.append((k + 1, int(unstable.sum()), layer_total, note))
    return total, report


def run(task: str, device: str, batch: int, repeats: int, options: dict | None = None):
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(
        target=_measure, args=(task, device, batch, repeats, options or {}, queue)
    )
    process.start()
    result = queue.get()
    process.join()
    return result


def _row(label: str, seconds: float, ratio: float, peak: int) -> str:
    return f"| {label} | {seconds:.4f} | {ratio:.1f} | {peak / 2**20:.0f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--full-crown", action="store_true", help="run full-width CROWN in full")
    parser.add_argument("--only", choices=("half", "full"), help="one of the two tables")
    args = parser.parse_args()
    print(f"eps {EPS:.4f}, device {args.device}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")  # fmt: skip
    if args.only != "full":
        _half_width(args)
    if args.only != "half":
        _full_width(args)


def _half_width(args: argparse.Namespace) -> None:
    print("\nHalf-width CNN7 (16-16-32-32-32, linear 128) with BatchNorm, batch 8")
    print("| measurement | seconds | x IBP | peak MiB |\n|---|---|---|---|")
    ibp, ibp_mem, _ = run("ibp", args.device, 8, args.repeats, HALF)
    forward, forward_mem, _ = run("forward", args.device, 8, args.repeats, HALF)
    print(_row("forward", forward, forward / ibp, forward_mem))
    print(_row("IBP", ibp, 1.0, ibp_mem))
    for task, label in (
        ("crown-ibp", "CROWN-IBP"),
        ("crown", "CROWN (full)"),
        ("alpha-crown", "alpha-CROWN (20 it., output slopes)"),
    ):
        seconds, peak, _ = run(task, args.device, 8, args.repeats, HALF)
        print(_row(label, seconds, seconds / ibp, peak), flush=True)


def _full_width(args: argparse.Namespace) -> None:
    print("\nFull-width CNN7 (64-64-128-128-128, linear 512) with BatchNorm")
    print("| measurement | seconds | x IBP | peak MiB |\n|---|---|---|---|")
    ibp32, ibp32_mem, _ = run("ibp", args.device, 32, args.repeats)
    forward32, forward32_mem, _ = run("forward", args.device, 32, args.repeats)
    crown_ibp32, crown_ibp32_mem, _ = run("crown-ibp", args.device, 32, args.repeats)
    print(_row("forward, batch 32", forward32, forward32 / ibp32, forward32_mem))
    print(_row("IBP, batch 32", ibp32, 1.0, ibp32_mem))
    print(_row("CROWN-IBP, batch 32", crown_ibp32, crown_ibp32 / ibp32, crown_ibp32_mem))
    ibp8, _, _ = run("ibp", args.device, 8, args.repeats)
    if args.full_crown:
        seconds, peak, _ = run("crown", args.device, 8, 1)
        label = "CROWN (full), batch 8"
    else:
        seconds, peak, layers = run("crown-projection", args.device, 8, 1)
        label = "CROWN (full), batch 8, PROJECTED"
        for layer, unstable, layer_seconds, note in layers:
            line = f"|    ReLU layer {layer}: {unstable} unstable | {layer_seconds:.1f} |"
            print(f"{line} | {note} |")
    print(_row(label, seconds, seconds / ibp8, peak))


if __name__ == "__main__":
    main()
