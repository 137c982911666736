"""No secret out. Fake keys are planted in every channel a real run has: the environment (the
LLM key, cloud keys for an S3 store, a Hub token), the LLM endpoint's errors (a fake server that
echoes the key it was sent, again and again, so that some copy straddles any length limit) and
storage errors; then every file the run wrote (its directory, Tune's trial folders with
params.json/params.pkl, MLflow's store, and every object in the bucket) and the console are
searched for any 8-character piece of any planted key."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BUCKET
from llm_helpers import fake_server, llm_cfg  # noqa: F401 - fixture

REPO = Path(__file__).resolve().parents[1]


def _planted() -> dict[str, str]:
    """A fake value for each kind of secret, unique to this test run."""
    rand = lambda n: secrets.token_hex(n)  # noqa: E731
    return {
        "TREX_TEST_LLM_KEY": f"sk-PLANTEDllm{rand(12)}",
        "AWS_ACCESS_KEY_ID": "AKIA" + rand(8).upper(),
        "AWS_SECRET_ACCESS_KEY": f"PLANTEDaws/{rand(14)}",
        "HF_TOKEN": f"hf_PLANTEDhf{rand(12)}",
        "MY_SERVICE_PASSWORD": f"PLANTEDpw-{rand(10)}",
    }


def _pieces(values: list[str], n: int = 8) -> set[str]:
    """Every n-character piece of every value: half a key is still a leak."""
    return {v[i:i + n] for v in values for i in range(len(v) - n + 1)}


def _leaks(data: bytes, pieces: set[str]) -> list[str]:
    text = data.decode("utf-8", errors="replace")
    return sorted(p for p in pieces if p in text)


# ---------------------------------------------------------------- the LLM client, alone
def test_llm_errors_are_scrubbed_before_they_are_cut(fake_server):
    """The endpoint's error quotes the key so that the 300-character cut falls inside it: the
    message keeps no piece of it (cutting first would leave half a key that no longer matches)."""
    from trex_ray.llm_client import LLMClient, LLMError

    key = f"sk-{secrets.token_hex(20)}"
    url, script = fake_server([400, 400])
    os.environ["TREX_TEST_KEY_CUT"] = key
    client = LLMClient(llm_cfg(url, api_key_env="TREX_TEST_KEY_CUT", max_retries=0))
    messages = []
    try:
        for _ in range(2):
            with pytest.raises(LLMError) as err:
                client.chat([{"role": "user", "content": "hi"}])
            messages.append(str(err.value))
            # where the endpoint's text starts in the error: pad it so the key straddles the cut
            prefix = messages[0].index("boom;") - messages[0].index("Error code")
            script.echo_pad = 300 - len(key) // 2 - prefix - len("boom; got Bearer ")
    finally:
        del os.environ["TREX_TEST_KEY_CUT"]
    assert script.auth == [f"Bearer {key}"] * 2  # the key did reach the endpoint
    assert messages[1].endswith("***") or "got Bearer ***" in messages[1], messages[1]
    assert not _leaks(" ".join(messages).encode(), _pieces([key], 6)), messages


def test_storage_errors_and_refusals_echo_no_secret(tmp_path):
    planted = _planted()
    env = {**os.environ, **planted, "PYTHONPATH": str(REPO)}
    cases = [
        # a storage error whose text would carry a secret (here: the path itself)
        [f"--run.storage=/proc/{planted['MY_SERVICE_PASSWORD']}/runs"],
        # credentials inside URLs: refused, and the refusal does not repeat them
        [f"--run.storage=s3://{planted['AWS_ACCESS_KEY_ID']}:{planted['AWS_SECRET_ACCESS_KEY']}@bucket/runs"],
        ["--search.policy=llm", "--llm.model=m", f"--llm.base_url=https://u:{planted['MY_SERVICE_PASSWORD']}@h/v1"],
        ["--resume", f"s3://{planted['AWS_ACCESS_KEY_ID']}:{planted['AWS_SECRET_ACCESS_KEY']}@bucket/runs/r1"],
        # a key pasted where its variable's NAME belongs
        ["--search.policy=llm", "--llm.model=m", "--llm.base_url=http://127.0.0.1:9/v1",
         f"--llm.api_key_env={planted['TREX_TEST_LLM_KEY']}"],
        [f"--run.hub_token_env={planted['HF_TOKEN']}"],
    ]
    pieces = _pieces(list(planted.values()))
    for args in cases:
        out_dir = [] if args[0] == "--resume" else [f"--run.output_dir={tmp_path}"]
        r = subprocess.run([sys.executable, str(REPO / "launch.py"), *out_dir, *args],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        out = r.stdout + r.stderr
        assert r.returncode == 2 and r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1, out
        assert not _leaks(out.encode(), pieces), (args, out)
        if "@" in " ".join(args):
            assert "credentials inside the URL are refused" in r.stderr and "***@" in r.stderr
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------- a real run
def _written(run: Path, fs, prefix: str) -> dict[str, bytes]:
    """Every file the run wrote: its directory (Tune's trial folders, the MLflow store...) and
    every object under its prefix in the bucket."""
    import pyarrow.fs as pafs

    files = {str(p): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for info in fs.get_file_info(pafs.FileSelector(prefix, recursive=True, allow_not_found=True)):
        if info.type == pafs.FileType.File:
            with fs.open_input_stream(info.path) as f:
                files[f"s3://{info.path}"] = f.read()
    return files


@pytest.mark.slow
def test_planted_keys_reach_no_file_and_no_console(s3, fake_server, tiny_model_dir, tmp_path):
    base, fs = s3
    planted = _planted()
    url, script = fake_server(lambda body: 500, echo_repeat=20)  # every LLM call fails, echoing the key
    args = [f"--model.name_or_path={tiny_model_dir}", f"--run.output_dir={tmp_path}", "--run.run_id=leak",
            f"--run.storage={base}", "--run.tracker=[tensorboard,mlflow]", "--search.max_trials=2",
            "--search.children_per_expansion=2", "--task.dev_limit=8", "--task.test_limit=8",
            "--train.method=full", "--train.train_samples=16", "--train.eval_batch_size=8",
            "--search.policy=llm", f"--llm.base_url={url}", "--llm.model=fake", "--llm.max_retries=0",
            "--llm.api_key_env=TREX_TEST_LLM_KEY", "--llm.structured_output=llama_cpp"]
    env = {**os.environ, **planted, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, str(REPO / "launch.py"), *args], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=900)
    console = r.stdout + r.stderr
    assert r.returncode == 0, console[-4000:]
    run = tmp_path / "leak"
    # the planted key did travel where it must (the endpoint), and the failures were recorded
    assert script.auth and all(a == f"Bearer {planted['TREX_TEST_LLM_KEY']}" for a in script.auth)
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    notes = [e.get("note", "") for e in events if e["type"] == "node_planned" and e.get("source") == "builtin-fallback"]
    assert notes and all("boom" in n and "***" in n for n in notes), notes  # the error text is kept, scrubbed
    files = _written(run, fs, f"{BUCKET}/runs/leak")
    names = set(files)
    for must in ("events.jsonl", "tree.json", "report.html", "summary.json", "config.yaml", "params.json",
                 "params.pkl", "mlruns"):
        assert any(must in n for n in names), must
    assert any(n.startswith("s3://") for n in names)
    pieces = _pieces(list(planted.values()))
    leaks = {name: _leaks(data, pieces) for name, data in files.items()}
    assert not {k: v for k, v in leaks.items() if v}
    assert not _leaks(console.encode(), pieces), console[-3000:]
