"""The FT-Bench task definitions, by id."""

from __future__ import annotations

from ftbench.task import Task
from ftbench.tasks.aci_bench import ACI_BENCH
from ftbench.tasks.cs_bench import CS_BENCH
from ftbench.tasks.econlogicqa import ECONLOGICQA
from ftbench.tasks.gta import GTA
from ftbench.tasks.hoc import HOC
from ftbench.tasks.lawbench import LAWBENCH
from ftbench.tasks.omebench import OMEBENCH
from ftbench.tasks.openfindata import OPENFINDATA
from ftbench.tasks.sst2 import SST2
from ftbench.tasks.tomg_bench import TOMG_BENCH

TASKS: dict[str, Task] = {
    t.id: t
    for t in (ACI_BENCH, TOMG_BENCH, OMEBENCH, HOC, SST2, CS_BENCH, OPENFINDATA, ECONLOGICQA, GTA, LAWBENCH)
}
# Tasks whose data the shared FT-Bench folder holds (the other three are only on hubs/releases).
LOCAL_TASKS = ("aci_bench", "tomg_bench", "omebench", "hoc", "sst2", "cs_bench", "lawbench")


def get_task(task_id: str) -> Task:
    try:
        return TASKS[task_id]
    except KeyError:
        raise KeyError(f"unknown FT-Bench task {task_id!r}; known: {', '.join(sorted(TASKS))}") from None
