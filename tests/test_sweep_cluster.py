"""``python -m sweeps run`` as a real process: a second driver on a running sweep is refused,
the local Ray listens on the loopback address only, a SIGKILLed driver's sweep refuses changed
settings and resumes (and extends) without repeating finished trials, and a sweep submitted
as a Ray job to a separately started cluster writes its Parquet.

Both tests start Ray processes outside pytest. They are cleaned up by *session id*: every
process a test starts gets a new session (``start_new_session=True``) and all Ray processes it
spawns stay in it (workers get their own process group, but not their own session), so
killing that session's processes cannot touch another cluster on the machine. ``ray stop`` is
never used: in Ray 2.60 it kills every Ray process on the machine (it matches process names;
it has no ``--temp-dir`` or session filter), other engineers' clusters included.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from sweep_helpers import write_short_demo

from trainables.results import read_trials

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
NUM_TRIALS = 4
SWEEP = "demo"


def tiny_demo(directory: Path, num_trials: int = NUM_TRIALS) -> Path:
    """The demo sweep cut to ``num_trials`` trials of 2 epochs (seconds each on a CPU)."""
    return write_short_demo(directory, num_trials=num_trials)


@contextmanager
def short_temp_dir(prefix: str) -> Iterator[Path]:
    """A fresh directory under /tmp: Ray's socket paths inside it must stay under 107 bytes,
    which pytest's deep ``tmp_path`` plus Ray's session name would exceed."""
    with tempfile.TemporaryDirectory(prefix=prefix, dir="/tmp") as directory:
        yield Path(directory)


def base_env(**extra: str) -> dict[str, str]:
    """The environment for Ray processes: the venv's python first on PATH, no inherited
    cluster address or auth settings (each test chooses its own)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "TUNE_"))}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def live_processes() -> Iterator[tuple[int, int, list[str]]]:
    """(pid, session id, command line) of every live, non-zombie process, from /proc."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        state, _ppid, _pgrp, session = stat[stat.rindex(")") + 2 :].split()[:4]
        if state not in "ZX":
            yield int(entry.name), int(session), cmdline.split("\0")


def session_processes(session: int) -> list[int]:
    """Live processes of one session; the session leader's pid is its id."""
    return [pid for pid, sid, _ in live_processes() if sid == session]


def processes_mentioning(marker: str) -> list[int]:
    """Live processes whose command line mentions ``marker`` (e.g. a Ray temp dir)."""
    return [pid for pid, _, cmdline in live_processes() if any(marker in a for a in cmdline)]


def signal_all(pids: list[int], signum: signal.Signals) -> None:
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signum)


def kill_session(session: int, grace_s: float = 0.0, timeout_s: float = 30.0) -> None:
    """SIGTERM (when ``grace_s`` > 0) then SIGKILL every process of the session until none is
    left; raises if some survive ``timeout_s``."""
    if grace_s > 0 and session_processes(session):
        signal_all(session_processes(session), signal.SIGTERM)
        with suppress(TimeoutError):
            wait_for(lambda: not session_processes(session), grace_s, "a graceful stop")
    signal_all(session_processes(session), signal.SIGKILL)
    wait_for(lambda: not session_processes(session), timeout_s, f"session {session} to end")


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.2)


def free_ports(count: int) -> list[int]:
    """Ports free right now (held open together, so they differ)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def trial_files(storage: Path) -> dict[str, int]:
    """Trial Parquet file name -> mtime (ns)."""
    directory = storage / SWEEP / "trials"
    return {p.name: p.stat().st_mtime_ns for p in directory.glob("*.parquet")}


def listening_addresses(pids: list[int]) -> set[str]:
    """The local addresses (hex, as /proc/net shows them) of the TCP sockets these processes
    listen on."""
    inodes = set()
    for pid in pids:
        with suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                addresses.add(fields[1].split(":")[0])
    return addresses


LOOPBACK = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}


def assert_complete_sweep(storage: Path, num_trials: int = NUM_TRIALS) -> None:
    trials = read_trials(str(storage), SWEEP)
    assert len(trials) == num_trials, trials[["trial_id", "status"]]
    assert trials["trial_id"].is_unique
    assert set(trials["status"]) == {"completed"}
    assert trials["val_cert_acc"].between(0, 1).all()


@pytest.mark.slow  # about 1-2 min on 2 shared cores: two local Ray starts and 5 short trials
def test_one_driver_and_a_killed_driver_resumes_what_it_was_started_with(tmp_path: Path) -> None:
    storage = tmp_path / "results"
    config = tiny_demo(tmp_path)
    run = [sys.executable, "-m", "sweeps", "run", "--storage", str(storage), "--num-cpus", "2"]
    with short_temp_dir("cs-kill-") as ray_tmp:
        # RAY_TMPDIR: the local Ray's session files (and so every Ray command line naming
        # them) live in a directory of this test alone.
        env = base_env(RAY_TMPDIR=str(ray_tmp))
        with (tmp_path / "first.log").open("w") as log:
            driver = subprocess.Popen(
                [*run, str(config)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
            try:
                lock = storage / SWEEP / "driver.lock"
                wait_for(
                    lambda: lock.is_file() and f'"pid": {driver.pid}' in lock.read_text(),
                    120,
                    "the first driver to take the sweep's lock",
                )
                # a second driver on the same sweep is refused, before it starts Ray
                second = subprocess.run(
                    [*run, str(config)], cwd=REPO, env=env, capture_output=True, text=True,
                    timeout=120,
                )  # fmt: skip
                assert second.returncode == 2, second.stdout + second.stderr
                assert f"pid {driver.pid}" in second.stderr
                wait_for(
                    lambda: bool(trial_files(storage)) or driver.poll() is not None,
                    300,
                    "the first finished trial",
                )
                assert driver.poll() is None, "the sweep ended before it could be killed"
                # the local cluster listens on the loopback address only
                listening = listening_addresses(session_processes(driver.pid))
                assert listening and listening <= LOOPBACK, listening
                os.killpg(driver.pid, signal.SIGKILL)  # the driver, GCS, raylet, agents
                driver.wait(timeout=30)
            finally:
                kill_session(driver.pid)  # workers have their own process group
        assert not session_processes(driver.pid)
        assert not processes_mentioning(str(ray_tmp)), "Ray processes outlived the kill"

        before = trial_files(storage)
        assert 0 < len(before) < NUM_TRIALS, f"killed with {len(before)} trials written"
        written_at = read_trials(str(storage), SWEEP).set_index("trial_id")["written_at"]

        # edited settings do not resume silently: refused, naming each key, before Ray
        raw = yaml.safe_load(config.read_text())
        raw["training"].update({"epochs": 3, "eps": 0.2})
        edited = tmp_path / "edited.yaml"
        edited.write_text(yaml.safe_dump(raw))
        refused = subprocess.run(
            [*run, str(edited)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
        )
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "training epochs: 2 -> 3" in refused.stderr
        assert "training eps: 0.1 -> 0.2" in refused.stderr

        journal = JournalStorage(JournalFileBackend(str(storage / SWEEP / "optuna.journal")))
        study = optuna.load_study(study_name=SWEEP, storage=journal)
        running = study.get_trials(states=[optuna.trial.TrialState.RUNNING])
        cut_off = sum("folder" in t.user_attrs for t in running)  # started in Tune
        with (tmp_path / "second.log").open("w") as log:
            again = subprocess.Popen(
                [*run, str(config), "--num-trials", str(NUM_TRIALS + 1)], cwd=REPO, env=env,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            try:
                assert again.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()
            finally:
                kill_session(again.pid)
    second_log = (tmp_path / "second.log").read_text()
    assert "resuming sweep 'demo'" in second_log
    if cut_off:
        assert f"{cut_off} cut-off trial(s) queued to run again" in second_log
    assert_complete_sweep(storage, NUM_TRIALS + 1)  # the larger budget extends the sweep
    after = trial_files(storage)
    assert {name: after[name] for name in before} == before, "a finished trial was re-run"
    now = read_trials(str(storage), SWEEP).set_index("trial_id")["written_at"]
    assert (now[written_at.index] == written_at).all()


@contextmanager
def head_node(ray_tmp: Path, env: dict[str, str]) -> Iterator[str]:
    """A one-node cluster (2 CPUs, dashboard with its job server) on free ports; yields the
    dashboard address. Stopped on exit by killing its session (see the module docstring)."""
    gcs, dashboard, client, agent = free_ports(4)
    start = subprocess.Popen(
        [
            str(VENV_BIN / "ray"), "start", "--head", "--port", str(gcs), "--num-cpus", "2",
            "--include-dashboard", "true", "--dashboard-port", str(dashboard),
            "--ray-client-server-port", str(client), "--dashboard-agent-listen-port", str(agent),
            "--temp-dir", str(ray_tmp), "--disable-usage-stats",
        ],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = start.communicate(timeout=180)
        assert start.returncode == 0, output
        yield f"http://127.0.0.1:{dashboard}"
    finally:
        start.kill()
        kill_session(start.pid, grace_s=10)
        assert not processes_mentioning(str(ray_tmp)), "the test cluster outlived its stop"


@pytest.mark.slow  # about 1-2 min on 2 shared cores
def test_job_submission_runs_the_sweep_on_a_cluster(tmp_path: Path) -> None:
    """Token auth, as a real cluster should run: the mode is set explicitly and a fresh token
    goes to the cluster (RAY_AUTH_TOKEN) and to the client (Authorization header), so neither
    ~/.ray/auth_token nor this process's Ray settings matter."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobStatus, JobSubmissionClient

    storage = tmp_path / "results"  # absolute: the job runs in an unpacked copy of REPO
    config = tiny_demo(tmp_path)
    token = secrets.token_hex(32)
    env = base_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    with short_temp_dir("cs-job-") as ray_tmp, head_node(ray_tmp, env) as address:
        with pytest.raises(AuthenticationError, match="Invalid authentication token"):
            JobSubmissionClient(address, headers={"Authorization": "Bearer wrong"})
        client = JobSubmissionClient(address, headers={"Authorization": f"Bearer {token}"})
        job = client.submit_job(
            entrypoint=f"python -m sweeps run {config} --storage {storage}",
            runtime_env={
                "working_dir": str(REPO),
                # .git and .venv are excluded by default since Ray 2.60 (said again here in
                # case RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES is set); .gitignore'd files
                # are skipped; sweeps-results is the demo's default local storage.
                "excludes": [".git", ".venv", "sweeps-results"],
            },
        )
        terminal = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
        wait_for(lambda: client.get_job_status(job) in terminal, 300, f"job {job} to end")
        logs = client.get_job_logs(job)
        assert client.get_job_status(job) == JobStatus.SUCCEEDED, logs
        uploaded = list((ray_tmp / "session_latest" / "runtime_resources").rglob("driver.py"))
        assert uploaded, "the working dir was not unpacked on the node"
        package = uploaded[0].parents[1]
        assert (package / "sweeps" / "configs" / "demo.yaml").is_file()
        assert not (package / ".git").exists() and not (package / ".venv").exists()
    assert f"results (Parquet): {storage}/{SWEEP}/trials" in logs
    assert_complete_sweep(storage)
