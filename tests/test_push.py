"""Pushing the best model to the Hugging Face Hub: checked before any compute (one line, exit 2),
uploaded through huggingface_hub's real client, a failure that loses nothing (exit 1, recorded),
and a later push of a finished run. The Hub itself cannot exist here: ``FakeHub`` is a local HTTP
server speaking the few endpoints that ``create_repo`` + ``upload_folder`` call (with hf_xet
installed, huggingface_hub 2.4 uploads through its pipelined path: preupload, then ndjson commits).
The fake answers "regular" for every file, so contents travel base64 inside the commit (the real
Hub sends large binaries through xet storage, which is hf_xet's job and not faked here)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from trex_ray.config import dump_config, load_config

REPO = Path(__file__).resolve().parents[1]
TOKEN = "hf_testtoken_do_not_log_0123456789"


class FakeHub:
    """A local stand-in for the Hub's API: records repo creations, auth headers and committed
    files (decoded); ``fail_commit`` makes commits answer 403 like a read-only token."""

    def __init__(self) -> None:
        self.repos: dict[str, dict] = {}
        self.files: dict[str, dict[str, bytes]] = {}
        self.auth: set[str] = set()
        self.unexpected: list[str] = []
        self.cards: list[str] = []
        self.fail_commit = False
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # noqa: ANN002 - keep pytest output clean
                pass

            def _reply(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hub.auth.add(self.headers.get("Authorization", ""))
                parts = self.path.split("?")[0].strip("/").split("/")
                if parts[:3] == ["api", "repos", "create"]:
                    req = json.loads(body)
                    repo = f"{req['organization']}/{req['name']}"
                    hub.repos[repo] = req
                    hub.files.setdefault(repo, {})
                    return self._reply(200, {"url": f"{hub.url}/{repo}", "name": repo})
                if parts == ["api", "validate-yaml"]:  # the client checks the card's front matter first
                    hub.cards.append(json.loads(body)["content"])
                    front = hub.cards[-1].split("---")[1] if hub.cards[-1].startswith("---") else ""
                    ok = isinstance(yaml.safe_load(front), dict)
                    return self._reply(200 if ok else 400, {"errors": [] if ok else [{"message": "bad metadata"}]})
                if parts[:2] == ["api", "models"] and len(parts) == 6 and parts[4] == "preupload":
                    files = json.loads(body)["files"]
                    return self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                        "shouldIgnore": False, "oid": None} for f in files]})
                if parts[:2] == ["api", "models"] and len(parts) == 6 and parts[4] == "commit":
                    repo = f"{parts[2]}/{parts[3]}"
                    if hub.fail_commit:
                        return self._reply(403, {"error": "You don't have the rights to create a commit in this repo"})
                    for line in body.splitlines():
                        item = json.loads(line)
                        if item["key"] == "file":
                            v = item["value"]
                            hub.files[repo][v["path"]] = base64.b64decode(v["content"])
                        elif item["key"] != "header":
                            hub.unexpected.append(f"commit item {item['key']}")
                    return self._reply(200, {"commitUrl": f"{hub.url}/{repo}/commit/{'a' * 40}", "commitOid": "a" * 40})
                hub.unexpected.append(f"POST {self.path}")
                return self._reply(404, {"error": "not found"})

            def do_GET(self) -> None:  # noqa: N802
                if not self.path.startswith("/api/agent-harnesses"):  # the client's daily user-agent lookup
                    hub.unexpected.append(f"GET {self.path}")
                self._reply(404, {"error": "Repository not found"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def hub():
    h = FakeHub()
    yield h
    h.close()


def hub_env(hub: FakeHub | None, **extra: str) -> dict[str, str]:
    """The environment of a subprocess that talks to ``hub`` with ``TOKEN``."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update({"HF_TOKEN": TOKEN, "HF_HUB_DISABLE_TELEMETRY": "1", **extra})
    if hub is not None:
        env["HF_ENDPOINT"] = hub.url
    return env


def _plan(direction: str, training: dict | None) -> dict:
    return {"direction": direction, "training": training, "recipe": {"steps": [
        {"op": "load"}, {"op": "format", "prompt": "{input}", "completion": "{reference}"}]}}


@pytest.fixture()
def finished_run(tiny_model_dir, tmp_path) -> Path:
    """A finished run directory as run_search leaves it: config.yaml, summary.json and best/
    (the tiny model's weights and tokenizer, plus the real model card)."""
    from ftbench.tasks import get_task
    from test_core import build
    from trex_ray.report.hub import write_model_card

    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    cfg = load_config(None, [f"--model.name_or_path={tiny_model_dir}", "--run.run_id=r1"])
    (run_dir / "config.yaml").write_text(dump_config(cfg))
    shutil.copytree(tiny_model_dir, run_dir / "best")
    tree = build([{"type": "node_planned", "node_id": "n0", "parent_id": None, "plan": _plan("baseline", None)},
                  {"type": "node_finished", "node_id": "n0", "score": 0.5, "metrics": {}},
                  {"type": "node_planned", "node_id": "n1", "parent_id": "n0", "plan": _plan("method", {"method": "full"})},
                  {"type": "node_finished", "node_id": "n1", "score": 0.75, "metrics": {}}])
    summary = {"best_node": "n1", "trials": 1, "base_score": 0.5, "best_score": 0.75,
               "base_test_score": 0.5, "best_test_score": 0.7, "run_dir": str(run_dir)}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    write_model_card(run_dir, cfg, get_task("sst2"), tree, summary)
    return run_dir


def push_later(run_dir: Path, repo: str, env: dict, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trex_ray", "push", str(run_dir), "--push-to-hub", repo, *extra],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def assert_uploaded(hub: FakeHub, repo: str, best_dir: Path) -> None:
    """The Hub holds exactly best/'s files, byte for byte, uploaded with the token."""
    local = {str(p.relative_to(best_dir)): p.read_bytes() for p in best_dir.rglob("*") if p.is_file()}
    assert sorted(hub.files[repo]) == sorted(local)
    assert all(hub.files[repo][k] == v for k, v in local.items())
    assert "README.md" in hub.files[repo] and any(k.endswith(".safetensors") for k in hub.files[repo])
    assert hub.auth == {f"Bearer {TOKEN}"} and not hub.unexpected


def test_push_later_uploads_best_and_its_card(hub, finished_run):
    r = push_later(finished_run, "someone/tiny-sst2", hub_env(hub))
    assert r.returncode == 0, r.stdout + r.stderr
    assert_uploaded(hub, "someone/tiny-sst2", finished_run / "best")
    assert hub.repos["someone/tiny-sst2"]["visibility"] == "private"  # run.hub_private defaults to True
    card = hub.files["someone/tiny-sst2"]["README.md"].decode()
    assert hub.cards == [card]  # the front matter was validated before the upload
    assert card.startswith("---\nbase_model: ") and "## Lineage from the base model" in card and "0.7500" in card
    summary = json.loads((finished_run / "summary.json").read_text())
    assert summary["push"]["status"] == "pushed" and summary["push"]["repo"] == "someone/tiny-sst2"
    assert sorted(summary["push"]["files"]) == sorted(hub.files["someone/tiny-sst2"])
    assert summary["best_score"] == 0.75  # the rest of the summary is kept
    assert TOKEN not in r.stdout + r.stderr + (finished_run / "summary.json").read_text()


def test_push_later_public_and_merged_folder(hub, finished_run, tiny_model_dir):
    shutil.copytree(tiny_model_dir, finished_run / "best" / "merged")  # run.export_merged's folder goes too
    r = push_later(finished_run, "org/tiny-merged", hub_env(hub), "--public")
    assert r.returncode == 0, r.stderr
    assert hub.repos["org/tiny-merged"]["visibility"] == "public"
    assert_uploaded(hub, "org/tiny-merged", finished_run / "best")
    assert "merged/config.json" in hub.files["org/tiny-merged"]


def test_failed_push_loses_nothing_and_says_how_to_retry(hub, finished_run):
    hub.fail_commit = True
    before = {p: p.read_bytes() for p in (finished_run / "best").rglob("*") if p.is_file()}
    r = push_later(finished_run, "someone/tiny-sst2", hub_env(hub))
    assert r.returncode == 1, r.stdout + r.stderr
    (line,) = [l for l in r.stderr.splitlines() if l.startswith("error: ")]
    assert "push to the Hub repo someone/tiny-sst2 failed" in line and "403" in line
    assert f"results are safe in {finished_run}" in line
    assert f"python -m trex_ray push {finished_run} --push-to-hub someone/tiny-sst2" in line
    summary = json.loads((finished_run / "summary.json").read_text())
    assert summary["push"]["status"] == "failed" and "403" in summary["push"]["error"]
    assert {p: p.read_bytes() for p in (finished_run / "best").rglob("*") if p.is_file()} == before
    assert TOKEN not in r.stdout + r.stderr + (finished_run / "summary.json").read_text()
    # the retry the message suggests works once the Hub accepts the commit
    hub.fail_commit = False
    assert push_later(finished_run, "someone/tiny-sst2", hub_env(hub)).returncode == 0
    assert json.loads((finished_run / "summary.json").read_text())["push"]["status"] == "pushed"


def test_push_later_rejects_bad_input(finished_run, tmp_path):
    r = push_later(tmp_path, "someone/x", hub_env(None))
    assert r.returncode == 2 and "is not a finished TREX-Ray run" in r.stderr
    r = push_later(finished_run, "someone/x", hub_env(None, HF_HUB_OFFLINE="1"))
    assert r.returncode == 2 and "HF_HUB_OFFLINE=1 is set" in r.stderr
    assert "push" not in json.loads((finished_run / "summary.json").read_text())


def launch(*args: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "launch.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, env, message", [
    (["--push-to-hub", "bad//id"], {}, "push to hub: bad repo id 'bad//id'"),
    (["--run.push_to_hub=user/a--b"], {}, "Cannot have -- or .. in repo_id"),
    (["--push-to-hub", "user/ok"], {"HF_TOKEN": ""}, "needs a token in the environment variable HF_TOKEN"),
    (["--push-to-hub", "user/ok", "--run.hub_token_env=MY_HUB_TOKEN"], {},
     "needs a token in the environment variable MY_HUB_TOKEN"),
    (["--push-to-hub", "user/ok"], {"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE=1 is set"),
    (["--run.tracker=[mlflow,nope]"], {}, "config run.tracker"),
])
def test_push_inputs_are_checked_before_any_compute(tiny_model_dir, tmp_path, args, env, message):
    r = launch(f"--model.name_or_path={tiny_model_dir}", *args, cwd=tmp_path, env=hub_env(None, **env))
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert "Traceback" not in r.stdout + r.stderr and TOKEN not in r.stdout + r.stderr
    assert not (tmp_path / "runs").exists()  # nothing was started or written


def test_push_flag_sets_the_config_field_and_resume_refuses_it(tmp_path):
    r = launch("--resume", str(tmp_path), "--push-to-hub", "user/x", cwd=tmp_path, env=hub_env(None))
    assert r.returncode == 2 and "python -m trex_ray push RUN_DIR --push-to-hub REPO" in r.stderr
    assert load_config(None, ["--run.push_to_hub=user/x"]).run.push_to_hub == "user/x"
    assert load_config(None, []).run.push_to_hub is None and load_config(None, []).run.hub_private
