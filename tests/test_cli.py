"""Bad input fails fast, before Ray starts: one line naming the problem, exit 2, no traceback,
and nothing left behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def launch(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "launch.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture()
def data(tmp_path) -> dict[str, Path]:
    good = [{"id": str(i), "input": f"text {i}", "label": i % 2, "reference": ["negative", "positive"][i % 2]} for i in range(10)]
    d = tmp_path / "data"
    d.mkdir()
    return {
        "good": write(d / "good.jsonl", good),
        "nocol": write(d / "nocol.jsonl", [{"id": "1", "sentence": "x"}]),
        "empty": write(d / "empty.jsonl", []),
    }


@pytest.mark.parametrize("args, message", [
    (["--search.max_trail=3"], "unknown config key search.max_trail"),
    (["--bogus.key=1"], "unknown config key bogus"),
    (["--search.max_trials=abc"], "config search.max_trials: Input should be a valid integer"),
    (["--search.max_trials=0"], "config search.max_trials: Input should be greater than or equal to 1"),
    (["--model.name_or_path=/no/such/model"], "model path /no/such/model does not exist"),
    (["--task.train_path=/no/such.jsonl"], "train dataset file not found: /no/such.jsonl"),
    (["--task.name=nosuchtask"], "unknown FT-Bench task 'nosuchtask'"),
    (["--resume", "/tmp"], "not a TREX-Ray run directory"),
    (["--config", "/no/such.yaml"], "config file not found"),
    (["positional"], "unrecognised argument 'positional'"),
    # values no plan may hold: every expansion would fail after Ray started (search/limits.py)
    (["--train.num_epochs=100"], "config train.num_epochs: Input should be less than or equal to 50 for any plan"),
    (["--run.num_cpus=-4"], "config run.num_cpus: Input should be greater than or equal to 1"),
])
def test_bad_input_is_one_clear_line(tmp_path, args, message):
    r = launch(*args, cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert not (tmp_path / "runs").exists()  # nothing was started or written


@pytest.mark.parametrize("which, message", [
    ("nocol", "lacks column(s) input, label, reference"),
    ("empty", "the train split is empty"),
])
def test_bad_dataset_is_one_clear_line(tmp_path, data, which, message):
    r = launch(f"--task.train_path={data[which]}", cwd=tmp_path)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_non_model_folder_is_rejected(tmp_path):
    (tmp_path / "notamodel").mkdir()
    r = launch(f"--model.name_or_path={tmp_path / 'notamodel'}", cwd=tmp_path)
    assert r.returncode == 2 and "has no config.json" in r.stderr


def test_bad_yaml_types_and_keys(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("search:\n  max_trials: 3\n  exploration: high\n")
    r = launch("--config", str(cfg), cwd=tmp_path)
    assert r.returncode == 2 and "config search.exploration" in r.stderr
    cfg.write_text("- not\n- a mapping\n")
    r = launch("--config", str(cfg), cwd=tmp_path)
    assert r.returncode == 2 and "must hold a mapping" in r.stderr


def test_help_lists_every_option_with_its_default(tmp_path):
    from trex_ray.config import Config

    r = launch("--help", cwd=tmp_path)
    assert r.returncode == 0
    for section, field in Config.model_fields.items():
        for name, f in type(field.default_factory()).model_fields.items():
            assert f"--{section}.{name}=" in r.stdout
            assert f.description and f.description.split()[0] in r.stdout


def test_yaml_off_means_off_for_tool_calling(tmp_path):
    """YAML reads a bare `off` as false; `tool_calling: off` must still mean off."""
    from trex_ray.config import ConfigError, load_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text("llm:\n  tool_calling: off\n")
    assert load_config(cfg).llm.tool_calling == "off"
    assert load_config(None, ["--llm.tool_calling=off"]).llm.tool_calling == "off"
    assert load_config(None, []).llm.tool_calling == "auto"
    with pytest.raises(ConfigError, match="llm.tool_calling"):
        load_config(None, ["--llm.tool_calling=true"])
