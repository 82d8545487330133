"""Benchmark (not a test): what the sweep machinery costs, and what the search buys.

    python tests/benchmarks/bench_sweeps.py [--trials 16] [--seeds 3] [--overhead-trials 40]
        [--epochs N] [--cpus 2] [--parts overhead,utilisation,search]

(a) overhead: ``--overhead-trials`` trivial trials (1 epoch of an MLP on 30 synthetic 4x4
    images, IBP evaluation) one at a time through ``run_sweep`` (Tune trial, Optuna, the
    certsweep trainable with its checkpoints, the Parquet sink), against the same configs
    through the training loop in a plain Python loop (one torch thread, like a 1-CPU trial).
    The difference per trial is the machinery's cost; target <= 2 s per single-worker trial.
(b) utilisation: for every demo sweep of (c), the sum of the trials' ``wall_time_s`` (Parquet)
    over (the sweep's wall time x its concurrent slots); target >= 90 %. Time a trial spends
    outside its trainable (actor start, scheduling, the tail where fewer trials than slots
    remain) counts as lost, and so does the sweep's one-off start-up (Tuner, first actors,
    about 10 s here): the same share within the span of the trials is printed too.
(c) search: the demo sweep (``--trials`` trials, ``--epochs`` epochs, default the demo's own)
    with TPE and with random search, ``--seeds`` seeds each; hypervolume of the val clean vs
    val certified accuracy front, reference (0, 0), after the first N completed trials (in
    completion order). Optuna's TPE samples its first 10 trials at random (n_startup_trials),
    so the curves can only part after N = 10.

Ray runs locally with ``--cpus`` CPUs; Tune's progress output goes to ``<workdir>/sweeps.log``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray
import torch
import yaml

from analysis.pareto import hypervolume_progress
from sweeps import CONFIGS_DIR
from sweeps.config import SweepConfig, load_sweep
from sweeps.driver import max_concurrent, run_sweep
from trainables.results import read_trials
from trainables.training.loop import train

PRESET_KEYS = (
    "eps_schedule.start",
    "eps_schedule.length",
    "optim.decay",
    "optim.name",
    "method.l1",
    "warmup.weight",
    "method.train_eps_factor",
    "method.name",
    "method.alpha",
    "method.sabr_lambda",
    "method.crown_bound_weight_end",
    "method.clean_loss_weight_start",
    "method.clean_loss_weight_end",
    "attack.steps",
    "attack.step_size",
    "method.attack_eps_factor",
)
TRIVIAL = {
    "name": "trivial",
    "training": {
        "dataset.name": "synthetic",
        "dataset.options": {"size": 30, "num_classes": 2, "input_shape": [1, 4, 4]},
        "model.name": "mlp",
        "epochs": 1,
        "batch_size": 32,
        "method.name": "standard",
        "eval.verifier": "ibp",
        "eval.pgd_steps": 0,
        "eval.final_verifier": "ibp",
    },
    # Only the learning rate is searched: the certified preset minus every other key.
    "space": {"preset": "certified", "overrides": dict.fromkeys(PRESET_KEYS)},
    "max_concurrent": 1,
}


def sweep_from(raw: dict[str, Any], workdir: Path, **changes: Any) -> SweepConfig:
    """A validated sweep: ``raw`` with top-level ``changes``, stored under ``workdir``."""
    name = f"{raw['name']}-{len(list(workdir.glob('*.yaml')))}"
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**raw, **changes, "storage": str(workdir / name)}))
    return load_sweep(path)


def timed_sweep(sweep: SweepConfig, log: Path) -> float:
    """Run the sweep with its printed output appended to ``log``; returns its wall time."""
    with log.open("a") as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        start = time.perf_counter()
        run_sweep(sweep)
        return time.perf_counter() - start


def overhead(trials: int, workdir: Path) -> None:
    sweep = sweep_from(TRIVIAL, workdir, num_trials=trials)
    sweep_s = timed_sweep(sweep, workdir / "sweeps.log")
    rows = read_trials(sweep.storage, sweep.name)
    torch.set_num_threads(1)
    start = time.perf_counter()
    for config_json in rows["config_json"]:
        train(sweep.training_config(json.loads(config_json)))
    loop_s = time.perf_counter() - start
    # Steady state: trials run one at a time, so consecutive rows are written one trial apart.
    written = rows["written_at"].sort_values()
    steady = (written.iloc[-1] - written.iloc[0]).total_seconds() / (len(rows) - 1)
    per_sweep, per_loop = sweep_s / len(rows), loop_s / len(rows)
    extra = steady - per_loop
    verdict = "ok" if extra <= 2 else "ABOVE TARGET"
    print(f"(a) per-trial overhead, {len(rows)} trivial trials, one at a time")
    print(f"    sweep, steady state:  {steady:6.2f} s per trial (between rows written)")
    print(f"    sweep, whole run:     {per_sweep:6.2f} s per trial ({sweep_s:.1f} s with start-up)")
    print(f"    inside the trainable: {rows['wall_time_s'].mean():6.2f} s per trial (wall_time_s)")
    print(f"    plain loop (train):   {per_loop:6.2f} s per trial ({loop_s:.1f} s in all)")
    print(f"    overhead:             {extra:6.2f} s per trial (target <= 2 s: {verdict})")


def utilisation_text(rows: pd.DataFrame, wall_s: float, slots: int) -> str:
    """Busy share of the slots over the sweep's wall time, and over the span from the first
    trial's start to the last one's end (which leaves out the sweep's one-off start-up)."""
    busy = rows["wall_time_s"].sum()
    starts = rows["written_at"] - pd.to_timedelta(rows["wall_time_s"], unit="s")
    span_s = (rows["written_at"].max() - starts.min()).total_seconds()
    return (
        f"utilisation {busy / (wall_s * slots):5.1%} of {slots} slots (target >= 90%),"
        f" {busy / (span_s * slots):5.1%} within the trials' {span_s:.0f} s"
    )


def search(trials: int, seeds: int, epochs: int | None, workdir: Path, utilisation: bool) -> None:
    demo = yaml.safe_load((CONFIGS_DIR / "demo.yaml").read_text())
    if epochs is not None:
        demo["training"]["epochs"] = epochs
    curves: dict[str, list[np.ndarray]] = {"tpe": [], "random": []}
    print(f"(c) demo sweeps: {trials} trials of {demo['training']['epochs']} epochs")
    for seed in range(seeds):
        for sampler, runs in curves.items():
            sweep = sweep_from(
                demo, workdir, num_trials=trials, sampler={"name": sampler, "seed": seed}
            )
            wall_s = timed_sweep(sweep, workdir / "sweeps.log")
            rows = read_trials(sweep.storage, sweep.name).sort_values("written_at")
            objectives = [o.metric for o in sweep.objectives]
            values = rows[objectives].where(rows["status"] == "completed")
            directions = ["maximize" if o.mode == "max" else "minimize" for o in sweep.objectives]
            runs.append(hypervolume_progress(values, objectives, directions, [0.0, 0.0]))
            line = f"    {sampler:6s} seed {seed}: {len(rows)} trials in {wall_s:5.1f} s"
            if utilisation:
                line += ", " + utilisation_text(rows, wall_s, max_concurrent(sweep))
            print(line + f", final hypervolume {runs[-1][-1]:.4f}", flush=True)
    shown = sorted({n for n in (1, 5, 10, 15, 20, 30, 50, trials) if n <= trials})
    print("    hypervolume after N completed trials (mean over seeds; each seed)")
    for n in shown:
        cells = []
        for sampler, runs in curves.items():
            at_n = [float(run[min(n, len(run)) - 1]) for run in runs]
            each = " ".join(f"{v:.3f}" for v in at_n)
            cells.append(f"{sampler} {statistics.mean(at_n):.3f} ({each})")
        print(f"    N={n:3d}  " + "   ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=16, help="trials per demo sweep")
    parser.add_argument("--seeds", type=int, default=3, help="sampler seeds per search method")
    parser.add_argument("--overhead-trials", type=int, default=40)
    parser.add_argument("--epochs", type=int, help="demo epochs (default: the demo's)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--parts", default="overhead,utilisation,search")
    parser.add_argument("--workdir", type=Path, help="keep results here (default: temporary)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    for name in ("ray", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        workdir.mkdir(parents=True, exist_ok=True)
        if "overhead" in parts:
            overhead(args.overhead_trials, workdir)
        if parts & {"utilisation", "search"}:
            search(args.trials, args.seeds, args.epochs, workdir, "utilisation" in parts)
    ray.shutdown()


if __name__ == "__main__":
    main()
