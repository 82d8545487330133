"""Re-certify a sweep's Pareto front with a stronger verifier than the search could afford.

During a sweep each trial certifies with a cheap verifier (often on a validation subset);
the models worth reporting are the few on the front. This loads each front member's final
checkpoint (``checkpoint_uri`` in its trial row), rebuilds its model and data from the
config stored in the checkpoint, certifies the chosen split at the trial's eps with the
chosen verifier of the registry (``trainables.certify.verifiers``, through
``trainables.checkpoint_certification``, as ``python -m trainables.certify_checkpoint``) and
writes one row per trial as a new Parquet dataset (``trainables.results.recertification``);
the sweep's own files are never rewritten. A cascade's row records the fraction each stage
certified (``certified_by``, JSON).

Where it runs: as Ray tasks when a Ray cluster is reachable (this process already called
``ray.init``, or ``RAY_ADDRESS`` names a cluster), one task per trial with a GPU when the
cluster has any; otherwise one trial after another in this process. Checkpoints and data must
then be reachable from the workers (shared storage, as for the sweep itself). A trial whose
checkpoint cannot be loaded or certified gets a row with ``status="failed"`` and the error;
the others go on.

A rerun never loses a good result: a trial's stored row is replaced only when it had failed
or the new run completed on at least as many examples (``overwrite=True`` replaces it
anyway); the rows returned say which were written (``written``).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow.fs as pafs
import torch
from tqdm import tqdm

from analysis.front import pareto_front
from analysis.loading import find_sweeps, load
from trainables.certify.verifiers import VERIFIERS, unknown_verifier
from trainables.checkpoint_certification import certify_or_attack, load_trained
from trainables.results import write_recertified

__all__ = ["SPLITS", "Job", "certify_checkpoint", "recertify"]

SPLITS = ("test", "val")
_ERROR_CHARS = 2000


@dataclass(frozen=True)
class Job:
    """One trial to re-certify, with what the search itself measured."""

    trial_id: str
    checkpoint_uri: str | None
    search_verifier: str | None
    search_cert_acc: float | None


def certify_checkpoint(
    job: Job,
    verifier: str,
    split: str,
    *,
    subset: int | None = None,
    batch_size: int = 256,
    time_limit: float = 60.0,
    progress: bool = False,
) -> dict[str, Any]:
    """The re-certification row of one trial (``status="failed"`` with the error if it
    could not be done). Runs as a Ray task or in-process (``progress``: a bar per batch)."""
    started = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    row: dict[str, Any] = {
        "trial_id": job.trial_id,
        "verifier": verifier,
        "split": split,
        "subset": subset,
        "search_verifier": job.search_verifier,
        "search_cert_acc": job.search_cert_acc,
        "checkpoint_uri": job.checkpoint_uri,
        "device": str(device),
    }
    try:
        if not job.checkpoint_uri:
            raise ValueError(f"trial {job.trial_id} has no checkpoint_uri in its row")
        model, config, splits = load_trained(job.checkpoint_uri, device)
        dataset = splits.test if split == "test" else splits.val
        result = certify_or_attack(
            model,
            dataset,
            verifier,
            eps=config.eval_eps,
            subset=subset,
            milp_time_limit=time_limit,
            batch_size=batch_size,
            device=device,
            progress=progress,
        )
        (point,) = [p for p in result["points"] if p["norm"] == "linf"]
        row.update(
            n=result["n"],
            clean_acc=result["clean_acc"],
            cert_acc=point["acc"],
            milp_undecided=result.get("milp_undecided"),
            bab_undecided=result.get("bab_undecided"),
            certified_by=json.dumps(result["certified_by"]) if "certified_by" in result else None,
            eps=config.eval_eps,
            status="completed",
        )
    except Exception:  # one broken trial must not stop the others: its row says why
        row.update(status="failed", error=traceback.format_exc()[-_ERROR_CHARS:])
    row["seconds"] = time.perf_counter() - started
    return row


def _stronger(search_verifier: str | None, verifier: str) -> bool:
    """Whether the trial's own verifier ranks above ``verifier`` in the registry's usual order
    of tightness (a warning only: the bounds are not ordered per sample; verifiers without a
    rank, e.g. lipschitz, are not compared)."""
    if search_verifier not in VERIFIERS:
        return False
    theirs, ours = VERIFIERS[search_verifier].strength, VERIFIERS[verifier].strength
    return theirs is not None and ours is not None and theirs > ours


def _ray_cluster() -> Any | None:
    """The ``ray`` module when a cluster is reachable, else None (never starts one)."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return ray
    if os.environ.get("RAY_ADDRESS"):
        import ray

        ray.init()
        return ray
    return None


def _run_on_ray(ray: Any, jobs: Sequence[Job], **options: Any) -> Iterator[dict]:
    """One task per trial, yielded as they finish."""
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    remote = ray.remote(num_cpus=1, num_gpus=gpus)(certify_checkpoint)
    pending = [remote.remote(job, **options) for job in jobs]
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        yield ray.get(done[0])


def recertify(
    path_or_uri: str,
    verifier: str,
    *,
    split: str = "test",
    subset: int | None = None,
    trial_ids: Sequence[str] | None = None,
    objectives: Sequence[str] | None = None,
    directions: Sequence[str] | None = None,
    batch_size: int = 256,
    time_limit: float = 60.0,
    filesystem: pafs.FileSystem | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> pd.DataFrame:
    """Re-certify the front members (or ``trial_ids``) of one sweep; returns one row per
    trial, with ``written`` False where the stored row was kept (see the module docstring).

    ``subset``: the first N examples of the split (N >= 1); ``time_limit``: seconds per
    sample for complete verifiers. Warns when ``verifier`` is weaker than a trial's own.
    """
    if subset is not None and subset < 1:
        raise ValueError(f"subset must be at least 1 example, got {subset}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if verifier not in VERIFIERS:  # the registry's certificates of the trial's L-inf ball
        raise ValueError(unknown_verifier(verifier))
    locations = find_sweeps(path_or_uri, filesystem)
    if len(locations) != 1:
        names = ", ".join(location.sweep for location in locations)
        raise ValueError(f"{path_or_uri} holds several sweeps ({names}): name one of them")
    location = locations[0]
    trials = load(path_or_uri, filesystem=filesystem)
    if trial_ids is None:
        members = trials[pareto_front(trials, objectives, directions)["on_front"]]
    else:
        unknown = sorted(set(trial_ids) - set(trials["trial_id"]))
        if unknown:
            raise ValueError(f"no trial(s) {unknown} in {path_or_uri}")
        members = trials[trials["trial_id"].isin(trial_ids)]
    jobs = [
        Job(
            row["trial_id"],
            None if pd.isna(row["checkpoint_uri"]) else row["checkpoint_uri"],
            None if pd.isna(row["test_verifier"]) else row["test_verifier"],
            None if pd.isna(row["test_cert_acc"]) else float(row["test_cert_acc"]),
        )
        for _, row in members.iterrows()
    ]
    weaker = sorted({j.search_verifier for j in jobs if _stronger(j.search_verifier, verifier)})
    if weaker:
        print(f"warning: {verifier} is weaker than the search's own {weaker}", file=sys.stderr)
    options = {"subset": subset, "batch_size": batch_size, "time_limit": time_limit}
    ray = _ray_cluster()
    if ray is None:
        results = (
            certify_checkpoint(job, verifier, split, progress=progress, **options) for job in jobs
        )
    else:
        results = _run_on_ray(ray, jobs, verifier=verifier, split=split, **options)
    rows = []
    bar = tqdm(results, total=len(jobs), desc=f"{verifier} on {split}", disable=not progress)
    for row in bar:
        if row["status"] == "completed" and not row.get("n"):
            row.update(status="failed", error="no examples were certified (n = 0)")
        kept = write_recertified(location, row, overwrite=overwrite)
        row["written"] = kept is None
        if kept is not None:
            print(
                f"kept the stored {verifier}/{split} result of trial {row['trial_id']}"
                f" ({kept['status']}, n = {kept['n']}); this run: {row['status']},"
                f" n = {row.get('n')} (--overwrite replaces it)",
                file=sys.stderr,
            )
        rows.append(row)
        bar.set_postfix(trial=row["trial_id"], cert_acc=row.get("cert_acc"), refresh=False)
    return pd.DataFrame(rows)
