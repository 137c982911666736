"""Schema-constrained LLM answers: the schema sent for constrained decoding, and the validation
of what comes back. Shared by the planning, diagnosis and insight calls. No Ray here.

Nothing the LLM writes is executed: an answer is parsed as JSON data only and validated against
the same pydantic models that define plans, so only validated data leaves this module.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from trex_ray.llm_client import extract_json
from trex_ray.search.plan import SEARCH_DIRECTIONS, explain

SCHEMA_STRING_CAP = 400  # longest string the constrained decoder may emit (keeps answers short)


class Answer(BaseModel):
    """Base of every LLM answer model: unknown fields are an error, not ignored."""

    model_config = ConfigDict(extra="forbid")


class InvalidAnswer(ValueError):
    """The LLM's answer is not JSON matching the schema (message: what is wrong, per field)."""


def llm_schema(model: type[BaseModel], max_items: int | None = None) -> dict[str, Any]:
    """The JSON schema sent for constrained decoding: the model's own schema with long string
    limits capped (a small model under a grammar otherwise fills thousands of characters) and
    the plan list capped at ``max_items``. Validation still uses the real model."""
    schema = copy.deepcopy(model.model_json_schema())

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "string" and "enum" not in node and node.get("maxLength", 10**9) > SCHEMA_STRING_CAP:
                node["maxLength"] = SCHEMA_STRING_CAP
            # A tag like ``op: Literal["load"] = "load"`` has a default, so pydantic leaves it
            # optional, but the discriminated union needs it: a grammar must always emit it.
            props = node.get("properties")
            if isinstance(props, dict):
                tags = [k for k, v in props.items() if isinstance(v, dict) and "const" in v]
                if tags:
                    node["required"] = list(dict.fromkeys([*node.get("required", []), *tags]))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    plan = schema.get("$defs", {}).get("Plan")
    if plan is not None:
        # Children always train, so the LLM-facing plan has a required, non-null training
        # config and no baseline direction; resources stay the run's (the LLM is not asked).
        props = plan["properties"]
        props["direction"] = {"enum": list(SEARCH_DIRECTIONS), "type": "string", "title": "Direction"}
        if "TrainingConfig" in schema["$defs"]:
            props["training"] = {"$ref": "#/$defs/TrainingConfig"}
            plan["required"] = list(dict.fromkeys([*plan.get("required", []), "training"]))
        props.pop("resources", None)
    if max_items is not None and "plans" in schema.get("properties", {}):
        schema["properties"]["plans"]["maxItems"] = max_items
    return schema


def validate_answer(text: str, model: type[BaseModel], name: str) -> BaseModel:
    """Parse (as JSON data only) and validate an answer; InvalidAnswer names every problem."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = extract_json(text)
        except ValueError as e:
            raise InvalidAnswer(f"{name}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise InvalidAnswer(f"{name}: expected a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise InvalidAnswer(explain(e, prefix=name)) from None
