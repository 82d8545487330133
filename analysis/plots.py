"""Figures of a sweep: the front, hypervolume over trials, learning curves, importances.

Every function returns a ``matplotlib.figure.Figure`` built without pyplot: no GUI backend
and no global state is touched (``savefig`` renders with Agg), so the functions are safe in
scripts, servers and notebooks alike (a notebook displays a returned figure).
Fronts with more than two objectives are shown on their first two.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analysis.front import finished, hypervolume_progress, objectives_of, pareto_front
from analysis.importance import MIN_TRIALS, caveat
from analysis.labels import axis_label, certificate_source, describe_trial, key_params
from trainables.results import PARAM_PREFIX

__all__ = [
    "front_figure",
    "hypervolume_figure",
    "importance_figure",
    "learning_curves_figure",
]


def front_figure(
    trials: pd.DataFrame,
    objectives: Sequence[str] | None = None,
    directions: Sequence[str] | None = None,
    *,
    label: int = 3,
    params: Sequence[str] | None = None,
    title: str = "front of the full-budget completed ones",
) -> Figure:
    """Every trial on the first two objectives (axes labelled with their certificates'
    source); the front joined and highlighted, pruned and failed trials marked apart;
    ``label`` front members (its ends and evenly between) annotated with ``params``
    (parameter names; default: method and teacher, then those varying most along the front,
    ``analysis.labels.key_params``)."""
    names = objectives_of(trials, objectives)
    x_name, y_name = names[0], names[1 % len(names)]
    figure = Figure(figsize=(7.5, 5.5), layout="constrained")
    ax = figure.add_subplot()
    done = finished(trials)
    front_mask = pareto_front(trials, names, directions)["on_front"]
    groups = [
        ("completed", done & ~front_mask, {"marker": "o", "color": "tab:blue", "alpha": 0.6}),
        (
            "pruned (low budget)",
            trials["status"].eq("pruned"),
            {"marker": "^", "facecolors": "none", "edgecolors": "grey"},
        ),
        (
            "failed / diverged",
            trials["status"].isin(["failed", "diverged"]),
            {"marker": "x", "color": "black"},
        ),
    ]
    for name, mask, style in groups:
        rows = trials[mask.fillna(False).astype(bool)]
        shown = rows.dropna(subset=[x_name, y_name])
        if len(rows):
            hidden = len(rows) - len(shown)
            note = f", {hidden} without values" if hidden else ""
            ax.scatter(shown[x_name], shown[y_name], label=f"{name} ({len(rows)}{note})", **style)
    front = trials[front_mask].sort_values([x_name, y_name])
    if len(front):
        ax.plot(front[x_name], front[y_name], "-", color="tab:red", alpha=0.6, zorder=2)
        ax.scatter(
            front[x_name],
            front[y_name],
            marker="*",
            s=160,
            color="tab:red",
            edgecolors="black",
            zorder=3,
            label=f"Pareto front ({len(front)})",
        )
        shown = key_params(front) if params is None else [PARAM_PREFIX + p for p in params]
        picks = np.unique(np.linspace(0, len(front) - 1, min(label, len(front))).round())
        middle = [_middle(trials[x_name]), _middle(trials[y_name])]
        for k, i in enumerate(picks.astype(int)):
            row = front.iloc[i]
            # labels point into the plot, not off its edges
            right, up = row[x_name] <= middle[0], row[y_name] <= middle[1]
            rise = 10 + 14 * (k % 2)
            ax.annotate(
                describe_trial(row, shown),
                (row[x_name], row[y_name]),
                xytext=(8 if right else -8, rise if up else -rise - 8),
                textcoords="offset points",
                ha="left" if right else "right",
                fontsize=8,
                bbox={"boxstyle": "round", "fc": "white", "alpha": 0.8},
            )
    ax.set_xlabel(axis_label(trials, x_name))
    ax.set_ylabel(axis_label(trials, y_name))
    ax.set_title(f"{len(trials)} trials; {title}")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return figure


def _middle(values: pd.Series) -> float:
    """The middle of the values' range (0.5 without values)."""
    shown = values.dropna()
    return float((shown.min() + shown.max()) / 2) if len(shown) else 0.5


def hypervolume_figure(
    trials: pd.DataFrame,
    objectives: Sequence[str] | None = None,
    directions: Sequence[str] | None = None,
    reference: Sequence[float] | None = None,
) -> Figure:
    """The hypervolume after each trial, in the order trials ended: the search's progress."""
    curve = hypervolume_progress(trials, objectives, directions, reference)
    figure = Figure(figsize=(7.5, 4), layout="constrained")
    ax = figure.add_subplot()
    steps = np.arange(1, len(curve) + 1)
    ax.step(steps, curve.to_numpy(), where="post", color="tab:green")
    improved = np.diff(np.concatenate(([0.0], curve.to_numpy()))) > 0
    ax.plot(steps[improved], curve.to_numpy()[improved], "o", color="tab:green", label="improved")
    ref = "0 per objective" if reference is None else str(list(reference))
    final = curve.iloc[-1] if len(curve) else 0.0
    ax.set_title(f"hypervolume over trials (reference {ref}; final {final:.4f})")
    ax.set_xlabel("trials ended")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("hypervolume")
    ax.grid(alpha=0.3)
    if improved.any():
        ax.legend(loc="lower right", fontsize=8)
    return figure


def _measured(epochs: pd.DataFrame, metric: str) -> pd.Series:
    """Epochs where ``metric`` (``<split>_...``) was evaluated rather than carried over."""
    count = f"{metric.split('_', 1)[0]}_n"
    measured = epochs[metric].notna()
    return measured & epochs[count].notna() if count in epochs else measured


def learning_curves_figure(
    trials: pd.DataFrame,
    epochs: pd.DataFrame,
    objectives: Sequence[str] | None = None,
    directions: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
) -> Figure:
    """Per-epoch ``metrics`` (default: the objectives) of the front members.

    Only epochs where a metric was measured are drawn: between evaluations the trainable
    repeats the last value (before the first, the worst value, with a ``nan_reason``) to keep
    every report complete; such epochs have no ``<split>_n`` (the evaluated examples).
    """
    names = objectives_of(trials, objectives)
    metrics = [m for m in (metrics or names) if m in epochs]
    front = trials[pareto_front(trials, names, directions)["on_front"]]
    figure = Figure(figsize=(7.5, 3.2 * max(1, len(metrics))), layout="constrained")
    if not metrics or front.empty:
        figure.text(0.5, 0.5, "no front members with per-epoch metrics", ha="center")
        return figure
    axes = figure.subplots(len(metrics), 1, sharex=True, squeeze=False)[:, 0]
    members = epochs.merge(front[["sweep", "trial_id"]], on=["sweep", "trial_id"])
    for ax, metric in zip(axes, metrics, strict=True):
        for trial_id, rows in members.groupby("trial_id", sort=True):
            shown = rows[_measured(rows, metric)]
            ax.plot(shown["epoch"], shown[metric], "o-", markersize=3, label=str(trial_id))
        ax.set_ylabel(metric)
        source = certificate_source(front, metric, per_epoch=True)
        if source is not None:
            ax.set_title(source, fontsize=8, loc="left")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("epoch")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.suptitle(f"learning curves of the {len(front)} front members")
    if len(front) <= 12:
        axes[0].legend(fontsize=7, ncols=2)
    return figure


def importance_figure(importances: pd.DataFrame) -> Figure:
    """Horizontal bars: each parameter's importance for each objective (``param_importances``)."""
    figure = Figure(figsize=(7.5, 1.5 + 0.45 * max(1, len(importances))), layout="constrained")
    ax = figure.add_subplot()
    trials = importances.attrs.get("trials", 0)
    note = caveat(trials)
    if importances.empty:
        why = note if trials < MIN_TRIALS else "no parameter varies among the finished trials"
        ax.text(0.5, 0.5, f"importances {why}", ha="center", wrap=True)
        ax.set_axis_off()
        return figure
    positions = np.arange(len(importances))
    height = 0.8 / len(importances.columns)
    for k, objective in enumerate(importances.columns):
        ax.barh(positions + k * height, importances[objective], height, label=objective)
    ax.set_yticks(positions + height * (len(importances.columns) - 1) / 2, importances.index)
    ax.invert_yaxis()
    ax.set_xlabel("importance (sums to 1 per objective)")
    title = f"parameter importance (fANOVA) over {trials} finished trials"
    ax.set_title(title if note is None else f"{title}\nonly a hint: few trials", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return figure
