"""Chaos soak: a search on a simulated multi-node cluster runs a fixed number of trials while a
seeded schedule SIGKILLs trial processes, kills a worker node and adds a new one, kills the
driver several times (each followed by ``launch.py --resume``) and tries a second driver on the
live run. At the end it checks what must hold whatever happened:

- every trial that finished is in the tree exactly once (one ``node_finished`` per node and
  rung, one ``node_planned`` per id), and no plan was recorded twice;
- nothing handed out was lost (every started node ended succeeded or failed, none failed for
  want of a report), and the budget was not overspent;
- the ledger replays to the final tree.json, sequence numbers strictly increase, every failure
  has a cause.

Prints: faults injected by kind, trials finished, lost (goal 0), duplicated (goal 0), trial runs
redone because a driver died while their result was in flight, and the time to recover after
each driver kill (kill -> resumed driver has replayed the ledger -> first trial handed out ->
first trial finished).

The driver is a real separate process: this script re-run with ``--driver``, which swaps the
Tune trainable for a sleeping trial and then calls launch.py's own ``main`` (no product hook:
the swap is a bench-side assignment of ``trex_ray.executor.trial.run_trial``). Nodes are
``ray.cluster_utils.Cluster`` nodes on 127.0.0.x loopback aliases; the head holds no CPUs, so
trials run on the worker nodes and the coordinating actors stay with the driver on the head.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
EXECUTIONS = "chaos-executions.jsonl"  # beside the run directory: what every trial process did


# ---------------------------------------------------------------- the driver side (--driver)
def sleep_trial(config: dict, ctx: Any) -> None:
    """A trial that sleeps instead of training, reporting progress and a scored outcome (with a
    model folder, so warm-start children can run) exactly as ``run_trial`` does."""
    import hashlib

    from ray import tune

    from trex_ray.executor.context import node_dir
    from trex_ray.search.outcome import Cost, TrialOutcome

    node_id, t0 = config["node_id"], time.time()
    rung = config.get("rung") or {}  # the rung it was handed out at, as run_trial reports it
    log = Path(ctx.run_dir).parent / EXECUTIONS

    def record(event: str) -> None:
        with open(log, "a") as f:  # one short append per line: whole lines even with writers racing
            f.write(json.dumps({"node_id": node_id, "rung": rung.get("index", 0), "event": event, "pid": os.getpid(),
                                "t": time.time()}) + "\n")

    record("start")
    digest = int(hashlib.sha256(json.dumps(config["plan"], sort_keys=True).encode()).hexdigest(), 16)
    seconds = float(os.environ.get("CHAOS_TRIAL_SECONDS", "3")) * (0.8 + (digest % 41) / 100)
    steps = max(1, round(seconds))
    for step in range(1, steps + 1):
        time.sleep(seconds / steps)
        tune.report({"node_id": node_id, "phase": "train", "step": step, "max_steps": steps, "loss": 1 / step})
    model = node_dir(ctx, node_id) / "model"
    model.mkdir(parents=True, exist_ok=True)
    (model / "weights.bin").write_bytes(b"\0" * 64)
    score = 0.3 if config["plan"].get("training") is None else 0.4 + (digest % 50) / 100
    outcome = TrialOutcome(score=score, metrics={"accuracy": score}, cost=Cost(wall_seconds=round(time.time() - t0, 2)),
                           artifacts={"model": str(model)}, rung=rung.get("index", 0), fidelity=rung.get("fraction", 1.0))
    record("done")
    tune.report({"node_id": node_id, "phase": "done", "score": score, "outcome": outcome.to_json()})


def driver_main(argv: list[str]) -> int:
    import trex_ray.executor.trial as trial
    from trex_ray.cli import main

    trial.run_trial = sleep_trial  # what trainable(ctx) wraps: the bench's trial, launch.py's everything else
    return main(argv)


# ---------------------------------------------------------------- the orchestrator
class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(args.work or tempfile.mkdtemp(prefix="trex-chaos-"))
        self.run_dir = self.work / "runs" / "chaos"
        self.rng = random.Random(args.seed)
        self.faults: Counter[str] = Counter()
        self.recoveries: list[dict[str, float]] = []
        self.driver: subprocess.Popen | None = None
        self.attempt = 0
        self.next_ip = 70
        self.log: list[str] = []

    # ------------------------------------------------------------------ cluster and driver
    def start_cluster(self) -> None:
        from ray.cluster_utils import Cluster

        os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="trexchaos", dir="/tmp"))  # short socket paths
        # A dead node is noticed after health_check_period_ms x threshold (Ray's default: 3 s x 5)
        self.cluster = Cluster(initialize_head=True, connect=False, head_node_args=dict(
            num_cpus=0, node_ip_address="127.0.0.69", include_dashboard=False, object_store_memory=80 * 2**20,
            _system_config={"health_check_period_ms": 1000, "health_check_failure_threshold": 5}))
        self.workers = [self.add_node() for _ in range(self.args.nodes)]
        self.cluster.wait_for_nodes()  # (this process never joins as a driver: the run's driver is alone)

    def add_node(self) -> Any:
        node = self.cluster.add_node(num_cpus=self.args.slots, node_ip_address=f"127.0.0.{self.next_ip}",
                                     object_store_memory=80 * 2**20)
        self.next_ip += 1
        return node

    def launch(self, *argv: str) -> subprocess.Popen:
        self.attempt += 1
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1",
               "CHAOS_TRIAL_SECONDS": str(self.args.trial_seconds)}
        log = open(self.work / f"driver-{self.attempt}.log", "w")
        return subprocess.Popen([sys.executable, __file__, "--driver", *argv], cwd=self.work, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def first_run(self) -> None:
        from tiny_model import build_tiny_model  # a real model folder for launch.py's checks (never loaded)

        model = build_tiny_model(self.work / "model")
        a = self.args
        self.driver = self.launch(
            f"--model.name_or_path={model}", f"--run.output_dir={self.work / 'runs'}", "--run.run_id=chaos",
            f"--run.ray_address={self.cluster.address}", f"--search.max_trials={a.trials}",
            f"--search.max_concurrent_trials={a.nodes * a.slots}", "--search.children_per_expansion=3",
            f"--search.seed={a.seed}", "--task.test_limit=0", "--resources.cpus_per_trial=1",
            f"--resources.max_failures={a.max_failures}")

    # ------------------------------------------------------------------ reading the run
    def events(self) -> list[dict[str, Any]]:
        from trex_ray.search.ledger import read_events

        path = self.run_dir / "events.jsonl"
        return list(read_events(path)) if path.is_file() else []

    def finished(self, events: list[dict[str, Any]]) -> int:
        return sum(1 for e in events if e["type"] in ("node_finished", "node_failed") and e["node_id"] != "n0")

    def trial_processes(self, wait_s: float = 0.0) -> list[tuple[Any, Any]]:
        """(node, process) of every trial process on the worker nodes; waits up to ``wait_s`` for
        one to exist (between two trials, or while a new one starts)."""
        import psutil

        until = time.time() + wait_s
        while True:
            found = []
            for node in self.workers:
                try:
                    raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
                    found += [(node, p) for p in raylet.children(recursive=True) if "ImplicitFunc" in " ".join(p.cmdline())]
                except psutil.Error:
                    continue
            if found or time.time() >= until or self.driver.poll() is not None:
                return found
            time.sleep(0.2)

    def driver_up(self) -> bool:
        """The current driver lives and holds the run's lock (it is past its start-up)."""
        from trex_ray.guard.lock import LOCK_NAME

        try:
            rec = json.loads((self.run_dir / LOCK_NAME).read_text())
        except (OSError, ValueError):
            return False
        return self.driver.poll() is None and rec.get("pid") == self.driver.pid and not rec.get("released")

    # ------------------------------------------------------------------ faults
    def schedule(self) -> list[tuple[int, str]]:
        """(finished trials to wait for, fault kind), seeded; spread over the run (driver kills
        over its first two thirds, so that each resumed driver has trials left to run)."""
        a, span = self.args, range(1, max(2, self.args.trials - 1))
        early = range(1, max(2, 2 * self.args.trials // 3))
        plan = [(self.rng.choice(early), "driver_kill") for _ in range(a.driver_kills)]
        plan += [(self.rng.choice(span), "trial_kill") for _ in range(a.trial_kills)]
        plan += [(self.rng.choice(span), "node_kill") for _ in range(a.node_kills)]
        plan += [(self.rng.choice(span), "second_driver") for _ in range(a.second_drivers)]
        return sorted(plan, key=lambda p: (p[0], self.rng.random()))

    def inject(self, kind: str) -> None:
        time.sleep(self.rng.uniform(0, self.args.trial_seconds))  # land anywhere in a trial's life
        if kind == "driver_kill":
            os.killpg(self.driver.pid, signal.SIGKILL)
            t_kill = time.time()
            self.driver.wait()
            before = len(self.events())
            self.driver = self.launch("--resume", str(self.run_dir))
            self.recoveries.append({"t_kill": t_kill, "events_before": before})
        elif kind == "trial_kill":
            procs = self.trial_processes(wait_s=180)
            if not procs:
                return self.note(f"{kind}: no trial process ran, skipped")
            self.rng.choice(procs)[1].send_signal(signal.SIGKILL)
        elif kind == "node_kill":
            busy = {id(node): node for node, _ in self.trial_processes(wait_s=180)}  # a node with trials on it
            victim = self.rng.choice(sorted(busy.values(), key=self.workers.index) or self.workers)
            self.cluster.remove_node(victim, allow_graceful=False)  # its raylet and every process on it
            self.workers.remove(victim)
            time.sleep(self.args.node_down_seconds)
            self.workers.append(self.add_node())  # the replacement an autoscaler would add
        elif kind == "second_driver":
            r = subprocess.run([sys.executable, __file__, "--driver", "--resume", str(self.run_dir)], cwd=self.work,
                               env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
            refused = r.returncode == 2 and r.stderr.startswith("error: ") and "in use by another driver" in r.stderr
            self.faults["second_driver_refused"] += refused
            if not refused:
                self.note(f"second driver NOT refused: rc={r.returncode} {r.stderr[-300:]}")
        self.faults[kind] += 1
        self.note(f"{kind} injected")

    def note(self, text: str) -> None:
        self.log.append(f"{time.strftime('%H:%M:%S')} {text}")
        if self.args.verbose:
            print(self.log[-1], flush=True)

    # ------------------------------------------------------------------ the soak
    def run(self) -> dict[str, Any]:
        t0 = time.time()
        self.start_cluster()
        self.first_run()
        pending = self.schedule()
        deadline = t0 + self.args.timeout
        while True:
            if time.time() > deadline:
                raise SystemExit(f"the soak did not finish in {self.args.timeout}s (see {self.work})")
            rc = self.driver.poll()
            if rc is not None:
                if rc != 0:
                    raise SystemExit(f"driver {self.attempt} exited {rc}: see {self.work}/driver-{self.attempt}.log")
                break
            events = self.events()
            while pending and self.finished(events) >= pending[0][0] and self.driver_up():
                self.inject(pending.pop(0)[1])
                events = self.events()
            time.sleep(0.3)
        self.faults.update({k: 0 for _, k in pending})  # what never fired (the run ended first)
        self.skipped = [k for _, k in pending]
        return self.report(time.time() - t0)

    def report(self, wall: float) -> dict[str, Any]:
        from trex_ray.search.tree import SearchParams, Tree

        events = self.events()
        tree = Tree.replay(events, SearchParams())
        saved = {n["id"]: n for n in json.loads((self.run_dir / "tree.json").read_text())["nodes"]}
        execs = [json.loads(line) for line in (self.work / "runs" / EXECUTIONS).read_text().splitlines() if line]
        trials = [n for n in tree.nodes.values() if n.id != "n0"]
        # a node finishes once per rung it trains to (successive halving): (node, rung) is one trial run
        finished_events = Counter((e["node_id"], e.get("rung", 0)) for e in events if e["type"] == "node_finished")
        planned = Counter(e["node_id"] for e in events if e["type"] == "node_planned")
        keys = Counter(n.plan.fingerprint() + (f"@{n.parent_id}" if n.plan.training and n.plan.training.warm_start else "")
                       for n in trials if n.status in ("succeeded", "failed") and n.trial_id)
        handed = {e["node_id"] for e in events if e["type"] == "node_started" and e.get("trial_id")}
        lost = sorted(n for n in handed if tree.nodes[n].status not in ("succeeded", "failed")
                      or "run ended before its trial reported" in (tree.nodes[n].failure or ""))
        done_runs = Counter(f"{x['node_id']}@r{x.get('rung', 0)}" for x in execs if x["event"] == "done")
        for rec in self.recoveries:  # kill -> replayed -> first handout -> first result, from the ledger
            after = [e for e in events[rec["events_before"]:]]
            resumed = next((e["ts"] for e in after if e["type"] == "run_resumed"), None)
            handout = next((e["ts"] for e in after if e["type"] == "node_started" and e.get("trial_id")), None)
            result = next((e["ts"] for e in after if e["type"] in ("node_finished", "node_failed")), None)
            rec.update({k: None if v is None else round(v - rec["t_kill"], 1)
                        for k, v in (("resumed", resumed), ("first_handout", handout), ("first_result", result))})
        seqs = [e["seq"] for e in events]
        invariants = {
            "every finished trial in the tree exactly once": all(v == 1 for v in finished_events.values())
            and all(v == 1 for v in planned.values()) and all(tree.nodes[n].status == "succeeded" for n, _ in finished_events),
            "no plan recorded twice": all(v == 1 for v in keys.values()),
            "ledger replays to the final tree": {i: (n.status, n.score, n.visits) for i, n in tree.nodes.items()}
            == {i: (n["status"], n["score"], n["visits"]) for i, n in saved.items()},
            "sequence numbers strictly increasing": seqs == sorted(set(seqs)) and seqs[0] == 1,
            "every failure has a cause": all(n.failure for n in tree.nodes.values() if n.status == "failed"),
            "budget not overspent": sum(1 for n in trials if n.status in ("succeeded", "failed")) <= self.args.trials
            and len(handed - {"n0"}) <= self.args.trials,
            "run finished": bool(events) and events[-1]["type"] == "run_finished",
        }
        return {
            "faults": dict(self.faults), "skipped": getattr(self, "skipped", []),
            "trials": self.args.trials,
            "succeeded": sum(1 for n in trials if n.status == "succeeded"),
            "failed": {n.id: (n.failure or "")[:120] for n in trials if n.status == "failed"},
            "lost": lost,
            "duplicated": sum(v - 1 for v in finished_events.values() if v > 1)
            + sum(v - 1 for v in planned.values() if v > 1) + sum(v - 1 for v in keys.values() if v > 1),
            "redone": {n: c - 1 for n, c in done_runs.items() if c > 1},
            "trial_starts": sum(1 for x in execs if x["event"] == "start"),
            "recoveries": self.recoveries, "invariants": invariants, "wall_s": round(wall, 1),
            "stop_reason": events[-1].get("reason") if events else None, "work": str(self.work), "log": self.log,
        }

    def close(self) -> None:
        if self.driver is not None and self.driver.poll() is None:
            os.killpg(self.driver.pid, signal.SIGKILL)
        if hasattr(self, "cluster"):
            self.cluster.shutdown()


def print_table(r: dict[str, Any]) -> None:
    f = r["faults"]
    print(f"faults injected      driver SIGKILL {f.get('driver_kill', 0)}, trial process SIGKILL {f.get('trial_kill', 0)}, "
          f"worker node killed and replaced {f.get('node_kill', 0)}, second driver on the live run "
          f"{f.get('second_driver', 0)} (refused {f.get('second_driver_refused', 0)})")
    if r["skipped"]:
        print(f"  not fired          {', '.join(r['skipped'])} (the run ended first)")
    print(f"trials               {r['succeeded'] + len(r['failed'])} of {r['trials']} finished: {r['succeeded']} "
          f"succeeded, {len(r['failed'])} failed; {r['trial_starts']} trial process starts")
    for node, cause in r["failed"].items():
        print(f"  failed {node:<5}      {cause}")
    print(f"lost                 {len(r['lost'])}{' ' + ', '.join(r['lost']) if r['lost'] else ''}")
    print(f"duplicated           {r['duplicated']}")
    redone = r["redone"]
    print(f"redone               {sum(redone.values())} trial run(s) completed twice (result in flight when a driver "
          f"died): {', '.join(redone) or '-'}")
    for i, rec in enumerate(r["recoveries"], 1):
        seconds = {k: "-" if rec[k] is None else f"{rec[k]:.1f} s" for k in ("resumed", "first_handout", "first_result")}
        print(f"driver kill {i}        ledger replayed by the new driver {seconds['resumed']}, first trial handed out "
              f"{seconds['first_handout']}, first result {seconds['first_result']} after the kill")
    for name, ok in r["invariants"].items():
        print(f"{'ok  ' if ok else 'FAIL'}                 {name}")
    print(f"wall                 {r['wall_s']:.0f} s ({r['stop_reason']})")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--driver":
        return driver_main(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=24, help="search.max_trials")
    ap.add_argument("--nodes", type=int, default=2, help="worker nodes")
    ap.add_argument("--slots", type=int, default=2, help="trials at once per worker node")
    ap.add_argument("--trial-seconds", type=float, default=4.0, help="a sleeping trial's length (+-20%%)")
    ap.add_argument("--driver-kills", type=int, default=3)
    ap.add_argument("--trial-kills", type=int, default=4)
    ap.add_argument("--node-kills", type=int, default=1)
    ap.add_argument("--second-drivers", type=int, default=1, help="second --resume attempts while a driver lives")
    ap.add_argument("--node-down-seconds", type=float, default=5.0, help="before the replacement node joins")
    ap.add_argument("--max-failures", type=int, default=3, help="resources.max_failures (retries per trial)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--work", help="working folder (default: a fresh temp folder)")
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--quick", action="store_true", help="the test's size: 6 trials, one fault of each kind")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.trials, args.trial_seconds, args.driver_kills, args.trial_kills = 6, 2.5, 1, 1
        args.node_kills, args.second_drivers, args.node_down_seconds = 1, 1, 2.0
    sys.path.insert(0, str(REPO / "tests"))
    soak = Soak(args)
    try:
        result = soak.run()
    finally:
        soak.close()
    print_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    ok = not result["lost"] and not result["duplicated"] and all(result["invariants"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
