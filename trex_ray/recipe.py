"""Compatibility path: the recipe code lives in ``trex_ray.recipes`` (ops, build, cache, dry run)."""

from trex_ray.recipes.build import build_recipe
from trex_ray.recipes.dedup import Decontaminator
from trex_ray.recipes.sources import RecipeError

__all__ = ["Decontaminator", "RecipeError", "build_recipe"]
