"""Which task a run targets, resolved in one place: the config's task section to the ftbench
``Task`` (parsing, metric, data loaders) that the driver checks and every worker scores with.

The task is an FT-Bench task (``task.name``) or the user's own (``task.file`` /
``task.definition``: a ``TaskFile`` that builds an ordinary ``Task``). The driver resolves it
once for its checks and the Researcher's ``TaskSpec``; a trial worker resolves it once per trial
from the same ``TaskConfig`` (a ``Task`` holds functions, so the config, not the task, is what
travels; a task file travels as its content, in ``task.definition``).
"""

from __future__ import annotations

import logging
from typing import Any

from ftbench.task import Task, TaskDataError, load_split
from ftbench.taskcheck import CheckReport, check_task_file
from ftbench.taskfile import TaskFileError, build_task, describe_answer
from ftbench.tasks import get_task
from trex_ray.config import ConfigError, TaskConfig
from trex_ray.search.request import TaskSpec

log = logging.getLogger(__name__)


def resolve_task(cfg: TaskConfig) -> Task:
    """The ftbench task the config names or defines; ConfigError for an unknown one."""
    tf = cfg.task_file()
    if tf is not None:
        return build_task(tf)
    try:
        return get_task(cfg.name)
    except KeyError as e:
        raise ConfigError(str(e.args[0])) from None


def check_task(cfg: TaskConfig) -> CheckReport | None:
    """A task file checked against its data (before anything runs); ConfigError with one line per
    problem. None for an FT-Bench task (its definition is the benchmark's)."""
    tf = cfg.task_file()
    if tf is None:
        return None
    try:
        report = check_task_file(tf)
    except TaskFileError as e:
        raise ConfigError(str(e), e.problems) from None
    log.info("task %s: %s rows (train after cleaning), dev %s", tf.id,
             ", ".join(f"{k} {v}" for k, v in report.rows.items()),
             "carved from train" if report.dev_carved else "as given")
    return report


def answer_format(cfg: TaskConfig) -> str | None:
    """The answer format in words for a task file's task; None for FT-Bench's (their description says it)."""
    tf = cfg.task_file()
    return None if tf is None else f"{tf.answer}: {describe_answer(tf)}"


def task_spec(task: Task, train_rows: int, columns: list[str], answer: str | None = None,
              **data: Any) -> TaskSpec:
    """What the Researcher is told about ``task``, with the size and columns of its train split
    (``data``: TaskSpec's sources, synthesis and dev_rows)."""
    return TaskSpec(id=task.id, description=task.description, metric=task.metric,
                    higher_is_better=task.higher_is_better, prompt_template=task.prompt_template,
                    completion_template=task.completion_template, train_rows=train_rows,
                    columns=sorted(columns), metric_range=tuple(task.metric_range), answer_format=answer, **data)


def train_split(task: Task, paths: dict[str, str | None]) -> list[dict] | None:
    """The task's train rows, or None when its data has no train split at all (TaskDataError for
    a split that exists but cannot be used)."""
    try:
        return load_split(task, "train", paths)
    except TaskDataError as e:
        if "no train split" in str(e):
            return None
        raise

