"""Checks that need more than the config itself, made before a run starts.

``load_config`` checks what a training config says on its own. What depends on the machine
or on other files is checked here, by the CLIs, before anything trains: the device exists on
this machine, the dataset's files are where the loader looks, and ``teacher.name`` resolves
in the teacher registry (which imports the config module, so the config cannot ask it).
Each check returns a message naming the key, or None.
"""

from __future__ import annotations

from pathlib import Path

from trainables.config import TrainConfig


def device_problem(device: str) -> str | None:
    """Why ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``) is not on this machine."""
    if device in ("auto", "cpu"):
        return None
    import torch

    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.partition(":")[2] or 0)
        if index < count:
            return None
        have = f"{count} CUDA device(s): cuda:0 to cuda:{count - 1}" if count else "no CUDA device"
        return f"device={device!r}: this machine has {have} (device: auto picks what there is)"
    if device == "mps" and not torch.backends.mps.is_available():
        return "device='mps': this machine has no MPS device (device: auto picks what there is)"
    return None


def data_problem(config: TrainConfig) -> str | None:
    """Why the dataset's files are not where ``load_dataset`` will look, on this machine."""
    from trainables.data import find_missing

    data = config.dataset
    missing = find_missing(data.name, data.root, download=data.download)
    return None if missing is None else f"dataset.name={data.name!r}: {missing}"


def teacher_problem(config: TrainConfig) -> str | None:
    """Why ``teacher.name`` does not resolve to a usable teacher (before any training).

    Recipes are validated as training configs when resolved; a trained network's model and
    options are built (on the meta device) for the student's data, and a local checkpoint
    file must exist (remote URIs are read when the teacher loads).
    """
    if config.teacher.name == "none":
        return None
    from trainables.data import dataset_shape
    from trainables.models import check_model
    from trainables.teachers.registry import TeacherError, resolve_teacher

    try:
        spec = resolve_teacher(config)
        if spec.recipe is None:
            input_shape, num_classes = dataset_shape(config.dataset.name, **config.dataset.options)
            check_model(spec.model, input_shape, num_classes, **spec.options)
            local = _local_path(spec.location)
            if local is not None and not local.is_file():
                return (
                    f"teacher.name={spec.name!r} ({spec.source}): checkpoint {local} does not exist"
                )
    except TeacherError as err:
        return f"teacher.name: {err}"
    except ValueError as err:
        return f"teacher.name={config.teacher.name!r} ({spec.source}): {err}"
    return None


def _local_path(location: str) -> Path | None:
    if location.startswith("file://"):
        return Path(location.removeprefix("file://"))
    return None if "://" in location else Path(location).expanduser()


def preflight(config: TrainConfig) -> list[str]:
    """Every problem of running ``config`` on this machine now (empty: good to go)."""
    checks = (device_problem(config.device), data_problem(config), teacher_problem(config))
    return [problem for problem in checks if problem is not None]
