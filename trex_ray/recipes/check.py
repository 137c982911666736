"""Dry run of a recipe: validate it and build it on the first rows of each source.

``python -m trex_ray.recipes check PLAN.yaml --task sst2 [--data-dir DIR] [--rows 200]``. The
file holds a plan (with a ``recipe``) or a bare recipe (with ``steps``), as YAML or JSON. Prints
one summary line and exits 0, or one error line and exits 2, so it is usable from scripts and by
an LLM Researcher before a trial spends GPU time on a recipe that cannot build.

A ``synthesize`` step is validated only (its columns, their types and the label set), never run:
a dry run must not spend LLM calls nor need the run's endpoint, and a handful of rows from a
model says little about the step anyway. Its rows pass through unchanged.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from trex_ray.search.plan import explain, parse_plan
from trex_ray.recipes.ops import Recipe

log = logging.getLogger(__name__)


class CheckError(ValueError):
    """The plan file or its recipe is not usable (message is the one line to show)."""


def load_recipe(path: str | Path) -> Recipe:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise CheckError(f"{p}: cannot read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(data, dict):
        raise CheckError(f"{p}: expected a plan or a recipe mapping")
    if "recipe" in data:
        return parse_plan(data).recipe
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        raise CheckError(explain(e, "recipe")) from None


def check(path: str | Path, task_id: str, paths: dict[str, Any] | None = None, rows: int = 200) -> dict[str, Any]:
    """Statistics of the recipe built on the first ``rows`` rows of each source (no cache)."""
    from ftbench.tasks import get_task
    from trex_ray.recipes.build import build_recipe

    recipe = load_recipe(path)
    try:
        task = get_task(task_id)
    except KeyError as e:
        raise CheckError(str(e.args[0])) from None
    _, stats = build_recipe(recipe, task, paths or {}, limit=rows)
    return stats
