"""Experiment trackers: the sweep config's ``loggers`` switch on Ray Tune's own logger
callbacks, which send every trial's config and per-epoch metrics to MLflow, TensorBoard or
Weights & Biases from the driver.

    loggers:
      - mlflow                      # a name alone takes the defaults
      - {name: mlflow, tracking_uri: http://mlflow:5000, experiment_name: cifar-sweeps}
      - {name: tensorboard}
      - {name: wandb, project: certsweep, mode: offline}

One tracker run per trial, named like the trial (``<sweep>_<number>_<trial id>``), with the
sampled parameters as its params and one step per Tune report (one per epoch). The settings
are checked with the rest of the config: unknown keys, a tracker named twice, a package that
is not installed here (the callbacks run in the driver, the process of ``sweeps run``) and an
MLflow store that cannot be found from the driver are errors naming the key. Without
``tensorboard`` no TensorBoard files are written (Tune would write them into every trial
folder unasked); Tune's own ``result.json`` / ``progress.csv`` are always written.

The models here import neither Ray nor the trackers: ``callbacks`` does, when a sweep runs.
"""

from __future__ import annotations

import os
from importlib.util import find_spec
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

#: Set in the environment of a ``ray job submit`` entrypoint.
JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"

#: MLflow 3 refuses its file store unless this is set; a path given as ``tracking_uri``
#: asks for that store, so the driver sets it.
MLFLOW_FILE_STORE_ENV = "MLFLOW_ALLOW_FILE_STORE"
#: The default MLflow store, in the sweep's results folder (local storage only).
MLFLOW_DB = "mlflow.db"


class _Tracker(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: The module the callback needs, the pip package that has it, certsweep's extra.
    module: ClassVar[str]
    package: ClassVar[str]
    extra: ClassVar[str] = "certsweep[trackers]"

    @model_validator(mode="after")
    def _installed(self) -> _Tracker:
        if find_spec(self.module) is None:
            raise ValueError(
                f"the {self.name} logger needs the package {self.package!r}, which is not"
                f" installed here (the loggers run in the sweep's driver): pip install"
                f" '{self.extra}'"
            )
        return self


def _local_path(uri: str) -> str | None:
    """The filesystem path of an MLflow store on local files (a path, ``file:`` or
    ``sqlite:///``), else None (a tracking server, another database)."""
    if uri.startswith("sqlite:///"):
        return uri.removeprefix("sqlite:///")
    if uri.startswith("file:"):
        return uri.removeprefix("file:").removeprefix("//")
    return None if "://" in uri or uri.startswith("databricks") else uri


class MLflowTracker(_Tracker):
    """``ray.air.integrations.mlflow.MLflowLoggerCallback``."""

    module: ClassVar[str] = "mlflow"
    package: ClassVar[str] = "mlflow-skinny"
    name: Literal["mlflow"]
    tracking_uri: str | None = Field(
        None,
        description="a server (http://...), a database (sqlite:////abs/mlflow.db) or a path"
        " (MLflow's file store); default $MLFLOW_TRACKING_URI, else"
        " sqlite in <storage>/<sweep>/mlflow.db",
    )
    experiment_name: str | None = Field(None, description="default: the sweep's name")
    tags: dict[str, str] = Field(default_factory=dict, description="set on every run")
    save_artifact: bool = Field(False, description="upload each trial's Tune folder")

    def relative_path(self) -> str | None:
        """The store's path when it is a relative local one."""
        path = None if self.tracking_uri is None else _local_path(self.tracking_uri)
        return None if path is None or Path(path).expanduser().is_absolute() else path

    @model_validator(mode="after")
    def _absolute_store(self) -> MLflowTracker:
        """A relative store path is made absolute: it means the same from any working
        directory (``check_trackers`` refuses it under ``ray job submit``)."""
        path = self.relative_path()
        if path is not None and not os.environ.get(JOB_ENV):
            absolute = os.path.abspath(os.path.expanduser(path))
            self.tracking_uri = self.tracking_uri.replace(path, absolute, 1)
        return self

    def store(self, results: str) -> str:
        """The tracking URI the runs go to (``results``: the sweep's results folder)."""
        if self.tracking_uri is not None:
            return self.tracking_uri
        folder = results.removeprefix("file://")
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{folder}/{MLFLOW_DB}"

    def callback(self, sweep: str, experiment: str, results: str) -> Any:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        store = self.store(results)
        if _local_path(store) is not None and not store.startswith("sqlite:"):
            os.environ.setdefault(MLFLOW_FILE_STORE_ENV, "true")
        return MLflowLoggerCallback(
            tracking_uri=store,
            experiment_name=self.experiment_name or sweep,
            tags={"sweep": sweep, "tune_experiment": experiment, **self.tags},
            save_artifact=self.save_artifact,
        )


class TensorBoardTracker(_Tracker):
    """``ray.tune.logger.TBXLoggerCallback``: event files in every trial's Tune folder,
    ``<storage>/<sweep>/ray/<experiment>/<trial>/`` (``tensorboard --logdir`` the ``ray``
    folder)."""

    module: ClassVar[str] = "tensorboardX"
    package: ClassVar[str] = "tensorboardX"
    name: Literal["tensorboard"]

    def callback(self, sweep: str, experiment: str, results: str) -> Any:
        from ray.tune.logger import TBXLoggerCallback

        return TBXLoggerCallback()


class WandbTracker(_Tracker):
    """``ray.air.integrations.wandb.WandbLoggerCallback``; the API key comes from
    ``$WANDB_API_KEY``, ``wandb login`` or ``api_key_file``, never from the config."""

    module: ClassVar[str] = "wandb"
    package: ClassVar[str] = "wandb"
    extra: ClassVar[str] = "certsweep[wandb]"
    name: Literal["wandb"]
    project: str | None = Field(None, description="default: the sweep's name")
    entity: str | None = None
    group: str | None = Field(None, description="default: the Tune experiment's name")
    mode: Literal["online", "offline", "disabled"] = "online"
    dir: str | None = Field(None, description="wandb's local files (default: its own)")
    tags: list[str] = Field(default_factory=list)
    api_key_file: str | None = None
    log_config: bool = False

    def callback(self, sweep: str, experiment: str, results: str) -> Any:
        from ray.air.integrations.wandb import WandbLoggerCallback

        extra = {"entity": self.entity, "dir": self.dir}
        return WandbLoggerCallback(
            project=self.project or sweep,
            group=self.group or experiment,
            api_key_file=self.api_key_file,
            log_config=self.log_config,
            mode=self.mode,
            tags=self.tags or None,
            **{key: value for key, value in extra.items() if value is not None},
        )


def _by_name(value: Any) -> Any:
    """``mlflow`` is ``{name: mlflow}``."""
    return {"name": value} if isinstance(value, str) else value


Tracker = Annotated[
    Annotated[MLflowTracker | TensorBoardTracker | WandbTracker, Field(discriminator="name")],
    BeforeValidator(_by_name),
]


def check_trackers(trackers: list[Any], storage_is_uri: bool) -> None:
    """Rules across the list, the storage and the place the driver runs (raises
    ``ValueError``)."""
    names = [tracker.name for tracker in trackers]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"loggers: {', '.join(twice)} named more than once")
    for i, tracker in enumerate(trackers):
        if isinstance(tracker, MLflowTracker) and tracker.relative_path() is not None:
            raise ValueError(
                f"loggers.{i}.tracking_uri: {tracker.tracking_uri!r} is a relative path; under"
                " ray job submit it would land in the job's temporary working directory:"
                " give an absolute path or a tracking server"
            )
        if (
            isinstance(tracker, MLflowTracker)
            and tracker.tracking_uri is None
            and storage_is_uri
            and not os.environ.get("MLFLOW_TRACKING_URI")
        ):
            raise ValueError(
                f"loggers.{i}.tracking_uri: needed, as storage is a URI (the default MLflow"
                " store is a file in the sweep's results folder): name a tracking server or"
                " set $MLFLOW_TRACKING_URI"
            )


def callbacks(trackers: list[Any], sweep: str, experiment: str, results: str) -> list[Any]:
    """The Tune logger callbacks of ``trackers``, plus Tune's own CSV and JSON files."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    made = [tracker.callback(sweep, experiment, results) for tracker in trackers]
    return [CSVLoggerCallback(), JsonLoggerCallback(), *made]
