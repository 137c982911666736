"""All of TREX-Ray's Ray actors, in one place.

Both run with ``num_cpus=0``: they only coordinate, so they must never hold a CPU that a trial
could use (on a 2-CPU machine a 1-CPU actor would halve the search's parallelism).
"""

from __future__ import annotations

from typing import Any

import ray

from trex_ray.diagnosis import Diagnostician
from trex_ray.llm_researcher import LLMResearcher
from trex_ray.policy import BuiltinPolicy, ExpansionRequest
from trex_ray.state import SearchState

# The tree has exactly one writer: this actor. No restarts: a restarted actor would rebuild
# from the ledger while the old driver still holds trials; recovery is `launch.py --resume`.
TreeState = ray.remote(num_cpus=0, max_restarts=0)(SearchState)


class ResearcherCore:
    """Proposes children of a node. Its only state is the LLM spend and the requirement spec,
    both kept in the run directory, so Ray may restart it and retry a call freely."""

    def __init__(self, policy: str = "builtin", llm_config: dict[str, Any] | None = None,
                 run_dir: str | None = None) -> None:
        self.name = policy
        self.llm = LLMResearcher(llm_config, run_dir) if policy == "llm" else None
        self.policy = BuiltinPolicy()
        # bad-case diagnosis and insights on the same client: one spend, one budget
        self.diagnostician = (Diagnostician(self.llm.client, self.llm.cfg, run_dir, self.llm.unavailable)
                              if self.llm is not None else None)

    def propose(self, request: ExpansionRequest) -> dict[str, Any]:
        """``{"plans", "source"}``, plus for the LLM policy ``note`` (why it fell back, or the
        direction it chose) and ``usage`` (tokens and cost of this expansion)."""
        if self.llm is None:
            plans = self.policy.propose(request)
            return {"plans": [p.model_dump(mode="json") for p in plans], "source": self.name}
        out = self.llm.propose_detailed(request)
        return {"plans": [p.model_dump(mode="json") for p in out.plans], "source": out.source,
                "note": out.note, "usage": out.usage}

    def after_trial(self, node_id: str, bad_cases: dict[str, Any] | None, tree_state: Any) -> None:
        """After a trial ended (LLM policy): diagnose its wrong dev answers and, every
        ``llm.insights_every`` finished trials, distill insights from the tree; both are recorded
        on ``tree_state`` directly, so nobody waits for this call. The builtin policy has the
        rule-based diagnosis the TreeState recorded already. This actor runs one call at a time,
        so an expansion may queue behind a diagnosis (one short call) but never overlaps it,
        which keeps each expansion's usage exact."""
        if self.diagnostician is None:
            return
        if bad_cases and bad_cases.get("cases"):
            req = ray.get(tree_state.diagnosis_request.remote(node_id))
            if req is not None:
                detail = self.diagnostician.diagnose(req["task"], req["node"], bad_cases)
                ray.get(tree_state.record_diagnosis.remote(node_id, detail))
        due = ray.get(tree_state.insights_request.remote(self.diagnostician.every))
        if due is not None:
            out = self.diagnostician.distill(due["memory"], due["after_trials"])
            if out is not None:
                ray.get(tree_state.record_insights.remote(out))


Researcher = ray.remote(num_cpus=0, max_restarts=2, max_task_retries=2)(ResearcherCore)
