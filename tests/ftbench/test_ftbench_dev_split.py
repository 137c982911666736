"""Where dev comes from: the source's own dev split, else carved from train, else (no training
data, as LawBench) a fixed slice carved from test that every test score then leaves out."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest

from ftbench.metrics_lawbench import SCORERS
from ftbench.task import TaskDataError, declared_dev_source, dev_source, load_split, withheld_test_ids
from ftbench.tasks import TASKS, get_task

LAWBENCH = get_task("lawbench")


def write_lawbench(folder: Path, per_task: dict[str, int], dev: list[dict] | None = None, seed: int = 0) -> Path:
    """A LawBench folder in this package's schema: ``per_task[t]`` rows of each sub-task t, shuffled."""
    rows = [{"id": f"{t}/{i}", "task_id": t, "prompt": f"问题 {t} {i}", "reference": "A"}
            for t, n in per_task.items() for i in range(n)]
    random.Random(seed).shuffle(rows)
    folder.mkdir(parents=True)
    (folder / "test.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    if dev is not None:
        (folder / "dev.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in dev), encoding="utf-8")
    return folder


def ids(rows: list[dict]) -> list[str]:
    return [r["id"] for r in rows]


def test_lawbench_dev_is_a_stratified_slice_carved_out_of_test(tmp_path):
    paths = {"data_dir": str(write_lawbench(tmp_path / "lb", {t: 60 for t in SCORERS}))}
    dev, test = load_split(LAWBENCH, "dev", paths), load_split(LAWBENCH, "test", paths)
    assert dev_source(LAWBENCH, paths) == "test"
    assert len(dev) == 10 * len(SCORERS) == 200 and len(test) == 60 * len(SCORERS) - 200
    assert {t: sum(r["task_id"] == t for r in dev) for t in SCORERS} == {t: 10 for t in SCORERS}
    assert not set(ids(dev)) & set(ids(test))  # removed from test for good
    assert withheld_test_ids(LAWBENCH, paths) == frozenset(ids(dev))
    # dev comes round-robin over the sub-tasks: a dev limit still covers every one of them
    assert {r["task_id"] for r in load_split(LAWBENCH, "dev", paths, limit=20)} == set(SCORERS)


def test_the_slice_depends_on_the_ids_only(tmp_path):
    a = {"data_dir": str(write_lawbench(tmp_path / "a", {t: 60 for t in SCORERS}, seed=1))}
    b = {"data_dir": str(write_lawbench(tmp_path / "b", {t: 60 for t in SCORERS}, seed=2))}
    assert ids(load_split(LAWBENCH, "dev", a)) == ids(load_split(LAWBENCH, "dev", b))
    # a different task carving the same ids picks other rows: the hash is salted with the task id
    other = replace(LAWBENCH, id="lawbench_copy")
    assert set(ids(load_split(other, "dev", a))) != set(ids(load_split(LAWBENCH, "dev", a)))


def test_a_published_dev_split_is_used_and_test_kept_whole(tmp_path):
    dev = [{"id": "mine/0", "task_id": "1-2", "prompt": "问题", "reference": "A"}]
    paths = {"data_dir": str(write_lawbench(tmp_path / "lb", {t: 60 for t in SCORERS}, dev=dev))}
    assert dev_source(LAWBENCH, paths) == "published"
    assert ids(load_split(LAWBENCH, "dev", paths)) == ["mine/0"]
    assert len(load_split(LAWBENCH, "test", paths)) == 60 * len(SCORERS)
    assert withheld_test_ids(LAWBENCH, paths) == frozenset()


def test_too_few_test_rows_for_a_dev_slice_names_what_to_provide(tmp_path):
    sizes = {t: 60 for t in SCORERS} | {"2-1": 49}  # 10 dev rows need 50: 4 times as many stay in test
    paths = {"data_dir": str(write_lawbench(tmp_path / "lb", sizes))}
    with pytest.raises(TaskDataError) as e:
        load_split(LAWBENCH, "dev", paths)
    msg = str(e.value)
    assert "49 rows with task_id 2-1" in msg and "provide a dev split" in msg and "dev.jsonl" in msg
    # nothing is carved then: test is whole and nothing is withheld
    assert len(load_split(LAWBENCH, "test", paths)) == sum(sizes.values())
    assert withheld_test_ids(LAWBENCH, paths) == frozenset()


def test_tasks_with_training_data_still_carve_dev_from_train_only():
    sst2 = get_task("sst2")  # packaged sample: train + GLUE dev as test
    assert dev_source(sst2) == "train" and withheld_test_ids(sst2) == frozenset()
    train, dev, test = (load_split(sst2, s) for s in ("train", "dev", "test"))
    assert len(dev) == 500 and len(test) == 872
    assert not set(ids(dev)) & set(ids(train)) and not set(ids(dev)) & set(ids(test))


def test_too_small_train_for_a_dev_slice_names_what_to_provide(tmp_path):
    sst2 = get_task("sst2")
    rows = [{"id": f"t/{i}", "input": "good", "label": 1, "reference": "positive"} for i in range(4)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    paths = {"data_dir": str(tmp_path)}
    assert len(load_split(sst2, "train", paths)) == 4  # train stays usable
    with pytest.raises(TaskDataError, match="only 4 row.*provide a dev split"):
        load_split(sst2, "dev", paths)


def test_dev_is_never_carved_from_both():
    with pytest.raises(ValueError, match="not both"):
        replace(get_task("sst2"), dev_from_test=10)


def test_declared_dev_source_of_every_task():
    got = {t.id: declared_dev_source(t) for t in TASKS.values()}
    assert got == {
        "aci_bench": "published", "tomg_bench": "train", "omebench": "train", "hoc": "published",
        "sst2": "train", "cs_bench": "published", "openfindata": "test", "econlogicqa": "published",
        "gta": "test", "lawbench": "test",
    }
    # "published" always means the source has the split; test is carved only where there is no train
    for t in TASKS.values():
        assert (got[t.id] == "published") == ("dev" in t.source_splits)
        assert got[t.id] != "test" or "train" not in t.source_splits


def test_shared_lawbench_withholds_200_rows_from_test(shared_data):
    paths = {"data_dir": str(shared_data / "lawbench")}
    dev, test = load_split(LAWBENCH, "dev", paths), load_split(LAWBENCH, "test", paths)
    assert (len(dev), len(test)) == (200, 8800)  # the shared copy holds 450 of each sub-task's 500
    assert {r["task_id"] for r in dev} == set(SCORERS) and not set(ids(dev)) & set(ids(test))
