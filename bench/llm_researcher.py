"""LLM Researcher versus the builtin policy, per expansion of a fixed small tree: latency,
tokens in/out, whether each ask was schema-valid on the first try, and who finally proposed.

    python bench/llm_researcher.py                       # starts llama-cpp's server (SmolLM2-135M)
    python bench/llm_researcher.py --base-url URL --model NAME --dialect json_schema

With no --base-url it starts the same local server as the tests (llama-cpp-python must be
installed); the key, if the endpoint needs one, comes from the variable named by --api-key-env.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from llm_helpers import llm_cfg, request_for, small_tree, start_llama_server, stop  # noqa: E402
from trex_ray.researcher.llm import LLMResearcher  # noqa: E402
from trex_ray.researcher.builtin import BuiltinPolicy  # noqa: E402

NODES = ("n0", "n1", "n2", "n0", "n2")  # root, a mid node, the best leaf; repeated for variance


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--dialect", default="llama_cpp", choices=["llama_cpp", "json_schema", "none"])
    ap.add_argument("--api-key-env")
    ap.add_argument("--n", type=int, default=2, help="plans per expansion")
    ap.add_argument("--max-tokens", type=int, default=400)
    ap.add_argument("--max-prompt-tokens", type=int, default=600)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    proc = None
    url = args.base_url
    if url is None:
        proc, url = start_llama_server(Path(tempfile.mkdtemp()) / "server.log")
    try:
        cfg = llm_cfg(url, model=args.model, structured_output=args.dialect, api_key_env=args.api_key_env,
                      max_tokens=args.max_tokens, max_prompt_tokens=args.max_prompt_tokens, timeout_s=300)
        llm = LLMResearcher(cfg)
        tree = small_tree(extra_nodes=4)
        rows = []
        for node_id in NODES:
            req = request_for(tree, node_id, n=args.n)
            t0 = time.perf_counter()
            out = llm.propose_detailed(req)
            rows.append(("llm", node_id, time.perf_counter() - t0, out.usage["prompt_tokens"],
                         out.usage["completion_tokens"], out.usage["calls"], out.first_try_valid, out.source, len(out.plans)))
            t0 = time.perf_counter()
            plans = BuiltinPolicy().propose(req)
            rows.append(("builtin", node_id, time.perf_counter() - t0, 0, 0, 0, [], "builtin", len(plans)))
    finally:
        if proc is not None:
            stop(proc)

    print(f"endpoint {url} model {args.model} dialect {args.dialect}, n={args.n}, max_tokens={args.max_tokens}, "
          f"max_prompt_tokens={args.max_prompt_tokens}")
    print(f"{'policy':8} {'node':4} {'latency_s':>9} {'tok_in':>6} {'tok_out':>7} {'calls':>5} {'1st-try valid':>14} {'plans':>5}  source")
    for pol, node, lat, tin, tout, calls, valid, source, nplans in rows:
        v = "".join("Y" if x else "n" for x in valid) or "-"
        print(f"{pol:8} {node:4} {lat:9.3f} {tin:6d} {tout:7d} {calls:5d} {v:>14} {nplans:5d}  {source}")
    for pol in ("llm", "builtin"):
        sel = [r for r in rows if r[0] == pol]
        asks = [x for r in sel for x in r[6]]
        valid_rate = f"{sum(asks) / len(asks):.0%} of {len(asks)} asks" if asks else "n/a"
        llm_src = sum(r[7] == "llm" for r in sel)
        print(f"{pol}: mean latency {statistics.mean(r[2] for r in sel):.3f}s, mean tokens in/out "
              f"{statistics.mean(r[3] for r in sel):.0f}/{statistics.mean(r[4] for r in sel):.0f}, "
              f"first-try schema-valid {valid_rate}, proposed by the LLM {llm_src}/{len(sel)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
