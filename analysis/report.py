"""A sweep's report: a markdown summary, PNG figures and one self-contained HTML page.

The summary says what a researcher asks first: how many trials ended how, how much budget
they used, the front (objectives, test metrics, re-certified numbers next to the search's own,
parameters), the hypervolume and its reference, and which trials failed and why. The HTML
page holds the same tables and the figures embedded as base64 PNGs, so it can be mailed or
archived as one file. Everything is written through pyarrow filesystems: by default into
``<sweep>/report/`` wherever the sweep lives.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import pyarrow.fs as pafs
from matplotlib.figure import Figure

from analysis.front import (
    directions_of,
    finished,
    front_members,
    hypervolume,
    objectives_of,
)
from analysis.importance import param_importances
from analysis.loading import load
from analysis.plots import (
    front_figure,
    hypervolume_figure,
    importance_figure,
    learning_curves_figure,
)
from trainables.results import (
    STATUSES,
    SweepLocation,
    find_sweeps,
    open_storage,
    read_recertified,
)

__all__ = ["Report", "build_report", "failures_table", "front_table", "markdown_table"]


@dataclass(frozen=True)
class Report:
    """The markdown summary and where the page and the figures were written."""

    markdown: str
    html_path: str
    image_paths: list[str]


def markdown_table(df: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub-flavoured markdown table (floats to ``digits`` significant digits, missing
    values blank)."""

    def cell(value: object) -> str:
        if value is None or (not isinstance(value, str) and pd.isna(value)):
            return ""
        text = f"{value:.{digits}g}" if isinstance(value, float) else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(False)]
    return "\n".join(lines)


def _recertified_columns(recertified: pd.DataFrame) -> pd.DataFrame | None:
    """One column per (split, verifier) with the re-certified accuracy, indexed by trial."""
    done = recertified[recertified["status"] == "completed"]
    if done.empty:
        return None
    labels = done["split"] + "_cert_acc [" + done["verifier"] + "]"
    return done.assign(label=labels).pivot_table(
        index="trial_id", columns="label", values="cert_acc", aggfunc="last"
    )


def _recertified_lines(recertified: pd.DataFrame) -> list[str]:
    """What each re-certification covered (verifier, split, examples, eps, trials, failures)."""
    lines = []
    for (verifier, split), rows in recertified.groupby(["verifier", "split"]):
        done = rows[rows["status"] == "completed"]
        sizes = ", ".join(str(int(n)) for n in sorted(done["n"].dropna().unique()))
        epsilons = ", ".join(f"{e:g}" for e in sorted(done["eps"].dropna().unique()))
        failed = ", ".join(rows.loc[rows["status"] == "failed", "trial_id"]) or "none"
        lines.append(
            f"- Re-certified with {verifier} on {split}: {len(done)} trial(s), n = {sizes or '?'}"
            f" examples, eps = {epsilons or '?'}; failed: {failed}"
        )
    return lines


def front_table(
    trials: pd.DataFrame,
    objectives: Sequence[str] | None = None,
    directions: Sequence[str] | None = None,
    recertified: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The front's members (``analysis.front.front_members``) with the re-certified
    accuracies next to the search's own test numbers."""
    recert = None if recertified is None else _recertified_columns(recertified)
    return front_members(trials, objectives, directions, extra=recert)


def _why(row: pd.Series) -> str:
    """The last line of the error (the exception), else the divergence reason."""
    for text in (row.get("error"), row.get("nan_reason")):
        if isinstance(text, str) and text.strip():
            return text.strip().splitlines()[-1]
    return "(no reason recorded)"


def failures_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Failed and diverged trials with the epochs they ran and why they ended."""
    bad = trials[trials["status"].isin(["failed", "diverged"])]
    return pd.DataFrame(
        {
            "trial_id": bad["trial_id"],
            "status": bad["status"],
            "epochs_run": bad["epochs_run"],
            "why": [_why(row) for _, row in bad.iterrows()],
        }
    ).reset_index(drop=True)


def _overview(
    trials: pd.DataFrame,
    names: list[str],
    directions: Sequence[str] | None,
    reference: Sequence[float] | None,
) -> list[str]:
    counts = trials["status"].value_counts()
    statuses = ", ".join(f"{s} {int(counts.get(s, 0))}" for s in STATUSES)
    modes = directions or ["maximize"] * len(names)
    goals = ", ".join(f"{n} ({d[:3]})" for n, d in zip(names, modes, strict=True))
    used = int(trials["epochs_run"].sum())
    budget = int(trials["total_epochs"].sum())
    share = f" ({used / budget:.0%})" if budget else ""
    ref = "0 per objective" if reference is None else str(list(reference))
    volume = hypervolume(trials, names, directions, reference)
    return [
        f"- Trials: {len(trials)} ({statuses})",
        f"- Objectives: {goals}",
        f"- Budget used: {used} of {budget} epochs (every trial run to the end){share}; "
        f"{_total(trials, 'wall_time_s', 1 / 3600, 'h wall time, summed over trials')}"
        f"; {_total(trials, 'device_hours', 1.0, 'device-hours')}",
        f"- Hypervolume: {volume:.4f} (reference {ref}; {int(finished(trials).sum())}"
        " full-budget completed trials)",
    ]


def _total(trials: pd.DataFrame, column: str, scale: float, unit: str) -> str:
    """A summed cost, or that it was not recorded (older files, trials that never reported)."""
    values = trials[column].dropna()
    if values.empty:
        return f"{unit}: not recorded"
    return f"{values.sum() * scale:.3f} {unit} ({len(values)} of {len(trials)} trials recorded)"


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _html_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "<p>none</p>"
    return df.to_html(index=False, na_rep="", float_format="{:.4g}".format, border=0)


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.5em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 0.6em; text-align: right; }
th { background: #f3f3f3; }
img { max-width: 100%; display: block; margin: 0.5em 0 1.5em; }
"""


def _page(title: str, overview: list[str], sections: list[tuple[str, str]]) -> str:
    items = "".join(f"<li>{html.escape(line[2:])}</li>" for line in overview)
    body = "".join(f"<h2>{html.escape(head)}</h2>\n{content}\n" for head, content in sections)
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n<ul>{items}</ul>\n{body}</body>\n</html>\n"
    )


def _output(
    location: SweepLocation, out: str | None, filesystem: pafs.FileSystem | None
) -> tuple[pafs.FileSystem, str]:
    if out is None:
        return location.filesystem, f"{location.path}/report"
    return open_storage(out, filesystem)


def build_report(
    path_or_uri: str,
    out: str | None = None,
    *,
    objectives: Sequence[str] | None = None,
    directions: Sequence[str] | None = None,
    reference: Sequence[float] | None = None,
    filesystem: pafs.FileSystem | None = None,
) -> Report:
    """Write the report of one sweep to ``out`` (default ``<sweep>/report/``): ``index.html``
    and one PNG per figure; returns the markdown summary and the paths written."""
    locations = find_sweeps(path_or_uri, filesystem)
    if len(locations) != 1:
        names = ", ".join(location.sweep for location in locations)
        raise ValueError(f"{path_or_uri} holds several sweeps ({names}): name one of them")
    location = locations[0]
    trials, epochs = load(path_or_uri, epochs=True, filesystem=filesystem)
    names = objectives_of(trials, objectives)
    directions = directions_of(trials, names, directions)
    recertified = read_recertified(location)
    front = front_table(trials, names, directions, recertified)
    failures = failures_table(trials)
    importances = param_importances(trials, names, directions)
    overview = _overview(trials, names, directions, reference) + _recertified_lines(recertified)
    title = f"Sweep {location.sweep}"
    markdown = [
        f"# {title}",
        f"Results: {location.uri}",
        "",
        *overview,
        "",
        f"## Pareto front ({len(front)} trials)",
        markdown_table(front) if len(front) else "no full-budget completed trials yet",
        "",
        f"## Failures ({len(failures)})",
        markdown_table(failures) if len(failures) else "none",
    ]
    figures = {
        "front": front_figure(
            trials, names, directions, params=list(importances.index[:3]) or None
        ),
        "hypervolume": hypervolume_figure(trials, names, directions, reference),
        "learning_curves": learning_curves_figure(trials, epochs, names, directions),
        "importance": importance_figure(importances),
    }
    fs, folder = _output(location, out, filesystem)
    fs.create_dir(folder, recursive=True)
    images, embedded = [], {}
    for name, figure in figures.items():
        png = _png(figure)
        embedded[name] = base64.b64encode(png).decode()
        images.append(f"{folder}/{name}.png")
        with fs.open_output_stream(images[-1]) as stream:
            stream.write(png)

    def img(name: str) -> str:
        return f"<img alt='{name}' src='data:image/png;base64,{embedded[name]}'>"

    sections = [
        (f"Pareto front ({len(front)} trials)", img("front") + _html_table(front)),
        ("Hypervolume over trials", img("hypervolume")),
        ("Learning curves of the front", img("learning_curves")),
        ("Parameter importance", img("importance") + _html_table(importances.reset_index())),
        (f"Failures ({len(failures)})", _html_table(failures)),
    ]
    page = f"{folder}/index.html"
    with fs.open_output_stream(page) as stream:
        stream.write(_page(title, overview, sections).encode())
    return Report("\n".join(markdown), page, images)
