"""Command line for one training run without Ray.

    python -m trainables.train --config FILE [--set key=value ...] [--out DIR]

``--set`` takes dotted keys (``optim.lr=1e-3``, ``method.name=ibp``); values are read as
YAML (``1e-3``, ``true``, ``[10, 20]``). Bad input (a key, a value, a file, a device this
machine lacks, missing data, an unknown teacher) ends in one message and exit code 2, before
anything trains. Without ``checkpoint.dir`` the checkpoints go to a
fresh directory under ``runs/``. A recipe teacher (``teacher.name``) not yet in the cache is
trained first. Prints a progress bar, a metrics table per evaluated epoch and at the end the
final metrics and the checkpoint path.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from trainables.cli import HelpFormatter, add_set_option, parse_set
from trainables.training.callbacks import RunInfo, TrainingCallback

if TYPE_CHECKING:  # the loop, the config and the data load in main(): --help stays light
    from trainables.config import TrainConfig
    from trainables.training.loop import RunResult

#: Columns of the per-epoch table (those present are shown).
EPOCH_COLUMNS = ("epoch", "eps", "loss", "train_clean_acc", "seconds", "examples_per_second")


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["optim.lr=1e-3"]`` -> ``{"optim.lr": 0.001}`` (``trainables.cli.parse_set``)."""
    from trainables.config import ConfigError

    return parse_set(pairs, ConfigError)


class ProgressPrinter(TrainingCallback):
    """A tqdm bar over batches and one table row per epoch (rank 0 only)."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def on_train_begin(self, info: RunInfo) -> None:
        if info.is_main:
            total = info.epochs * info.batches_per_epoch
            self.bar = tqdm(total=total, initial=info.start_epoch * info.batches_per_epoch)
            self.bar.set_description("training")

    def on_batch_end(self, epoch: int, step: int, terms: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(epoch=epoch + 1, loss=f"{terms['loss']:.4f}", refresh=False)

    def on_epoch_end(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        if self.bar is not None:
            shown = {k: v for k, v in metrics.items() if k in EPOCH_COLUMNS or "_acc" in k}
            self.bar.write("  ".join(f"{k}={_fmt(v)}" for k, v in shown.items()))

    def on_train_end(self, result: RunResult) -> None:
        if self.bar is not None:
            self.bar.close()


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_table(rows: dict[str, Any]) -> str:
    width = max(map(len, rows), default=0)
    return "\n".join(f"  {key:<{width}}  {_fmt(value)}" for key, value in rows.items())


def summary(result: RunResult) -> str:
    """The final report: status, last epoch's validation metrics, final metrics, checkpoint."""
    lines = [f"status: {result.status} after {result.epochs_completed} epoch(s)"]
    if result.diverged_epoch is not None:
        lines.append(f"the loss became non-finite in epoch {result.diverged_epoch}")
    if result.history:
        last = result.history[-1]
        lines += ["last epoch:", format_table({k: v for k, v in last.items() if "acc" in k})]
    if result.final:
        lines += ["final evaluation:", format_table(result.final)]
    lines.append(f"checkpoint: {result.checkpoint or '(none written)'}")
    return "\n".join(lines)


def _with_default_checkpoint_dir(config: TrainConfig, out: str | None) -> TrainConfig:
    if out is not None:
        return config.model_copy(
            update={"checkpoint": config.checkpoint.model_copy(update={"dir": out})}
        )
    if config.checkpoint.dir is not None:
        return config
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"runs/{stamp}-{config.dataset.name}-{config.method.name}-seed{config.seed}"
    return config.model_copy(
        update={"checkpoint": config.checkpoint.model_copy(update={"dir": name})}
    )


def build_parser(prog: str = "python -m trainables.train") -> argparse.ArgumentParser:
    """The command line's parser (imports nothing heavy)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__.split("\n")[0], formatter_class=HelpFormatter
    )
    parser.add_argument("--config", help="YAML training config (default: all defaults)")
    add_set_option(parser, "a training-config key")
    parser.add_argument("--out", help="checkpoint directory (overrides checkpoint.dir)")
    parser.add_argument(
        "--show-config", action="store_true", help="print the resolved config and exit"
    )
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m trainables.train") -> int:
    args = build_parser(prog).parse_args(argv)
    import yaml

    from trainables.checkpoints import CheckpointError
    from trainables.config import ConfigError, load_config
    from trainables.data import DatasetNotFoundError
    from trainables.preflight import preflight
    from trainables.teachers import TeacherError
    from trainables.training.loop import train
    from trainables.training.teacher_cache import ensure_teacher

    try:
        config = load_config(args.config, parse_overrides(args.set))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    config = _with_default_checkpoint_dir(config, args.out)
    if args.show_config:
        print(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
        return 0
    problems = preflight(config)
    if problems:
        where = args.config or "the config"
        print("\n  ".join([f"error: cannot run {where} here:", *problems]), file=sys.stderr)
        return 2
    try:
        if ensure_teacher(config, [ProgressPrinter()]) is not None:
            print(f"teacher {config.teacher.name!r} is ready")
        result = train(config, [ProgressPrinter()])
    except (ConfigError, DatasetNotFoundError, CheckpointError, TeacherError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary(result))
    return 0 if result.status == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
