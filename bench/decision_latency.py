"""TreeState + Searcher decision latency at 1,000 and 10,000 tree nodes, without trials.

A decision is what the driver waits for between trials: hand out a planned node
(``next_node``), select the next node to expand by UCT (``begin_expansion``, which also builds
the Researcher's memory) and record the children (``add_children``), plus recording a result
(``finish``). Measured on the plain ``SearchState`` (what the TreeState actor runs) with a real
ledger on disk, and once through the Ray actor to show the call overhead.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time

from trex_ray.config import Config, SearchConfig, TrainConfig
from trex_ray.researcher.builtin import BuiltinPolicy
from trex_ray.search.outcome import Cost, TrialOutcome
from trex_ray.search.request import Proposal, TaskSpec
from trex_ray.search.state import SearchState

TASK = TaskSpec(id="sst2", description="", metric="accuracy", higher_is_better=True, prompt_template="{input}",
                completion_template="{reference}", train_rows=10_000, columns=["id", "input", "label", "reference"])


def grow(state: SearchState, nodes: int, rng: random.Random, timings: dict[str, list[float]] | None = None) -> None:
    """Grow the tree to ``nodes`` nodes the way a search does, timing each decision."""
    policy = BuiltinPolicy()
    t = timings if timings is not None else {}

    def timed(name: str, fn, *a):
        t0 = time.perf_counter()
        out = fn(*a)
        t.setdefault(name, []).append((time.perf_counter() - t0) * 1000)
        return out

    while len(state.tree.nodes) < nodes:
        reply = timed("next_node", state.next_node, f"t{len(state.tree.nodes)}")
        if reply.node_id is not None:
            timed("finish", state.finish, reply.node_id, TrialOutcome(rng.random(), {}, Cost()))
            continue
        begun = timed("begin_expansion", state.begin_expansion)
        if begun is None:
            break
        timed("add_children", state.add_children, begun.node_id, Proposal(policy.propose(begun), "builtin"))


def pct(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100)[int(q) - 1] if len(xs) > 1 else xs[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--window", type=int, default=300, help="decisions measured at each size")
    args = ap.parse_args()
    print(f"{'nodes':>7} {'decision':<16} {'p50 ms':>8} {'p99 ms':>8}")
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as d:
            rng = random.Random(0)
            cfg = Config(search=SearchConfig(max_trials=10 ** 9, children_per_expansion=3, max_expansions=3, max_depth=50),
                         train=TrainConfig(train_samples=256))
            state = SearchState(d, cfg, TASK)
            grow(state, size, rng)
            timings: dict[str, list[float]] = {}
            grow(state, size + args.window, rng, timings)
            for name, xs in timings.items():
                print(f"{size:>7} {name:<16} {pct(xs, 50):>8.2f} {pct(xs, 99):>8.2f}")
            total = [sum(v) for v in zip(timings["next_node"], timings["finish"])]
            print(f"{size:>7} {'hand out+record':<16} {pct(total, 50):>8.2f} {pct(total, 99):>8.2f}")


if __name__ == "__main__":
    main()
