"""Where a sweep's files live, and writing them so that no reader ever sees half a file.

A storage location is a local path or a URI: pyarrow's own schemes (``file://``, ``s3://``,
``gs://``, ``hdfs://``, ``mock://``) and, as a fallback, any fsspec scheme (``memory://``,
``az://``, ...) wrapped in ``pyarrow.fs.PyFileSystem``. A sweep lives at
``<storage>/<sweep>/``.

Atomic writes: a file is written under a hidden temporary name in its directory and then
moved over its final name, so a crash (or a full disk) leaves either the old file or the new
one, never a partial one; on object stores the move is a copy, which is atomic per object.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq


class StorageError(OSError):
    """A storage location cannot be used; the message names the path and why."""


def is_uri(storage: str) -> bool:
    """``scheme://...``, ``file://`` included (opened through pyarrow's filesystems)."""
    return "://" in storage


def is_remote(storage: str) -> bool:
    """A URI other than ``file://``: a remote or in-memory filesystem (no local locks,
    no local folder to share)."""
    return is_uri(storage) and not storage.startswith("file://")


def absolute_storage(storage: str) -> str:
    """``storage`` as a location that means the same from any working directory: URIs stay
    as they are (without a trailing slash), local paths become absolute."""
    if is_uri(storage):
        return storage.rstrip("/")
    return os.path.abspath(os.path.expanduser(storage))


def open_storage(
    storage: str, filesystem: pafs.FileSystem | None = None
) -> tuple[pafs.FileSystem, str]:
    """The filesystem and base path of ``storage`` (a local path or a URI).

    With ``filesystem`` given, ``storage`` is a path inside it (needed for filesystems that
    cannot be reopened from a URI, e.g. a ``mock://`` one shared with a reader).
    """
    if filesystem is not None:
        return filesystem, storage.rstrip("/")
    location = absolute_storage(storage)
    try:
        fs, path = pafs.FileSystem.from_uri(location)
    except pa.ArrowInvalid:
        if not is_uri(location):
            raise
        import fsspec.core  # only for schemes pyarrow lacks

        handler, path = fsspec.core.url_to_fs(location)
        fs = pafs.PyFileSystem(pafs.FSSpecHandler(handler))
    return fs, path.rstrip("/")


def exists(filesystem: pafs.FileSystem, path: str) -> bool:
    return filesystem.get_file_info(path).type != pafs.FileType.NotFound


def _write_then_move(
    filesystem: pafs.FileSystem, directory: str, name: str, write: Callable[[str], None]
) -> str:
    temporary = f"{directory}/.{name}.{uuid.uuid4().hex}.tmp"
    filesystem.create_dir(directory, recursive=True)
    try:
        write(temporary)
        filesystem.move(temporary, f"{directory}/{name}")
    except BaseException:
        if exists(filesystem, temporary):
            filesystem.delete_file(temporary)
        raise
    return f"{directory}/{name}"


def write_atomic(filesystem: pafs.FileSystem, directory: str, name: str, table: pa.Table) -> str:
    """Write ``table`` as the Parquet file ``directory/name`` atomically (see the module
    docstring), replacing an earlier one; returns its path."""
    return _write_then_move(
        filesystem, directory, name, lambda path: pq.write_table(table, path, filesystem=filesystem)
    )


def write_bytes_atomic(filesystem: pafs.FileSystem, directory: str, name: str, data: bytes) -> str:
    """Write ``data`` as ``directory/name`` atomically; returns its path."""

    def write(path: str) -> None:
        with filesystem.open_output_stream(path) as stream:
            stream.write(data)

    return _write_then_move(filesystem, directory, name, write)


def copy_atomic(
    source: str | os.PathLike[str], filesystem: pafs.FileSystem, directory: str, name: str
) -> str:
    """Copy the local file ``source`` to ``directory/name`` atomically, checking its size
    (a full disk must not leave a short copy under the final name); returns its path."""
    size = os.path.getsize(source)

    def copy(path: str) -> None:
        pafs.copy_files(
            str(source),
            path,
            source_filesystem=pafs.LocalFileSystem(),
            destination_filesystem=filesystem,
        )
        copied = filesystem.get_file_info(path).size
        if copied != size:
            raise OSError(f"copying {source} to {path} wrote {copied} of {size} bytes")

    return _write_then_move(filesystem, directory, name, copy)


def set_aside(filesystem: pafs.FileSystem, path: str) -> str:
    """Rename a damaged file out of the readers' way (``<name>.damaged-<UTC time>``)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    target = f"{path}.damaged-{stamp}"
    filesystem.move(path, target)
    return target


def check_writable(storage: str, sweep: str) -> None:
    """Create ``<storage>/<sweep>/`` and write and delete a probe file there; a
    ``StorageError`` naming the path and the reason when that fails (read-only folder, a
    path that is a file, no permission, unknown scheme, ...)."""
    where = f"{absolute_storage(storage)}/{sweep}"
    try:
        filesystem, root = open_storage(storage)
        directory = f"{root}/{sweep}"
        for path, shown in ((root, absolute_storage(storage)), (directory, where)):
            if filesystem.get_file_info(path).type == pafs.FileType.File:
                raise StorageError(f"the storage {shown} is a file, not a folder")
        probe = write_bytes_atomic(filesystem, directory, ".write-probe", b"certsweep")
        filesystem.delete_file(probe)
    except StorageError:
        raise
    except (OSError, pa.ArrowException) as err:
        raise StorageError(f"cannot write the sweep's results to {where}: {err}") from None


@dataclass(frozen=True)
class SweepLocation:
    """One sweep: its filesystem, the storage path inside it, its name and a printable URI."""

    filesystem: pafs.FileSystem
    storage: str
    sweep: str
    uri: str

    @property
    def path(self) -> str:
        """``<storage>/<sweep>`` inside ``filesystem``."""
        return f"{self.storage}/{self.sweep}"

    def exists(self, relative: str) -> bool:
        return exists(self.filesystem, f"{self.path}/{relative}")

    @classmethod
    def of(
        cls, storage: str, sweep: str, filesystem: pafs.FileSystem | None = None
    ) -> SweepLocation:
        fs, root = open_storage(storage, filesystem)
        return cls(fs, root, sweep, f"{storage.rstrip('/')}/{sweep}")


class SweepNotFoundError(FileNotFoundError):
    """A location holds no sweep results."""


def find_sweeps(path_or_uri: str, filesystem: pafs.FileSystem | None = None) -> list[SweepLocation]:
    """The sweep at ``path_or_uri`` (a folder with ``trials/``), else the sweeps directly
    below it (a storage folder), by name."""
    fs, path = open_storage(path_or_uri, filesystem)
    uri = path_or_uri.rstrip("/")
    parent, _, name = path.rpartition("/")
    here = SweepLocation(fs, parent, name, uri)
    if here.exists("trials"):
        return [here]
    children = []
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        for info in fs.get_file_info(pafs.FileSelector(path)):
            child = SweepLocation(fs, path, info.base_name, f"{uri}/{info.base_name}")
            if info.type == pafs.FileType.Directory and child.exists("trials"):
                children.append(child)
    if not children:
        raise SweepNotFoundError(
            f"no sweep results at {uri}: expected {uri}/trials/*.parquet, or sweep folders"
            " with a trials/ folder below it"
        )
    return sorted(children, key=lambda location: location.sweep)
