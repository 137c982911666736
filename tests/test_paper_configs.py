"""Every ``cluster/configs/paper-<task>.yaml`` would start a real search: its pre-flight checks
pass on the data it names, with the configs' ``/data/ftbench`` read as this machine's FT-Bench
data (the shared folder; for OpenFinData, GTA and EconLogicQA, which it lacks, a folder in the
source's release layout grown from the test fixtures). The four tasks without a train split
build their rows from the extra sources and synthesis the configs name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from trex_ray.config import load_config
from trex_ray.run import preflight

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "ftbench"
CONFIGS = sorted((REPO / "cluster" / "configs").glob("paper-*.yaml"))
CLUSTER_ROOT = "/data/ftbench"
NO_TRAIN = {"cs_bench", "lawbench", "openfindata", "gta"}
NOT_SHARED = {"openfindata", "gta", "econlogicqa"}  # only on hubs / in release zips


def grow_release(folder: Path) -> None:
    """Release-layout copies of the three tasks the shared data lacks, large enough to carve their
    dev slices from: the fixtures' items repeated with distinct ids and questions."""
    ofd = folder / "openfindata"
    ofd.mkdir(parents=True)
    for f in (FIXTURES / "openfindata").glob("*.json"):
        items = json.loads(f.read_text(encoding="utf-8"))
        grown = [{**it, "question": f"{it['question']}（第{i}题）"} for i in range(70) for it in items]
        (ofd / f.name).write_text(json.dumps(grown, ensure_ascii=False), encoding="utf-8")
    gta = folder / "gta"
    gta.mkdir()
    base = json.loads((FIXTURES / "gta" / "dataset.json").read_text(encoding="utf-8"))
    grown = {}
    for i in range(30):
        for k, rec in base.items():
            rec = json.loads(json.dumps(rec))
            rec["dialogs"][0]["content"] += f" (case {i})"
            grown[f"{k}-{i}"] = rec
    (gta / "dataset.json").write_text(json.dumps(grown), encoding="utf-8")
    shutil.copytree(FIXTURES / "econlogicqa", folder / "econlogicqa")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """This machine's stand-in for the cluster's /data/ftbench: the shared data's task folders
    (linked) where they exist, and grown release copies of the other three."""
    from conftest import SHARED_DATA

    root = tmp_path_factory.mktemp("ftbench")
    grow_release(root)
    if SHARED_DATA.is_dir():
        for d in SHARED_DATA.iterdir():
            if d.is_dir():
                (root / d.name).symlink_to(d)
    return root


def here(value: str, root: Path) -> str:
    return str(root) + value[len(CLUSTER_ROOT):] if value.startswith(CLUSTER_ROOT) else value


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_a_paper_config_would_start(path, data_root):
    task_id = path.stem[len("paper-"):]
    if not (data_root / task_id).is_dir():
        pytest.skip(f"no local data for {task_id} (the shared FT-Bench folder is absent)")
    cfg = load_config(path)
    assert cfg.task.name == task_id and cfg.task.data_dir == f"{CLUSTER_ROOT}/{task_id}"
    t = cfg.task
    cfg = cfg.model_copy(update={"task": t.model_copy(update={
        "data_dir": here(t.data_dir, data_root), "extra_sources": [here(x, data_root) for x in t.extra_sources]})})
    task, spec = preflight(cfg)
    assert task.id == spec.id == task_id and spec.dev_rows > 0
    if task_id in NO_TRAIN:
        # no train split: the config names where rows come from, and the run can build them
        assert spec.train_rows == 0 and cfg.task.extra_sources == [str(data_root)]
        assert cfg.search.policy == "llm" and spec.synthesis
        # what fits are other tasks' training splits: never the task's own files, nor anyone's test set
        assert all(Path(s.source).stem == "train" and Path(s.source).parent.name != task_id for s in spec.sources)
    else:
        assert spec.train_rows > 0 and not spec.sources
