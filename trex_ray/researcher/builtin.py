"""The built-in research policy: expert rules over the plan vocabulary, no LLM needed.

It is one implementation of the Researcher's interface (``propose(request) -> list[Plan]``);
the LLM Researcher implements the same one and falls back to this. Stateless: everything it
knows comes in the request (task spec and the tree's compressed memory), so it is trivially
resumable and testable.
"""

from __future__ import annotations

import math
from typing import Any

from trex_ray.config import TrainConfig
from trex_ray.recipes.ops import (MAX_SYNTH_ROWS, TASK_DEV, BalanceLabelsOp, ConcatOp, DedupExactOp, DropEmptyOp,
                                  Source, SynthesizeOp)
from trex_ray.search.plan import FormatOp, LoadOp, Plan, Recipe, SubsampleOp, TrainingConfig, template_fields
from trex_ray.search.request import DataSource, ExpansionRequest, TaskSpec

# What each direction changes, in the order an expert tries them when nothing is known yet.
PREFERENCE = ("hyperparameters", "more_data", "method", "prompt_format", "data_quality")
ANSWER_SUFFIX = "\nRespond with the answer only, no explanation."
RELEVANT_SHARE = 0.8  # extra sources within this share of the closest one's relevance are mixed


def _training(d: TrainConfig, seed: int) -> TrainingConfig:
    return TrainingConfig(
        method=d.method, learning_rate=d.learning_rate,
        num_epochs=d.num_epochs, batch_size=d.batch_size, grad_accum=d.grad_accum,
        max_seq_length=d.max_seq_length, lora_r=d.lora_r, lora_alpha=2 * d.lora_r, seed=seed,
    )


def first_plan(task: TaskSpec, d: TrainConfig, seed: int = 0) -> Plan:
    """The default fine-tune: the configured method and knobs on ``train_samples`` rows (for a
    task without a train split, on the first of its data plans)."""
    if not task.train_rows:
        return data_plans(task, d, seed)[0]
    training = _training(d, seed)
    n = min(d.train_samples, d.max_train_samples, task.train_rows)
    recipe = Recipe(steps=[
        LoadOp(), SubsampleOp(n=n, seed=seed),
        FormatOp(prompt=task.prompt_template, completion=task.completion_template),
    ])
    return Plan(direction="method", rationale=f"Default {d.method} fine-tune on {n} examples.",
                recipe=recipe, training=training)


def relevant_sources(task: TaskSpec) -> list[DataSource]:
    """The fitting extra sources whose rows read most like the dev rows: related at all, and
    within RELEVANT_SHARE of the closest one (the rules cannot judge topic; this keeps plainly
    unrelated data out of the mix), closest first; hub datasets (not measured) after them."""
    measured = [s for s in task.sources if s.related and s.relevance is not None]
    best = max((s.relevance for s in measured), default=0.0)
    close = sorted((s for s in measured if s.relevance >= RELEVANT_SHARE * best), key=lambda s: -s.relevance)
    return close + [s for s in task.sources if s.relevance is None]


def data_plans(task: TaskSpec, d: TrainConfig, seed: int = 0) -> list[Plan]:
    """The first plans of a task without a train split, each another way to build its rows: the
    extra sources closest to its dev rows, renamed to its columns and mixed; rows an LLM writes
    in the style of dev examples (never test); and both together. Dev rows only seed synthesis:
    generated copies of them go with decontamination, like any row overlapping dev or test."""
    fmt = FormatOp(prompt=task.prompt_template, completion=task.completion_template)
    n = min(d.train_samples, d.max_train_samples)
    picked = relevant_sources(task)
    parts = [Source(source=s.source, rename=s.rename) for s in picked]
    rows = sum(s.rows for s in picked)
    names = ", ".join(f"{s.name} ({s.rows} rows" + (f", relevance {s.relevance:.2f})" if s.relevance is not None else ")")
                      for s in picked)
    plans: list[tuple[str, list]] = []
    if picked:
        mixed = [LoadOp(**parts[0].model_dump()), *([ConcatOp(sources=parts[1:])] if parts[1:] else [])]
        plans.append((f"No train split: train on the extra source(s) closest to the dev rows, {names}, in the "
                      f"task's columns, {min(n, rows)} rows sampled.", [*mixed, SubsampleOp(n=min(n, rows), seed=seed)]))
    if task.synthesis:
        syn = min(n, MAX_SYNTH_ROWS)
        fields = list(dict.fromkeys(template_fields(task.prompt_template) + template_fields(task.completion_template)))
        gen = [LoadOp(source=TASK_DEV), SynthesizeOp(
            mode="generate", columns=fields, n=syn, keep="replace", seed=seed,
            instruction=f"An example for this task: {task.description}"[:500])]
        if picked:
            plans.append((f"No train split: {syn} rows an LLM writes in the style of dev examples, plus {names}; "
                          f"{min(n, syn + rows)} rows sampled.",
                          [*gen, ConcatOp(sources=parts), SubsampleOp(n=min(n, syn + rows), seed=seed)]))
        plans.append((f"No train split: {syn} rows an LLM writes in the style of dev examples (dev rows only "
                       "seed it; copies of them are dropped).", [*gen, SubsampleOp(n=syn, seed=seed)]))
    return [Plan(direction="data_quality", rationale=why, recipe=Recipe(steps=[*steps, fmt]), training=_training(d, seed))
            for why, steps in plans]


def _available(p: Plan, task: TaskSpec) -> int:
    """Rows plan ``p`` can draw on: the train split's, or its sources' plus what synthesis may write."""
    if task.train_rows:
        return task.train_rows
    rows = {s.source: s.rows for s in task.sources}
    used = [x.source for st in p.recipe.steps for x in ([st] if isinstance(st, LoadOp) else getattr(st, "sources", None) or [])]
    return sum(rows.get(x, 0) for x in used) + (MAX_SYNTH_ROWS if p.recipe.synthetic_rows else 0)


def _with(plan: Plan, direction: str, rationale: str, *, training: dict | None = None,
          n: int | None = None, prompt: str | None = None) -> Plan:
    """A copy of ``plan`` with some knobs changed (validated like any other plan); a new sample
    size ``n`` scales the rows its synthesis writes by as much."""
    steps = []
    cap = plan.recipe.sample_cap
    for s in plan.recipe.steps:
        if n is not None and isinstance(s, SubsampleOp):
            s = s.model_copy(update={"n": n})
        if n is not None and cap and isinstance(s, SynthesizeOp):
            s = s.model_copy(update={"n": max(1, min(MAX_SYNTH_ROWS, round(s.n * n / cap)))})
        if prompt is not None and isinstance(s, FormatOp):
            s = s.model_copy(update={"prompt": prompt})
        steps.append(s)
    t = plan.training.model_dump() | (training or {})  # type: ignore[union-attr]
    # A child of a warm-started node continues from that node too, unless it changes the method
    # or LoRA shape: then the node's weights cannot be loaded and it trains from scratch.
    if t["warm_start"] and any(t[k] != getattr(plan.training, k)
                               for k in ("method", "lora_r", "lora_alpha", "lora_target_modules")):
        t["warm_start"] = False
    return Plan.model_validate({
        "direction": direction, "rationale": rationale,
        "recipe": plan.recipe.model_copy(update={"steps": steps}).model_dump(),
        "training": t,
    })


def direction_gains(memory: dict[str, Any]) -> dict[str, float]:
    """Mean change each direction brought over its parent, from what the memory shows. Where a
    child was scored against its parent on the same dev rows, only a real change counts (its
    paired interval excludes 0): a difference within noise is no evidence, and chasing it is how
    a search ends up picking noise. Without a paired difference, the change of reward."""
    gains: dict[str, list[float]] = {}
    path = memory["path"]
    pairs = list(zip(path, path[1:]))
    parent = path[-2] if len(path) > 1 else None
    pairs += [(parent, s) for s in memory["siblings"]] if parent else []
    pairs += [(memory["node"], c) for c in memory["children"]]
    for before, after in pairs:
        vs = after.get("vs_parent")
        if after["status"] == "failed":
            gains.setdefault(after["direction"], []).append(-0.1)
        elif vs is not None:
            sign = 1.0 if memory.get("higher_is_better", True) else -1.0
            gains.setdefault(after["direction"], []).append(sign * vs["diff"] if vs["real"] else 0.0)
        elif before.get("reward") is not None and after.get("reward") is not None:
            gains.setdefault(after["direction"], []).append(after["reward"] - before["reward"])
    return {d: sum(v) / len(v) for d, v in gains.items()}


class BuiltinPolicy:
    """Expert rules: start from the configured defaults, then move each knob in the direction
    that has paid off so far (more of what helped, less of what hurt)."""

    def propose(self, request: ExpansionRequest) -> list[Plan]:
        mem, task, d = request.memory, request.task, request.defaults
        node_plan = Plan.model_validate(mem["node"]["plan"])
        seen = set(mem.get("tried", [])) | {Plan.model_validate(c["plan"]).fingerprint() for c in mem["children"]}
        # a task without a train split: the root's first plans are ways to build its data
        lead = data_plans(task, d, request.seed) if node_plan.training is None and not task.train_rows else []
        base = node_plan if node_plan.training is not None else (lead or [first_plan(task, d, request.seed)])[0]
        candidates = [] if node_plan.training is not None else [*lead, base]
        gains = direction_gains(mem)
        # helpful directions first, untried ones next (in expert order), harmful ones last
        order = sorted(PREFERENCE, key=lambda x: (-gains.get(x, 0.0), x in gains, PREFERENCE.index(x)))
        for direction in order:
            candidates += self._variants(direction, base, task, d, gains.get(direction),
                                         trained=node_plan.training is not None)
        # Only reached when asked for more than the rules above offer (a wide cluster expanding
        # the same node again): a coarse grid around the node (learning rate x LoRA rank, then
        # epochs and data), the sweep a practitioner starts with when GPUs are plentiful.
        candidates += _grid(base, task, d)
        out: list[Plan] = []
        for plan in candidates:
            key = plan.fingerprint()
            if key not in seen:
                seen.add(key)
                out.append(plan)
        # the data plans first; then one variant per direction, then second variants, so a batch
        # spans directions
        head = [p for p in out if p in lead]
        out = [p for p in out if p not in head]
        first = [p for i, p in enumerate(out) if p.direction not in {q.direction for q in out[:i]}]
        rest = [p for p in out if p not in first]
        return (head + first + rest)[: request.n]

    def _variants(self, direction: str, p: Plan, task: TaskSpec, d: TrainConfig, gain: float | None,
                  trained: bool = False) -> list[Plan]:
        """Plans one ``direction`` away from ``p``; ``trained``: ``p`` is the node's own plan,
        whose trained weights a child may start from (never the root's, the untrained model)."""
        t = p.training
        assert t is not None
        n = p.recipe.sample_cap or _available(p, task)
        cap = min(d.max_train_samples, _available(p, task))
        if direction == "hyperparameters":
            up = min(t.learning_rate * 2.5, 1e-2 if t.method == "lora" else 2e-4)
            down = t.learning_rate / 2.5
            first, second = (up, down) if gain is None or gain >= 0 else (down, up)
            # continued training from the node's weights: cheaper than retraining, and depth in
            # the tree then builds on what the node learned
            warm = [_with(p, direction, f"Continue the parent's training for one more epoch from its weights, "
                          f"at half its learning rate ({t.learning_rate:g} -> {t.learning_rate / 2:g}): "
                          "continued training wants smaller steps than training from scratch.",
                          training={"warm_start": True, "num_epochs": 1.0, "max_steps": -1,
                                    "learning_rate": t.learning_rate / 2})] if trained else []
            return [
                _with(p, direction, f"Learning rate {t.learning_rate:g} -> {first:g}.", training={"learning_rate": first}),
                _with(p, direction, f"{t.num_epochs:g} -> {t.num_epochs + 1:g} epochs.", training={"num_epochs": t.num_epochs + 1}),
                _with(p, direction, f"Learning rate {t.learning_rate:g} -> {second:g}.", training={"learning_rate": second}),
            ] + ([_with(p, direction, "Cosine schedule with 10 % warm-up instead of a linear decay from the first "
                        "step: steadier early updates, a gentler end.", training={"scheduler": "cosine", "warmup_ratio": 0.1})]
                 if t.scheduler != "cosine" else []) + warm
        if direction == "more_data" and n < cap:
            return [_with(p, direction, f"Twice the training data ({n} -> {min(2 * n, cap)} rows).", n=min(2 * n, cap))]
        if direction == "method":
            if t.method == "lora":
                r = min(t.lora_r * 2, 256)
                return [
                    _with(p, direction, f"LoRA rank {t.lora_r} -> {r} for more capacity.", training={"lora_r": r, "lora_alpha": 2 * r}),
                    _with(p, direction, "Full fine-tune instead of LoRA.", training={"method": "full", "learning_rate": min(t.learning_rate / 10, 5e-5)}),
                ]
            return [_with(p, direction, "LoRA instead of a full fine-tune.", training={"method": "lora", "learning_rate": 2e-4})]
        if direction == "data_quality":
            return _cleaner(p, task)
        if direction == "prompt_format":
            fmt = p.recipe.format.prompt
            alt = fmt[: -len(ANSWER_SUFFIX)] if fmt.endswith(ANSWER_SUFFIX) else fmt + ANSWER_SUFFIX
            return [_with(p, direction, "Prompt asks for the bare answer; format errors cost score.", prompt=alt)]
        return []


def _grid(p: Plan, task: TaskSpec, d: TrainConfig) -> list[Plan]:
    """Learning rate x {1/5, 1/2.5, 2.5, 5} crossed with LoRA rank x {1/2, 1, 2, 4} (LoRA), or the
    learning rates alone (full fine-tuning); that plane first at the node's epochs and data, then
    with one more epoch, then with twice the data, then both: nearest to the node first, within
    the plan bounds. Up to 64 plans, so a 64-slot cluster is filled by the root's first round."""
    t = p.training
    assert t is not None
    lr_cap = 1e-2 if t.method == "lora" else 2e-4
    lrs = sorted({min(t.learning_rate * f, lr_cap) for f in (1 / 2.5, 2.5, 1 / 5, 5)} - {t.learning_rate},
                 key=lambda x: abs(math.log(x / t.learning_rate)))
    ranks = [t.lora_r] + [r for r in (t.lora_r // 2, t.lora_r * 2, t.lora_r * 4) if 1 <= r <= 1024 and r != t.lora_r]
    if t.method != "lora":
        ranks = [t.lora_r]
    n = p.recipe.sample_cap or _available(p, task)
    more = min(2 * n, d.max_train_samples, _available(p, task))
    planes = [(t.num_epochs, None), (t.num_epochs + 1, None)] + ([(t.num_epochs, more), (t.num_epochs + 1, more)] if more > n else [])
    out = []
    for epochs, rows in planes:
        for r in ranks:
            for lr in lrs:
                what = f"learning rate {lr:g}" + (f", LoRA rank {r}" if r != t.lora_r else "")
                what += f", {epochs:g} epochs" if epochs != t.num_epochs else ""
                what += f", {rows} rows" if rows else ""
                knobs = {"learning_rate": lr, "num_epochs": epochs}
                knobs |= {"lora_r": r, "lora_alpha": 2 * r} if t.method == "lora" else {}
                out.append(_with(p, "hyperparameters", f"Grid around the node: {what}.", training=knobs, n=rows))
    return out


def _cleaner(p: Plan, task: TaskSpec) -> list[Plan]:
    """Clean the data before sampling it: drop rows with a blank input, drop repeated inputs
    (they overweight some examples and waste steps), and for classification cap every label at
    the rarest one's count, so the sample does not teach the majority label."""
    have = {s.op for s in p.recipe.steps}
    fields = [f for f in template_fields(p.recipe.format.prompt) if f in task.columns] or None
    added: list = []
    why: list[str] = []
    if "drop_empty" not in have and fields:
        added.append(DropEmptyOp(columns=fields))
    if "dedup_exact" not in have:
        added.append(DedupExactOp(columns=fields))
        why.append("drop duplicate inputs")
    if "label" in task.columns and "balance_labels" not in have:
        added.append(BalanceLabelsOp(column="label"))
        why.append("balance the labels")
    if not why:
        return []
    # rows seeded from dev are cleaned once written (the synthesize step that replaces them)
    at = next(i for i, s in enumerate(p.recipe.steps) if isinstance(s, SynthesizeOp)) + 1 if p.recipe.seeded_from_dev else 1
    steps = [*p.recipe.steps[:at], *added, *p.recipe.steps[at:]]
    return [Plan.model_validate({
        "direction": "data_quality", "rationale": f"Cleaner data: {', then '.join(why)} before sampling.",
        "recipe": p.recipe.model_copy(update={"steps": steps}).model_dump(),
        "training": p.training.model_dump() if p.training else None,
    })]
