"""Evidence (not a test): does distillation help CC-IBP on digits? Paired by seed.

    python tests/benchmarks/distill_evidence.py [--seeds 0 1 2 3 4] [--cache-dir DIR]
    python tests/benchmarks/distill_evidence.py --sweeps [--sampler-seeds 0 1 2]

Runs mode (default): students train with ``trainables/configs/digits.yaml`` (cnn_small, 20
epochs) with CC-IBP at ``alpha`` 0.01 and 0.5 and eps 0.1 and 0.05, each with no teacher,
feature distillation (CC-Dist), logit distillation (KL on x_adv) and logit distillation +
SAAD (entropy weights), on the same seeds: a seed fixes the data split, the initialisation
and the attacks' random starts, so the variants of one seed differ only by the teacher's
terms. The teacher is the built-in ``pgd-at-digits`` recipe (PGD-AT at eps 0.1, trained
once into the teacher cache, seed 0), used for both student eps. Every distillation knob
keeps its default (beta 1, squared L2 on the penultimate features, KL at temperature 1,
SAAD entropy weights with s = 5, the step's attack): nothing was tuned, on validation or
test. Standard training (no certified loss) gives the clean reference. Reported: clean and
CROWN-certified accuracy on the digits test split (360 images) per cell, mean +- sample
standard deviation over seeds, and per variant the paired difference to no teacher (mean
+- std, seeds better / worse, two-sided paired t-test p-value). One torch thread.

Sweeps mode (``--sweeps``): the demo sweep (``sweeps/configs/demo.yaml``) with the teacher
searched as shipped vs fixed to none, the same trial budget, for each sampler seed; prints
each sweep's test-split hypervolume (clean x CROWN-certified accuracy, reference 0).
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch
import yaml
from scipy.stats import ttest_rel

from trainables.config import load_config
from trainables.training.loop import train
from trainables.training.teacher_cache import ensure_teacher

ROOT = Path(__file__).parents[2]
CONFIG = ROOT / "trainables" / "configs" / "digits.yaml"
DEMO = ROOT / "sweeps" / "configs" / "demo.yaml"

TEACHER = {"teacher.name": "pgd-at-digits"}
VARIANTS: dict[str, dict[str, Any]] = {
    "no teacher": {},
    "feature distillation": {**TEACHER, "distill.objective": "feature"},
    "logit distillation": {**TEACHER, "distill.objective": "logit", "distill.inputs": "adv"},
    "logit distillation + SAAD": {
        **TEACHER,
        "distill.objective": "logit",
        "distill.inputs": "adv",
        "saad.enabled": True,
    },
}
ALPHAS = (0.01, 0.5)
EPS = (0.1, 0.05)
METRICS = {"test_clean_acc": "clean", "test_cert_acc": "CROWN cert"}
#: Only the final test evaluation: clean accuracy and the CROWN certificate.
EVAL = {
    "eval.every": 1000,
    "eval.verifier": "ibp",
    "eval.pgd_steps": 0,
    "eval.final_verifier": "crown",
}


def _spread(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} +- {spread:.3f}"


def runs(seeds: list[int], cache_dir: str | None) -> None:
    common = {**EVAL, "teacher.cache_dir": cache_dir}
    started = time.perf_counter()
    ensure_teacher(load_config(CONFIG, {**common, **TEACHER}))
    print(f"teacher ready after {time.perf_counter() - started:.0f} s", flush=True)
    standard = []
    for seed in seeds:
        result = train(load_config(CONFIG, {**common, "method.name": "standard", "seed": seed}))
        standard.append(result.final["test_clean_acc"])
    print(f"standard training, test clean: {_spread(standard)} ({standard})", flush=True)
    finals: dict[tuple[float, float, str], dict[int, dict[str, float]]] = {}
    for eps, alpha, (label, overrides) in itertools.product(EPS, ALPHAS, VARIANTS.items()):
        for seed in seeds:
            settings = {**common, **overrides, "eps": eps, "method.alpha": alpha, "seed": seed}
            run_started = time.perf_counter()
            final = train(load_config(CONFIG, settings)).final
            finals.setdefault((eps, alpha, label), {})[seed] = final
            shown = " ".join(f"{name}={final[key]:.3f}" for key, name in METRICS.items())
            seconds = time.perf_counter() - run_started
            print(f"eps {eps} alpha {alpha} {label} seed {seed}: {shown} ({seconds:.0f} s)")
            sys.stdout.flush()
    print(f"\nstandard training (no certified loss), test clean: {_spread(standard)}")
    print(
        "\n| eps | alpha | variant | test clean | test CROWN cert | paired diff clean"
        " (better/worse, p) | paired diff cert (better/worse, p) |"
    )
    print("|---|---|---|---|---|---|---|")
    for (eps, alpha, label), by_seed in finals.items():
        base = finals[(eps, alpha, "no teacher")]
        cells = [_spread([by_seed[s][key] for s in seeds]) for key in METRICS]
        for key in METRICS:
            if label == "no teacher":
                cells.append("")
                continue
            diffs = [by_seed[s][key] - base[s][key] for s in seeds]
            better, worse = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
            pair = ttest_rel([by_seed[s][key] for s in seeds], [base[s][key] for s in seeds])
            p = "n/a" if pair.pvalue != pair.pvalue else f"{pair.pvalue:.2f}"  # NaN: no spread
            cells.append(f"{_spread(diffs)} ({better}/{worse}, p={p})")
        print(f"| {eps} | {alpha} | {label} | {' | '.join(cells)} |")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


def sweeps(sampler_seeds: list[int], storage: str | None, num_cpus: int | None) -> None:
    """The demo sweep with the teacher searched vs fixed to none (same budget, per seed)."""
    import analysis

    root = Path(storage or tempfile.mkdtemp(prefix="distill-evidence-"))
    root.mkdir(parents=True, exist_ok=True)
    demo = yaml.safe_load(DEMO.read_text())
    teacher_choices = demo["space"]["overrides"]["teacher.name"]
    rows = []
    for seed, searched in itertools.product(sampler_seeds, (True, False)):
        sweep = dict(demo, sampler={**demo["sampler"], "seed": seed})
        sweep["name"] = f"demo-{'teacher' if searched else 'none'}-s{seed}"
        sweep["space"] = dict(demo["space"], overrides=dict(demo["space"]["overrides"]))
        if not searched:
            sweep["space"]["overrides"]["teacher.name"] = {
                "type": "categorical",
                "choices": ["none"],
            }
        else:
            sweep["space"]["overrides"]["teacher.name"] = teacher_choices
        path = root / f"{sweep['name']}.yaml"
        path.write_text(yaml.safe_dump(sweep, sort_keys=False))
        command = [sys.executable, "-m", "sweeps", "run", str(path), "--storage", str(root)]
        if num_cpus:
            command += ["--num-cpus", str(num_cpus)]
        subprocess.run(command, check=True)
        trials = analysis.load(str(root / sweep["name"]))
        volume = analysis.hypervolume(
            trials, ["test_clean_acc", "test_cert_acc"], ["maximize", "maximize"]
        )
        rows.append((seed, searched, volume, len(trials)))
        print(f"{sweep['name']}: test hypervolume {volume:.4f} ({len(trials)} trials)", flush=True)
    print("\n| sampler seed | teacher searched | teacher none | difference |")
    print("|---|---|---|---|")
    for seed in sampler_seeds:
        with_teacher = next(v for s, t, v, _ in rows if s == seed and t)
        without = next(v for s, t, v, _ in rows if s == seed and not t)
        print(f"| {seed} | {with_teacher:.4f} | {without:.4f} | {with_teacher - without:+.4f} |")
    print(f"\nresults under {root}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--cache-dir", help="teacher cache (default: the config's default)")
    parser.add_argument("--sweeps", action="store_true", help="the sweep-level comparison")
    parser.add_argument("--sampler-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--storage", help="--sweeps: results root (default: a temp folder)")
    parser.add_argument("--num-cpus", type=int, help="--sweeps: CPUs of the local Ray")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.sweeps:
        sweeps(args.sampler_seeds, args.storage, args.num_cpus)
    else:
        runs(args.seeds, args.cache_dir)


if __name__ == "__main__":
    main()
