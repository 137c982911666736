"""Build a plan's training data with Hugging Face ``datasets``, then decontaminate it.

Runs inside the trial (on the worker), never on the driver. Output rows are trl's conversational
prompt/completion pairs, so the loss falls on the completion only and the chat template is the
same one evaluation uses. Steps run in order; with a ``cache_dir`` each step's output is stored
under a content hash, and a build resumes from the longest prefix of steps already built.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from typing import Any, Callable

import datasets
import pyarrow as pa

from ftbench.task import Task, TaskDataError
from trex_ray.config import LLMConfig
from trex_ray.recipes import dedup, language, synth, transforms
from trex_ray.recipes.cache import CACHE_VERSION, StepCache, chain_key
from trex_ray.recipes.dedup import Decontaminator, decontaminate  # noqa: F401  (re-exported)
from trex_ray.recipes.ops import ConcatOp, FormatOp, LoadOp, MixOp, Recipe, RecipeError, SynthesizeOp
from trex_ray.recipes.sources import (
    concat, load_source, mix, source_fingerprint, task_fingerprint,
)

log = logging.getLogger(__name__)

PARALLEL_MIN_ROWS = 20_000  # below this, starting worker processes costs more than it saves

# Operators that only transform rows; sources and format need the task and are handled inline.
ROW_OPS: dict[str, Callable[..., transforms.Result]] = {
    "select": transforms.select,
    "rename": transforms.rename,
    "filter_length": transforms.filter_length,
    "filter_regex": transforms.filter_regex,
    "filter_labels": transforms.filter_labels,
    "filter_quality": transforms.filter_quality,
    "filter_language": language.filter_language,
    "drop_empty": transforms.drop_empty,
    "dedup_exact": dedup.dedup_exact,
    "dedup_near": dedup.dedup_near,
    "subsample": transforms.subsample,
    "balance_labels": transforms.balance_labels,
}


def step_keys(recipe: Recipe, task: Task, paths: dict, limit: int | None,
              llm: LLMConfig | None = None) -> list[str]:
    """Cache key of each step's output: a hash chain over the steps, seeded with what each
    source's files look like (size and time), so a key is known without reading any data.
    A synthesize step's key also holds the LLM's model and sampling settings (never its URL
    or key)."""
    keys, key = [], CACHE_VERSION
    for step in recipe.steps:
        extra: list[Any] = []
        if isinstance(step, LoadOp):
            extra = [source_fingerprint(step, task, paths), limit]
        elif isinstance(step, (MixOp, ConcatOp)):
            extra = [[source_fingerprint(s, task, paths) for s in step.sources], limit]
        elif isinstance(step, FormatOp):  # decontamination runs here and reads dev/test
            extra = [recipe.decontaminate, recipe.decontaminate_ngram,
                     task_fingerprint(task, paths) if recipe.decontaminate else None]
        elif isinstance(step, SynthesizeOp):
            extra = synth.llm_cache_identity(llm)
        key = chain_key(key, step.model_dump(mode="json"), extra)
        keys.append(key)
    return keys


def _label_counts(ds: datasets.Dataset) -> dict[str, int]:
    counts = Counter(str(v) for v in transforms.column_values(ds, "label"))
    return dict(sorted(counts.items()))


def build_recipe(recipe: Recipe, task: Task, paths: dict | None = None,
                 cache_dir: str | os.PathLike | None = None, *, num_proc: int = 1,
                 limit: int | None = None, llm: LLMConfig | None = None, account: Any = None,
                 who: str = "synthesis") -> tuple[datasets.Dataset, dict[str, Any]]:
    """(dataset of prompt/completion rows, statistics). Raises RecipeError naming the step.

    ``cache_dir``: where step outputs are cached (none when None). ``num_proc``: worker
    processes for map/filter on large inputs. ``limit``: read only the first rows of each source
    (the dry run); such builds are never cached, and their synthesize steps are validated
    without calling the LLM. ``llm``: the run's ``[llm]`` config (LLMConfig fields), which
    synthesize steps use; None: a synthesize step fails (dry runs aside). ``account``: the run's
    LLM spend account they charge (``who`` names the trial); ``stats["llm_spent"]`` is what
    this build spent (cached steps cost nothing again).
    """
    t0 = time.time()
    paths = paths or {}
    cache = StepCache(cache_dir) if cache_dir is not None and limit is None else None
    keys = step_keys(recipe, task, paths, limit, llm) if cache else []
    stats: dict[str, Any] = {"steps": []}
    ds: datasets.Dataset | None = None
    start = 0
    if cache:
        for i in reversed(range(len(recipe.steps))):
            hit = cache.get(keys[i])
            if hit is not None:
                ds, stats = hit
                start = i + 1
                log.info("recipe cache: reusing the output of step %d (%s)", i, recipe.steps[i].op)
                break
    for i in range(start, len(recipe.steps)):
        step, where = recipe.steps[i], f"step {i} ({recipe.steps[i].op})"
        t1 = time.time()
        rows_in = 0 if ds is None else len(ds)
        par = num_proc if num_proc > 1 and rows_in >= PARALLEL_MIN_ROWS else None
        try:
            ds, extra = _run_step(step, ds, recipe, task, paths, where, par, limit, stats, llm, account, who)
        except RecipeError:
            raise
        except TaskDataError as e:
            raise RecipeError(f"{where}: {e}") from None
        except (pa.ArrowException, KeyError, TypeError, ValueError) as e:  # data the step cannot handle
            first = str(e).splitlines()[0][:300] if str(e) else ""
            raise RecipeError(f"{where}: {type(e).__name__}: {first}") from None
        stats["steps"].append({"op": step.op, "rows_in": rows_in, "rows_out": len(ds),
                               "seconds": round(time.time() - t1, 3), **extra})
        if len(ds) == 0:
            raise RecipeError(f"{where}: no rows left ({rows_in} in); loosen this step")
        if cache:
            cache.put(keys[i], ds, stats)
    assert ds is not None
    if len(ds) > recipe.max_rows:
        log.info("recipe: %d rows, capped to max_rows=%d", len(ds), recipe.max_rows)
        stats["capped"] = {"from": len(ds), "to": recipe.max_rows}
        ds = ds.shuffle(seed=0).select(range(recipe.max_rows))
    if not recipe.decontaminate:
        stats["decontamination"] = "off (turned off by the recipe)"
    if "label" in ds.column_names:
        stats["labels"] = _label_counts(ds)
    stats["rows"] = len(ds)
    stats["cache"] = {"hits": start, "misses": len(recipe.steps) - start} if cache else "off"
    spent = [s["llm"] for s in stats["steps"][start:] if isinstance(s.get("llm"), dict)]
    stats["llm_spent"] = {"tokens": sum(u.get("prompt_tokens", 0) + u.get("completion_tokens", 0) for u in spent),
                          "cost": round(sum(u.get("cost", 0.0) for u in spent), 6)}
    stats["seconds"] = round(time.time() - t0, 2)
    return ds, stats


def _run_step(step: Any, ds: datasets.Dataset | None, recipe: Recipe, task: Task, paths: dict,
              where: str, num_proc: int | None, limit: int | None,
              stats: dict[str, Any], llm: LLMConfig | None = None, account: Any = None,
              who: str = "synthesis") -> transforms.Result:
    if isinstance(step, LoadOp):
        return load_source(step, task, paths, where, limit, stats), {}
    if isinstance(step, MixOp):
        return mix(step, task, paths, where, limit, stats), {}
    assert ds is not None  # the recipe's shape rules put a source first
    if isinstance(step, ConcatOp):
        parts = [load_source(s, task, paths, f"{where} source {j}", limit, stats) for j, s in enumerate(step.sources)]
        return concat([ds, *parts], where), {}
    if isinstance(step, FormatOp):
        extra: dict[str, Any] = {}
        if recipe.decontaminate:
            ds, dropped = decontaminate(ds, recipe, task, paths, num_proc)
            stats["decontamination"] = {"dropped": dropped, "ngram": recipe.decontaminate_ngram}
            extra["decontaminated"] = dropped
            if len(ds) == 0:
                raise RecipeError(f"{where}: decontamination removed every row (all overlap dev/test)")
        out, _ = transforms.format_rows(ds, step, where, num_proc)
        return out, extra
    if isinstance(step, SynthesizeOp):
        return synth.synthesize(ds, step, where, llm, dry_run=limit is not None, account=account, who=who)
    return ROW_OPS[step.op](ds, step, where, num_proc)

