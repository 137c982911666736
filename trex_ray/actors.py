"""All of TREX-Ray's Ray actors, in one place.

Both run with ``num_cpus=0``: they only coordinate, so they must never hold a CPU that a trial
could use (on a 2-CPU machine a 1-CPU actor would halve the search's parallelism).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray

from trex_ray.config import Config
from trex_ray.llm_client import LLMAccount
from trex_ray.researcher.builtin import BuiltinPolicy
from trex_ray.researcher.diagnosis import Diagnostician
from trex_ray.researcher.llm import LLMResearcher
from trex_ray.search.request import ExpansionRequest, Proposal
from trex_ray.search.state import SearchState

# The tree has exactly one writer: this actor. No restarts: a restarted actor would rebuild
# from the ledger while the old driver still holds trials; recovery is `launch.py --resume`.
TreeState = ray.remote(num_cpus=0, max_restarts=0)(SearchState)

# The run's one LLM spend account (the Researcher, diagnoses, insights, research and every
# trial's synthesize steps charge it); its total is kept in the run directory, so a restart or
# a resume goes on from what was spent. Processes reach it through executor.context.SharedAccount.
LLMAccountActor = ray.remote(num_cpus=0, max_restarts=2, max_task_retries=2)(LLMAccount)


class ResearcherCore:
    """Proposes children of a node. Its only state is the LLM spend and the requirement spec,
    both kept in the run directory, so Ray may restart it and retry a call freely."""

    def __init__(self, cfg: Config, run_dir: str | Path | None = None, account: Any = None) -> None:
        """``account``: the run's LLM spend account (a SharedAccount); None: the client's own."""
        self.name = cfg.search.policy
        self.llm = LLMResearcher(cfg.llm, run_dir, cfg.task, account) if self.name == "llm" else None
        self.policy = BuiltinPolicy()
        # bad-case diagnosis and insights on the same client: one spend, one budget
        self.diagnostician = (Diagnostician(self.llm.client, cfg.llm, run_dir, self.llm.unavailable)
                              if self.llm is not None else None)

    def propose(self, request: ExpansionRequest) -> Proposal:
        """The plans for ``request``; for the LLM policy also why it fell back (or the direction
        it chose) and the tokens and cost of this expansion."""
        if self.llm is None:
            return Proposal(plans=self.policy.propose(request), source=self.name)
        return self.llm.propose_detailed(request)

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
