"""One driver per sweep: an exclusive lock under ``<storage>/<sweep>/driver.lock``.

Two drivers on one sweep would both append trials to it (a configuration trained twice,
more rows than the budget). The lock file records who holds it (host, pid, start time), so
the second driver's refusal says whom to wait for.

- Local and shared filesystems: an ``flock`` on the file, held while the driver runs. The
  kernel (or the NFS server) releases it when the process ends, however it ends (``kill -9``
  included), so there is never a stale lock to clean up. The file stays; its content is
  informational.
- Object stores (``s3://``, ``gs://``, ...) have no locks: the driver writes the lock object
  and rewrites it every ``HEARTBEAT_S`` seconds; a lock not refreshed for ``STALE_S`` seconds
  (its driver died) is taken over, and ``break_lock`` takes it at once. Two drivers started
  within a second of each other can both win there (no atomic create-if-absent).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from trainables.results.storage import (
    absolute_storage,
    exists,
    is_remote,
    open_storage,
    write_bytes_atomic,
)

LOCK_NAME = "driver.lock"
HEARTBEAT_S = 30.0
STALE_S = 120.0


class SweepLockedError(RuntimeError):
    """Another driver runs this sweep; the message says who and what to do."""


def _holder() -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "heartbeat": time.time(),
    }


def _refusal(where: str, holder: dict[str, Any], how: str) -> SweepLockedError:
    who = (
        f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')},"
        f" started {holder.get('started', '?')}"
    )
    return SweepLockedError(f"another driver is running this sweep ({where}: {who}). {how}")


@contextmanager
def driver_lock(storage: str, sweep: str, *, break_lock: bool = False) -> Iterator[None]:
    """Hold the sweep's lock for the ``with`` block; ``SweepLockedError`` if another driver
    holds it (see the module docstring)."""
    if is_remote(storage):
        with _object_lock(storage, sweep, break_lock):
            yield
        return
    directory = os.path.join(absolute_storage(storage).removeprefix("file://"), sweep)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, LOCK_NAME)
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _refusal(
                path,
                _read_holder(os.pread(handle, 4096, 0)),
                "Wait for it to end or stop it; the lock is released when that process"
                " ends, however it ends.",
            ) from None
        os.ftruncate(handle, 0)
        os.pwrite(handle, json.dumps(_holder()).encode(), 0)
        yield
    finally:
        os.close(handle)  # releases the flock


def _read_holder(data: bytes) -> dict[str, Any]:
    try:
        holder = json.loads(data.decode())
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


@contextmanager
def _object_lock(storage: str, sweep: str, break_lock: bool) -> Iterator[None]:
    filesystem, root = open_storage(storage)
    directory = f"{root}/{sweep}"
    path = f"{directory}/{LOCK_NAME}"
    if exists(filesystem, path) and not break_lock:
        with filesystem.open_input_stream(path) as stream:
            holder = _read_holder(stream.readall())
        age = time.time() - float(holder.get("heartbeat", 0))
        if age < STALE_S:
            raise _refusal(
                f"{storage.rstrip('/')}/{sweep}/{LOCK_NAME}",
                holder,
                f"Wait for it to end; if it died, its lock expires {STALE_S:.0f} s after its"
                f" last heartbeat ({age:.0f} s ago), or pass --break-lock.",
            )
    holder = _holder()
    write_bytes_atomic(filesystem, directory, LOCK_NAME, json.dumps(holder).encode())
    stop = threading.Event()

    def ours() -> bool:  # not taken over (--break-lock) by another driver
        if not exists(filesystem, path):
            return False
        with filesystem.open_input_stream(path) as stream:
            found = _read_holder(stream.readall())
        return all(found.get(key) == holder[key] for key in ("host", "pid", "started"))

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S) and ours():
            holder["heartbeat"] = time.time()
            write_bytes_atomic(filesystem, directory, LOCK_NAME, json.dumps(holder).encode())

    thread = threading.Thread(target=beat, name="certsweep-lock-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        if ours():
            filesystem.delete_file(path)
