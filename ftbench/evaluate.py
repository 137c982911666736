"""Evaluate any Hugging Face causal LM on a task: batched greedy generation, parsing, scoring.

Prompts go through the tokenizer's chat template when it has one, exactly as training formats
them (trl's prompt/completion conversational format), so train and eval see the same text.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

from ftbench.task import Task

log = logging.getLogger(__name__)


def load_model(
    model: str | os.PathLike,
    adapter: str | os.PathLike | None = None,
    trust_remote_code: bool = False,
    dtype: Any = None,
):
    """(model, tokenizer) from a path or hub id, with an optional LoRA adapter applied."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model), trust_remote_code=trust_remote_code)
    lm = AutoModelForCausalLM.from_pretrained(
        str(model), trust_remote_code=trust_remote_code, dtype=dtype or torch.float32
    )
    if adapter:
        from peft import PeftModel

        lm = PeftModel.from_pretrained(lm, str(adapter))
    lm.eval()
    return lm, tok


def chat_text(tokenizer, prompt: str) -> str:
    """The exact text the model sees for a user prompt (chat template when there is one)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    return prompt


def generate(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int = 16,
    on_batch: Callable[[int, int], None] | None = None,
) -> list[str]:
    """Greedy completions of ``prompts`` (in order). Batches by length to waste little padding."""
    import torch

    tokenizer.padding_side = "left"  # decoder-only models must be left-padded for batched generate
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    texts = [chat_text(tokenizer, p) for p in prompts]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out: list[str] = [""] * len(texts)
    device = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(device) for k, v in enc.items()}
        with torch.inference_mode():
            gen = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        new = gen[:, enc["input_ids"].shape[1] :]
        for i, text in zip(idx, tokenizer.batch_decode(new, skip_special_tokens=True)):
            out[i] = text.strip()
        if on_batch:
            on_batch(min(start + batch_size, len(order)), len(order))
    return out


def evaluate(
    task: Task,
    model,
    tokenizer,
    rows: list[dict],
    prompt_template: str | None = None,
    batch_size: int = 16,
    predictions_path: str | os.PathLike | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> dict[str, float]:
    """Score ``model`` on ``rows``; per-example predictions go to ``predictions_path`` (JSONL)."""
    t0 = time.time()
    prompts = [task.format_prompt(r, prompt_template) for r in rows]
    gens = generate(model, tokenizer, prompts, task.max_new_tokens, batch_size, on_batch)
    metrics = task.score(gens, rows)
    if predictions_path:
        write_predictions(task, rows, gens, predictions_path)
    metrics["eval_seconds"] = round(time.time() - t0, 2)
    metrics["n"] = len(rows)
    return metrics


def write_predictions(task: Task, rows: list[dict], gens: list[str], path: str | os.PathLike) -> None:
    """One JSON line per example: id, raw prediction, parsed answer and reference."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{path}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r, g in zip(rows, gens):
            rec = {"id": r["id"], "prediction": g, "parsed": task.parse(g, r), "reference": r.get("reference")}
            f.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")
    os.replace(tmp, path)
