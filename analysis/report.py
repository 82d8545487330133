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
from analysis.importance import caveat, param_importances
from analysis.labels import CERTIFIED, MISSING, certificate_source, column_verifiers
from analysis.loading import load
from analysis.plots import (
    front_figure,
    hypervolume_figure,
    importance_figure,
    learning_curves_figure,
)
from trainables.results import (
    FINAL_VAL_CERT,
    STATUSES,
    SweepLocation,
    find_sweeps,
    open_storage,
    read_recertified,
)

__all__ = [
    "Report",
    "build_report",
    "certificate_lines",
    "failures_table",
    "front_table",
    "labelled",
    "markdown_table",
    "test_objectives",
]

#: Said above the test-split front: it is there to report, not to choose by.
TEST_FRONT_NOTE = (
    "The same full-budget trials ranked on their test-split metrics (the final evaluation),"
    " with their validation objectives alongside. The search chose on validation; choosing"
    " models on this front would select on the test set."
)


@dataclass(frozen=True)
class Report:
    """The markdown summary and where the page and the figures were written."""

    markdown: str
    html_path: str
    image_paths: list[str]


def markdown_table(df: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub-flavoured markdown table (floats to ``digits`` significant digits, missing
    values as ``MISSING``)."""

    def cell(value: object) -> str:
        if value is None or (not isinstance(value, str) and pd.isna(value)):
            return MISSING
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
    *,
    varying_only: bool = False,
    also: Sequence[str] = (),
) -> pd.DataFrame:
    """The front's members (``analysis.front.front_members``) with the re-certified
    accuracies next to the search's own test numbers (``also``: more metric columns)."""
    extras = [trials.set_index("trial_id")[list(also)]] if also else []
    if recertified is not None and (recert := _recertified_columns(recertified)) is not None:
        extras.append(recert)
    extra = pd.concat(extras, axis=1) if extras else None
    return front_members(trials, objectives, directions, varying_only=varying_only, extra=extra)


def test_objectives(trials: pd.DataFrame, objectives: Sequence[str]) -> list[str] | None:
    """The objectives with each ``val_*`` one replaced by its test-split twin, when the
    trials have it (``val_final_cert_acc``'s: ``test_cert_acc``, by the same final verifier
    when the final split is test); None when there is none (no test-split front to show)."""
    twins = []
    for name in objectives:
        twin = "test_cert_acc" if name == FINAL_VAL_CERT else "test_" + name.removeprefix("val_")
        usable = name.startswith("val_") and twin in trials and trials[twin].notna().any()
        twins.append(twin if usable else name)
    return twins if twins != list(objectives) else None


def labelled(table: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Certified columns named with their verifier (``val_cert_acc [crown-ibp]``) when the
    rows have one; ``test_verifier`` is then left out (it says the same)."""
    names = {}
    for column in table.columns:
        if CERTIFIED.fullmatch(str(column)):
            shown = trials[trials["trial_id"].isin(table["trial_id"])]
            verifiers = column_verifiers(shown, str(column)).dropna().unique()
            if len(verifiers) == 1:
                names[column] = f"{column} [{verifiers[0]}]"
    table = table.rename(columns=names)
    if "test_cert_acc" in names:
        table = table.drop(columns=["test_verifier"], errors="ignore")
    return table


def _same_on_front(full: pd.DataFrame, shown: pd.DataFrame) -> list[str]:
    """``- Same on the whole front: key=value, ...`` for parameters left out of ``shown``."""
    same = [c for c in full.columns if c not in shown.columns and c != "test_verifier"]
    if not same or full.empty:
        return []
    values = ", ".join(f"{c}={_text(full[c].iloc[0])}" for c in same)
    return ["", f"Same on the whole front: {values}"]


def _text(value: object) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return MISSING
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def certificate_lines(trials: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """``- Certificates: val_cert_acc: crown-ibp, eps 0.1, validation split; ...`` for the
    certified ones of ``columns`` (none: no line)."""
    sources = []
    for column in dict.fromkeys(columns):
        source = certificate_source(trials, column)
        if source is not None and column in trials and trials[column].notna().any():
            sources.append(f"{column}: {source}")
    return [f"- Certificates: {'; '.join(sources)}"] if sources else []


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
    share = (
        f" ({used / budget:.0%} of the epochs all trials would run to the end)" if budget else ""
    )
    ref = "0 per objective" if reference is None else str(list(reference))
    volume = hypervolume(trials, names, directions, reference)
    return [
        f"- Trials: {len(trials)} ({statuses})",
        f"- Objectives: {goals}",
        f"- Budget used: {used} of {budget} epochs{share}; "
        f"{_total(trials, 'wall_time_s', 1 / 3600, ' h', 'wall time, summed over trials')}"
        f"; {_total(trials, 'device_hours', 1.0, '', 'device-hours')}",
        f"- Hypervolume: {volume:.4f} (reference {ref}; {int(finished(trials).sum())}"
        " full-budget completed trials)",
    ]


def _total(trials: pd.DataFrame, column: str, scale: float, unit: str, what: str) -> str:
    """A summed cost, or that it was not recorded (older files, trials that never reported)."""
    values = trials[column].dropna()
    if values.empty:
        return f"{what}: not recorded"
    total = f"{values.sum() * scale:.3f}{unit}"
    return f"{total} {what} ({len(values)} of {len(trials)} trials recorded)"


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _html_table(df: pd.DataFrame) -> str:
    """A table in a box that scrolls sideways when it is wider than the page."""
    if df.empty:
        return "<p>none</p>"
    text = df.map(_text).to_html(index=False, border=0)
    return f"<div class='scroll'>{text}</div>"


def _paragraph(text: str) -> str:
    return f"<p class='note'>{html.escape(text)}</p>"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222;
       padding: 0 1em; }
.scroll { overflow-x: auto; margin: 0.5em 0 1.5em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 0.6em; text-align: right;
         white-space: nowrap; }
th { background: #f3f3f3; white-space: normal; vertical-align: bottom; }
td:first-child, th:first-child { position: sticky; left: 0; background: #fff; }
th:first-child { background: #f3f3f3; }
.note { color: #555; font-size: 0.9em; max-width: 80ch; }
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
    front = labelled(front_table(trials, names, directions, recertified), trials)
    narrow = labelled(
        front_table(trials, names, directions, recertified, varying_only=True), trials
    )
    tests = test_objectives(trials, names)
    test_front = None
    if tests is not None:
        test_front = labelled(
            front_table(trials, tests, directions, recertified, also=names), trials
        )
    failures = failures_table(trials)
    importances = param_importances(trials, names, directions)
    importance_note = caveat(importances.attrs.get("trials", 0))
    certified = [*names, *(tests or []), "test_cert_acc"]
    overview = [
        *_overview(trials, names, directions, reference),
        *certificate_lines(trials, certified),
        *_recertified_lines(recertified),
    ]
    title = f"Sweep {location.sweep}"
    markdown = [
        f"# {title}",
        f"Results: {location.uri}",
        "",
        *overview,
        "",
        f"## Pareto front ({len(front)} trials)",
        markdown_table(narrow) if len(front) else "no full-budget completed trials yet",
        *_same_on_front(front, narrow),
        "",
        f"## Failures ({len(failures)})",
        markdown_table(failures) if len(failures) else "none",
    ]
    figures = {
        "front": front_figure(trials, names, directions),
        "hypervolume": hypervolume_figure(trials, names, directions, reference),
        "learning_curves": learning_curves_figure(trials, epochs, names, directions),
        "importance": importance_figure(importances),
    }
    if tests is not None:
        figures["test_front"] = front_figure(
            trials, tests, directions, title=f"front on the test split ({', '.join(tests)})"
        )
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

    sections = [(f"Pareto front ({len(front)} trials)", img("front") + _html_table(front))]
    if test_front is not None:
        sections.append(
            (
                f"Test-split front ({len(test_front)} trials)",
                _paragraph(TEST_FRONT_NOTE) + img("test_front") + _html_table(test_front),
            )
        )
    sections += [
        ("Hypervolume over trials", img("hypervolume")),
        ("Learning curves of the front", img("learning_curves")),
        (
            "Parameter importance",
            (_paragraph(f"Importances {importance_note}.") if importance_note else "")
            + img("importance")
            + ("" if importances.empty else _html_table(importances.reset_index())),
        ),
        (f"Failures ({len(failures)})", _html_table(failures)),
    ]
    page = f"{folder}/index.html"
    with fs.open_output_stream(page) as stream:
        stream.write(_page(title, overview, sections).encode())
    return Report("\n".join(markdown), page, images)
