"""Bad input for a task without a train split, through launch.py: one ``error:`` line naming what
to provide, exit 2, before Ray starts and with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_cli import launch
from test_notrain import FIXTURES, cs_row, write_jsonl


@pytest.fixture
def folders(tmp_path) -> dict[str, Path]:
    cs = tmp_path / "cs_bench"
    write_jsonl(cs / "dev.jsonl", [cs_row(i, "dev") for i in range(6)])
    write_jsonl(cs / "test.jsonl", [cs_row(i, "test") for i in range(6)])
    law = tmp_path / "lawbench"  # 20 items of one sub-task: too few to carve a dev slice and keep a test split
    write_jsonl(law / "test.jsonl", [{"id": f"1-2/{i}", "task_id": "1-2", "instruction": "选择正确答案。",
                                      "prompt": f"选择正确答案。\n问题{i}", "reference": "A"} for i in range(20)])
    return {"cs": cs, "law": law}


def one_error_line(r, tmp_path: Path) -> str:
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert not (tmp_path / "runs").exists()  # nothing was started or written
    return lines[0]


def test_no_train_split_and_nothing_to_build_from(tmp_path, folders):
    line = one_error_line(launch("--task.name=cs_bench", f"--task.data_dir={folders['cs']}", cwd=tmp_path), tmp_path)
    assert line == ("error: task cs_bench has no train split: give task.extra_sources with files or folders whose "
                    "rows have the columns prompt, reference (or one unambiguous synonym of each, e.g. question/answer), "
                    "or set llm.base_url and llm.model to synthesise examples from its dev split")


def test_extra_sources_that_do_not_fit_are_named(tmp_path, folders):
    bad = write_jsonl(tmp_path / "qa.jsonl", [{"instruction": "x", "question": "y", "answer": "z"}])
    r = launch("--task.name=cs_bench", f"--task.data_dir={folders['cs']}",
               f"--task.extra_sources=[{bad},{FIXTURES / 'law_cases.jsonl'}]", cwd=tmp_path)
    line = one_error_line(r, tmp_path)
    assert line.startswith("error: task cs_bench has no train split and no extra source fits it (qa: lacks prompt "
                           "(instruction and question could each be it); law_cases: its rows are unrelated to the task's")
    assert line.endswith("or set llm.base_url and llm.model to synthesise examples from its dev split")


def test_a_missing_extra_source_is_named(tmp_path, folders):
    r = launch("--task.name=cs_bench", f"--task.data_dir={folders['cs']}", "--task.extra_sources=[/no/such/data]",
               cwd=tmp_path)
    assert one_error_line(r, tmp_path) == "error: task.extra_sources: /no/such/data not found"


def test_too_few_rows_for_a_dev_slice(tmp_path, folders):
    r = launch("--task.name=lawbench", f"--task.data_dir={folders['law']}",
               f"--task.extra_sources=[{FIXTURES / 'law_cases.jsonl'}]", cwd=tmp_path)
    line = one_error_line(r, tmp_path)
    assert "task lawbench: its test split has only 20 rows with task_id 1-2, too few to carve" in line
    assert "provide a dev split for task lawbench" in line


def test_a_fitting_source_passes_preflight(folders):
    """The same inputs with a source that fits: the run would start (the checks, not the search)."""
    from trex_ray.config import load_config
    from trex_ray.run import preflight

    cfg = load_config(None, ["--task.name=cs_bench", f"--task.data_dir={folders['cs']}",
                             f"--task.extra_sources=[{FIXTURES}]"])
    _, spec = preflight(cfg)
    assert spec.train_rows == 0 and spec.dev_rows == 6 and not spec.synthesis
    # the CS questions fit (answer -> reference) and read like the task; the law cases fit the
    # columns but share next to nothing with it
    by = {s.name: s for s in spec.sources}
    assert by["cs_questions"].rename == {"answer": "reference"} and by["cs_questions"].relevance > 0.5
    assert not by["law_cases"].related
    assert json.loads(json.dumps(spec.columns)) == ["format", "id", "prompt", "reference"]
