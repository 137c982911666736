"""Which task a run targets, resolved in one place: the config's task section to the ftbench
``Task`` (parsing, metric, data loaders) that the driver checks and every worker scores with.

The driver resolves it once for its checks and the Researcher's ``TaskSpec``; a trial worker
resolves it once per trial from the same ``TaskConfig`` (a ``Task`` holds functions, so the
config, not the task, is what travels).
"""

from __future__ import annotations

from ftbench.task import Task
from ftbench.tasks import get_task
from trex_ray.config import ConfigError, TaskConfig
from trex_ray.search.request import TaskSpec


def resolve_task(cfg: TaskConfig) -> Task:
    """The ftbench task the config names; ConfigError for an unknown one."""
    try:
        return get_task(cfg.name)
    except KeyError as e:
        raise ConfigError(str(e.args[0])) from None


def task_spec(task: Task, train_rows: int, columns: list[str]) -> TaskSpec:
    """What the Researcher is told about ``task``, with the size and columns of its train split."""
    return TaskSpec(id=task.id, description=task.description, metric=task.metric,
                    higher_is_better=task.higher_is_better, prompt_template=task.prompt_template,
                    completion_template=task.completion_template, train_rows=train_rows,
                    columns=sorted(columns), metric_range=tuple(task.metric_range))
