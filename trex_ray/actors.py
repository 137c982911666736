"""All of TREX-Ray's Ray actors, in one place.

Both run with ``num_cpus=0``: they only coordinate, so they must never hold a CPU that a trial
could use (on a 2-CPU machine a 1-CPU actor would halve the search's parallelism).
"""

from __future__ import annotations

from typing import Any

import ray

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

    def propose(self, request: ExpansionRequest) -> dict[str, Any]:
        """``{"plans", "source"}``, plus for the LLM policy ``note`` (why it fell back, or the
        direction it chose) and ``usage`` (tokens and cost of this expansion)."""
        if self.llm is None:
            plans = self.policy.propose(request)
            return {"plans": [p.model_dump(mode="json") for p in plans], "source": self.name}
        out = self.llm.propose_detailed(request)
        return {"plans": [p.model_dump(mode="json") for p in out.plans], "source": out.source,
                "note": out.note, "usage": out.usage}


Researcher = ray.remote(num_cpus=0, max_restarts=2, max_task_retries=2)(ResearcherCore)
