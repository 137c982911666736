"""Closed by default: the cluster manifests turn Ray's token auth on (token from a Kubernetes
Secret or the launcher's machine) and keep the dashboard off the network where they can, and the
embedded Ray of ``python launch.py`` listens on 127.0.0.1 only (checked on the sockets it really
opens)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1"}


def _docs(rel: str) -> list[dict]:
    return list(yaml.safe_load_all((REPO / rel).read_text()))


def _token_env(env: list[dict], secret: str) -> bool:
    """RAY_AUTH_MODE=token and RAY_AUTH_TOKEN read from ``secret`` (never written inline)."""
    by_name = {e["name"]: e for e in env}
    mode, token = by_name.get("RAY_AUTH_MODE", {}), by_name.get("RAY_AUTH_TOKEN", {})
    return (mode.get("value") == "token" and "value" not in token
            and token.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == secret)


def _containers(spec: dict) -> list[dict]:
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def test_no_manifest_opens_anything_to_all_interfaces():
    for path in [*(REPO / "cluster").rglob("*.yaml")]:
        text = path.read_text()
        assert "0.0.0.0" not in text, path
        assert "RAY_AUTH_MODE=disabled" not in text and "RAY_AUTH_MODE: disabled" not in text, path


def test_raycluster_takes_the_token_from_a_secret_and_keeps_the_dashboard_on_loopback():
    (rc,) = _docs("cluster/kuberay/raycluster.yaml")
    spec = rc["spec"]
    assert spec["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    # every Ray container, the in-tree autoscaler's included, runs with the token from the Secret
    assert all(_token_env(c.get("env", []), "trex-ray-auth") for c in _containers(spec))
    assert spec["enableInTreeAutoscaling"] and _token_env(spec["autoscalerOptions"]["env"], "trex-ray-auth")
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert 8265 not in {p["containerPort"] for p in head.get("ports", [])}  # no dashboard port declared
    # keys come from a Secret, not from a job's runtime_env (readable from the dashboard)
    assert all(any(e.get("secretRef", {}).get("name") == "trex-ray-keys" for e in c.get("envFrom", []))
               for c in _containers(spec))
    assert "port-forward" in (REPO / "cluster/kuberay/raycluster.yaml").read_text()


def test_rayjob_runs_with_token_auth_and_no_keys_in_its_runtime_env():
    (job,) = _docs("cluster/kuberay/rayjob.yaml")
    spec = job["spec"]["rayClusterSpec"]
    assert spec["authOptions"]["mode"] == "token"
    assert "dashboard-host" not in spec["headGroupSpec"]["rayStartParams"] or \
        spec["headGroupSpec"]["rayStartParams"]["dashboard-host"] != "0.0.0.0"
    runtime_env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    secret = re.compile(r"(^|_)(KEY|TOKEN|SECRET|PASSWORD)(_|$)")
    assert not [k for k in runtime_env.get("env_vars", {}) if secret.search(k)]
    assert all(any(e.get("secretRef", {}).get("name") == "trex-ray-keys" for e in c.get("envFrom", []))
               for c in _containers(spec))


def test_cluster_launcher_starts_every_node_with_the_token_and_a_loopback_dashboard():
    (launcher,) = _docs("cluster/ray-cluster.yaml")
    starts = [c for c in launcher["head_start_ray_commands"] + launcher["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2 and all(c.startswith("RAY_AUTH_MODE=token ") for c in starts)
    head = next(c for c in starts if "--head" in c)
    assert "--dashboard-host=127.0.0.1" in head
    # the token: the launcher machine's token file, copied to every node (where Ray reads it)
    assert launcher["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


PROBE = """
import json, os, sys
import psutil
import ray  # imported before the driver starts Ray, as in a test or notebook process

from ray._private import ray_constants
from trex_ray.config import Config
from trex_ray.guard.endpoints import loopback_only
from trex_ray.run import _start_ray

assert _start_ray(Config.model_validate({"run": {"num_cpus": 1}}))
@ray.remote
def pid():
    return os.getpid()
worker = ray.get(pid.remote())  # a worker process listens too
me = psutil.Process()
procs = [me, *me.children(recursive=True)]
found = sorted({(p.name()[:24], c.laddr.ip) for p in procs for c in p.net_connections(kind="inet")
                if c.status == psutil.CONN_LISTEN})
gcs = ray.get_runtime_context().gcs_address
ray.shutdown()
loopback_only(False)
print(json.dumps({"listen": found, "gcs": gcs, "worker_seen": worker in {p.pid for p in procs},
                  "restored": ray_constants.ENABLE_RAY_CLUSTER and "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ}))
"""


def test_embedded_ray_listens_on_loopback_only():
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    # short: Ray's socket paths must fit in 107 bytes
    env |= {"RAY_TMPDIR": tempfile.mkdtemp(prefix="trexcl", dir="/tmp"), "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    names = {name for name, _ in out["listen"]}
    # the GCS, the raylet, the agents and a worker: all of them, and only on loopback
    assert {"gcs_server", "raylet"} <= names and len(out["listen"]) >= 5 and out["worker_seen"], out
    assert {ip for _, ip in out["listen"]} <= LOOPBACK, out["listen"]
    assert out["gcs"].startswith("127.0.0.1:")
    assert out["restored"]  # a later cluster in the same process (127.0.0.x nodes) is not affected
