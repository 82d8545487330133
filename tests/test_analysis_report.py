"""Plots, importances and the report (markdown, PNGs, self-contained HTML) on synthetic sweeps.

No headless browser exists on the development machines, so the page is checked with an HTML
parser: well nested, every image an embedded PNG that decodes, the tables present.
"""

from __future__ import annotations

import base64
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from analysis_helpers import downgrade_to_v0, write_sweep
from matplotlib.figure import Figure

from analysis import (
    build_report,
    front_figure,
    hypervolume_figure,
    importance_figure,
    learning_curves_figure,
    load,
    param_importances,
    pareto_front,
)
from analysis.__main__ import main
from analysis.importance import caveat, study_from_trials
from analysis.labels import axis_label, certificate_source, describe_trial, key_params
from analysis.loading import find_sweeps
from analysis.report import certificate_lines, labelled
from analysis.report import test_objectives as split_twins
from trainables.results import read_recertified, write_recertified

PNG = b"\x89PNG\r\n\x1a\n"
VOID = {"meta", "img", "br", "hr", "link", "input"}


class PageChecker(HTMLParser):
    """Checks nesting and collects images and table count."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.images: list[str] = []
        self.tables = 0
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs)["src"] or "")
        if tag == "table":
            self.tables += 1
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1:]}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def check_page(text: str) -> PageChecker:
    checker = PageChecker()
    checker.feed(text)
    checker.close()
    assert checker.stack == [], f"unclosed tags {checker.stack}"
    for src in checker.images:
        assert src.startswith("data:image/png;base64,"), src[:40]
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG)
    return checker


@pytest.fixture
def sweep(tmp_path: Path) -> str:
    write_sweep(str(tmp_path / "store"), "demo", n=30)
    return str(tmp_path / "store" / "demo")


def test_figures(sweep: str, tmp_path: Path) -> None:
    trials, epochs = load(sweep, epochs=True)
    figures = [
        front_figure(trials),
        hypervolume_figure(trials),
        learning_curves_figure(trials, epochs),
        importance_figure(param_importances(trials)),
        # degenerate inputs draw a figure that says so
        learning_curves_figure(trials.iloc[:0], epochs.iloc[:0]),
        importance_figure(param_importances(trials.iloc[:1])),
        front_figure(trials[trials.status == "failed"]),
    ]
    for i, figure in enumerate(figures):
        assert isinstance(figure, Figure)
        figure.savefig(tmp_path / f"{i}.png")
        assert (tmp_path / f"{i}.png").read_bytes().startswith(PNG)
    legend = [t.get_text() for t in figures[0].axes[0].get_legend().get_texts()]
    assert any(t.startswith("Pareto front") for t in legend)
    assert any(t.startswith("pruned") for t in legend)
    assert any(t.startswith("failed / diverged") for t in legend)


def test_importances_rank_conditional_parameters(sweep: str) -> None:
    trials = load(sweep)
    done = trials[(trials.status == "completed")]
    study = study_from_trials(trials)
    assert len(study.trials) == len(done)
    assert all(set(t.params) == set(study.trials[0].params) for t in study.trials)
    sabr = study.trials[0].distributions["method.sabr_lambda"]
    imputed = {t.params["method.sabr_lambda"] for t in study.trials} - set(
        done["param.method.sabr_lambda"].dropna()
    )
    assert len(imputed) == 1 and imputed.pop() < done["param.method.sabr_lambda"].min()
    assert sabr.low < done["param.method.sabr_lambda"].min()
    assert study.trials[0].distributions["optim.lr"].log  # 1e-4..1e-1 spans three decades

    table = param_importances(trials)
    assert list(table.columns) == ["val_clean_acc", "val_cert_acc"]
    assert set(table.index) == {"method.name", "optim.lr", "model.width", "method.sabr_lambda"}
    assert np.allclose(table.sum(), 1.0) and (table >= 0).all().all()
    assert table.attrs["trials"] == len(done)
    pd.testing.assert_frame_equal(table, param_importances(trials))  # seeded: reproducible


@pytest.mark.parametrize("version", [1, 0])
def test_report(sweep: str, tmp_path: Path, version: int) -> None:
    if version == 0:
        downgrade_to_v0(Path(sweep))
    trials = load(sweep)
    member = trials.loc[pareto_front(trials)["on_front"], "trial_id"].iloc[0]
    location = find_sweeps(sweep)[0]
    row = {"trial_id": member, "verifier": "milp", "split": "test", "status": "completed"}
    write_recertified(location, {**row, "cert_acc": 0.123456, "n": 10})
    assert len(read_recertified(location)) == 1
    report = build_report(sweep, str(tmp_path / "out"))
    assert Path(report.html_path) == tmp_path / "out" / "index.html"
    for path in report.image_paths:
        assert Path(path).read_bytes().startswith(PNG)
    html_text = Path(report.html_path).read_text()
    page = check_page(html_text)
    assert len(page.images) == 5 and page.tables >= 4  # with the test-split front
    text = "".join(page.text)
    assert "test_cert_acc [milp]" in text and "Test-split front" in text
    assert "<NA>" not in html_text and ">nan<" not in html_text and "<td></td>" not in html_text
    assert "<td>–</td>" in html_text  # sabr_lambda of the other methods
    assert html_text.count("<div class='scroll'><table") == page.tables  # wide tables scroll

    markdown = report.markdown
    assert "test_cert_acc [milp]" in markdown and "0.1235" in markdown
    assert "Hypervolume:" in markdown and "reference 0 per objective" in markdown
    assert "RuntimeError: CUDA out of memory" in markdown  # failures and why
    # v0 files had no nan_reason column, nor the certificates' provenance
    assert ("loss is nan in epoch 3" in markdown) == (version == 1)
    assert "Budget used: 82 of 90 epochs (91% of the epochs all trials would run" in markdown
    header = next(line for line in markdown.splitlines() if line.startswith("| trial_id"))
    if version == 1:
        assert header.startswith(
            "| trial_id | val_clean_acc | val_cert_acc [ibp] | test_clean_acc"
            " | test_cert_acc [crown-ibp] |"
        )
        assert (
            "- Certificates: val_cert_acc: ibp, eps 0.1, validation split;"
            " test_cert_acc: crown-ibp, eps 0.1, test split"
        ) in markdown
    else:
        assert "| val_cert_acc | test_clean_acc | test_cert_acc |" in header
        assert "val_cert_acc: validation split; verifier and eps not recorded" in markdown
    # the markdown front names only the parameters that differ on it, the rest below it
    front = trials[pareto_front(trials)["on_front"]]
    for name in ("method.name", "optim.lr", "model.width"):
        varies = front[f"param.{name}"].nunique() > 1
        assert (f" {name} |" in header) == varies
        assert (f"{name}=" in markdown.split("Same on the whole front:")[-1]) == (not varies)


def test_cli_report(sweep: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", sweep]) == 0
    out = capsys.readouterr().out
    assert "# Sweep demo" in out and f"report: {sweep}/report/index.html" in out
    check_page(Path(sweep, "report", "index.html").read_text())
    # the report folder does not disturb loading the sweep
    assert len(load(sweep)) == 30


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no sweep results at" in capsys.readouterr().err


def test_report_without_finished_trials(tmp_path: Path) -> None:
    write_sweep(str(tmp_path / "s"), "bad", n=5, statuses=("failed",))
    report = build_report(str(tmp_path / "s" / "bad"))
    assert "no full-budget completed trials yet" in report.markdown
    check_page(Path(report.html_path).read_text())


def test_report_when_an_objective_never_varies(tmp_path: Path) -> None:
    """Short sweeps often certify nothing: fANOVA cannot split zero variance; the report
    still comes out, with no importance for that objective."""
    write_sweep(str(tmp_path / "s"), "flat", constant_cert=0.0)
    table = param_importances(load(str(tmp_path / "s" / "flat")))
    assert (table["val_cert_acc"] == 0).all() and np.isclose(table["val_clean_acc"].sum(), 1)
    report = build_report(str(tmp_path / "s" / "flat"))
    check_page(Path(report.html_path).read_text())


def test_certified_numbers_are_labelled_with_their_source() -> None:
    rows = pd.DataFrame(
        {
            "trial_id": ["a", "b", "c"],
            "val_cert_acc": [0.5, 0.4, 0.3],
            "test_cert_acc": [0.45, 0.35, None],
            "eval_verifier": ["crown-ibp", "crown-ibp", "ibp"],
            "eval_split": ["val", "val", "val"],
            "final_verifier": ["crown", "crown", "crown"],
            "final_split": ["test", "test", "val"],  # c: certified val at the end
            "cert_eps": [0.1, 0.1, 0.1],
        }
    )
    assert certificate_source(rows, "test_cert_acc") == "crown, eps 0.1, test split"
    assert certificate_source(rows, "val_cert_acc") == (
        "crown-ibp (2) / crown (1), eps 0.1, validation split"
    )
    epochs = certificate_source(rows, "val_cert_acc", per_epoch=True)
    assert epochs == "crown-ibp (2) / ibp (1), eps 0.1, validation split"
    assert certificate_source(rows, "val_clean_acc") is None
    assert axis_label(rows, "val_clean_acc") == "val_clean_acc"
    assert axis_label(rows[:2], "val_cert_acc") == (
        "val_cert_acc\n(crown-ibp, eps 0.1, validation split)"
    )
    done = {"val_clean_acc": [0.6, 0.7, 0.8], "status": "completed", "epochs_run": 3}
    figure = front_figure(rows.assign(**done, total_epochs=3))
    assert figure.axes[0].get_ylabel() == axis_label(rows, "val_cert_acc")


def test_the_final_verifiers_validation_certificate_is_labelled_as_such() -> None:
    """``val_final_cert_acc`` is the final verifier's on the validation split, whatever the
    final split; its test-split twin is ``test_cert_acc``."""
    rows = pd.DataFrame(
        {
            "trial_id": ["a", "b"],
            "status": "completed",
            "val_clean_acc": [0.6, 0.7],
            "val_final_cert_acc": [0.5, 0.4],
            "test_clean_acc": [0.55, 0.65],
            "test_cert_acc": [0.45, 0.35],
            "test_verifier": "best",
            "eval_verifier": "crown-ibp",
            "eval_split": "val",
            "final_verifier": "best",
            "final_split": "test",
            "cert_eps": 0.1,
        }
    )
    assert certificate_source(rows, "val_final_cert_acc") == "best, eps 0.1, validation split"
    assert axis_label(rows, "val_final_cert_acc") == (
        "val_final_cert_acc\n(best, eps 0.1, validation split)"
    )
    objectives = ["val_clean_acc", "val_final_cert_acc"]
    assert split_twins(rows, objectives) == ["test_clean_acc", "test_cert_acc"]
    table = labelled(rows[["trial_id", *objectives]], rows)
    assert list(table.columns) == ["trial_id", "val_clean_acc", "val_final_cert_acc [best]"]
    assert certificate_lines(rows, objectives) == [
        "- Certificates: val_final_cert_acc: best, eps 0.1, validation split"
    ]


def test_points_are_labelled_by_method_and_teacher_first() -> None:
    rows = pd.DataFrame(
        {
            "trial_id": ["a", "b", "c"],
            "param.optim.lr": [0.1, 0.01, 0.001],
            "param.model.width": [8, 8, 16],
            "param.teacher.name": ["none", "pgd-at", "pgd-at"],
            "param.method.name": ["ibp", "ibp", "ibp"],  # the same on all: still first
        }
    )
    params = key_params(rows)
    assert params == ["param.method.name", "param.teacher.name", "param.optim.lr"]
    assert describe_trial(rows.iloc[0], params) == "a: ibp, no teacher, optim.lr=0.1"
    assert describe_trial(rows.iloc[1], params) == "b: ibp, teacher pgd-at, optim.lr=0.01"


def test_few_trials_importances_come_with_a_caveat_or_not_at_all(tmp_path: Path) -> None:
    write_sweep(str(tmp_path / "s"), "few", n=12)  # 6 completed trials
    trials = load(str(tmp_path / "s" / "few"))
    assert param_importances(trials).empty and param_importances(trials).attrs["trials"] == 6
    assert not param_importances(trials, min_trials=2).empty
    assert caveat(6) == "not computed: 6 finished trial(s), fewer than 8"
    assert "read it as a hint" in caveat(12) and caveat(20) is None
    report = build_report(str(tmp_path / "s" / "few"))
    assert "Importances not computed: 6 finished trial(s)" in Path(report.html_path).read_text()


def test_trial_and_epoch_axes_have_whole_number_ticks(sweep: str) -> None:
    trials, epochs = load(sweep, epochs=True)
    for figure in (hypervolume_figure(trials), learning_curves_figure(trials, epochs)):
        figure.canvas.draw()
        ticks = figure.axes[-1].get_xticks()
        assert len(ticks) > 1 and np.allclose(ticks, np.round(ticks))
