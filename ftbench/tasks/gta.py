"""GTA (General Tool Agents): answer a real user query from the outputs of the tools called for it.

Source: open-compass/GTA (Wang et al., NeurIPS 2024 Datasets & Benchmarks); 229 human-written
queries with image files, each with the gold tool chain (``dialogs``) and a gold answer
(``gt_answer``): ``{"whitelist": [[aliases]...], "blacklist": [[aliases]...] | null}`` for
objective queries, a list of reference sentences for subjective ones, null for image-generation
ones. The repo is Apache-2.0; the dataset's licence is not stated in git. Test only; dev is
20 queries carved from test by a hash of the id and left out of every test score. Release:
``gta_dataset.zip`` (``dataset.json`` + ``toolmeta.json`` + ``image/``), also on the Hugging Face
Hub as ``Jize1/GTA`` (its file layout, ``dataset.json`` at the root, was not verified from here).

Text-only adaptation: the model gets the query, the attached file names, and the gold tool calls
with their outputs (the history the source's step-by-step mode, ``every_with_gt``, provides) and
must write the final answer; this is the source's answer step (SummAcc), not the end-to-end
agent run (AnsAcc), which needs the deployed tools and images. Scoring follows ``iscorrect`` in
``opencompass/datasets/gta_bench.py``: an answer is right when every whitelist alias group has an
alias matching as a whole word (case-insensitive) and no blacklist alias does. Subjective
queries are scored there by sentence-embedding similarity (all-mpnet-base-v2), which needs a
model download; they are excluded here, so the primary ``answer_acc`` is over objective queries
(``n_objective``/``n_subjective`` report the split). Image-generation queries have no answer.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ftbench.datafiles import read_json_records
from ftbench.metrics import mean
from ftbench.task import HubSource, Task

HUB_REPO = "Jize1/GTA"
INSTRUCTION = (
    "You are a helpful assistant that uses tools. Below are a user's query, the files attached to it, "
    "and the tools that were called to answer it with their outputs. Using them, give the final answer "
    "to the query. Be short and direct."
)


def is_correct(pred: str, ref: dict) -> bool:
    """The source's ``iscorrect``: all whitelist groups hit as whole words, no blacklist alias."""
    count = 0
    for aliases in ref["whitelist"]:
        pattern = r"\b(?:" + "|".join(re.escape(a) for a in aliases) + r")\b"
        if re.search(pattern, pred, re.IGNORECASE):
            count += 1
    if count != len(ref["whitelist"]):
        return False
    if not ref.get("blacklist"):
        return True
    bad = r"\b(?:" + "|".join(re.escape(a) for group in ref["blacklist"] for a in group) + r")\b"
    return not re.search(bad, pred, re.IGNORECASE)


def answer_type(gt) -> str:
    if isinstance(gt, dict):
        return "objective"
    return "subjective" if gt else "image_generation"


def parse(text: str, row: dict | None = None) -> str:
    return text.strip() if isinstance(text, str) else ""


def score(generations: list[str], rows: list[dict]) -> dict[str, float]:
    objective = [(parse(g), r["gt_answer"]) for g, r in zip(generations, rows) if answer_type(r["gt_answer"]) == "objective"]
    return {
        "answer_acc": mean(bool(p) and is_correct(p, ref) for p, ref in objective),
        "n_objective": float(len(objective)),
        "n_subjective": float(sum(answer_type(r["gt_answer"]) == "subjective" for r in rows)),
    }


def _content(c) -> str:
    if isinstance(c, dict) and "content" in c:
        return str(c["content"])
    return c if isinstance(c, str) else json.dumps(c, ensure_ascii=False)


def build_prompt(row: dict) -> tuple[str, str]:
    """(prompt, gold final answer) from a raw GTA record."""
    dialogs = row["dialogs"]
    last = max((i for i, d in enumerate(dialogs) if d["role"] == "assistant" and "tool_calls" not in d), default=None)
    history = dialogs if last is None else dialogs[:last]
    files = ", ".join(f"{f.get('path')} ({f.get('type', 'file')})" for f in row.get("files") or []) or "none"
    tools = ", ".join(t["name"] for t in row.get("tools") or []) or "none"
    lines, step = [INSTRUCTION, f"Files: {files}", f"Available tools: {tools}"], 0
    for d in history:
        if d["role"] == "user":
            lines.append(f"Query: {_content(d['content'])}")
        elif d["role"] == "assistant" and "tool_calls" in d:
            step += 1
            if d.get("thought"):
                lines.append(f"Thought {step}: {d['thought']}")
            fn = d["tool_calls"][0]["function"]
            lines.append(f"Tool call {step}: {fn['name']}({json.dumps(fn.get('arguments'), ensure_ascii=False)})")
        elif d["role"] == "tool":
            lines.append(f"Tool output {step} ({d.get('name', '')}): {_content(d.get('content'))}")
        elif d["role"] == "assistant":
            lines.append(f"Assistant: {_content(d.get('content'))}")
    lines.append("Final answer:")
    answer = "" if last is None else _content(dialogs[last].get("content", ""))
    return "\n".join(lines), answer


def normalize(row: dict) -> dict:
    if "prompt" in row and "gt_answer" in row and "reference" in row:
        return row
    prompt, answer = build_prompt(row)
    return {"id": str(row["id"]), "prompt": prompt, "reference": answer, "gt_answer": row["gt_answer"],
            "answer_type": answer_type(row["gt_answer"])}


def read_folder(folder: Path, split: str) -> list[dict] | None:
    """``dataset.json`` of the release (or of a ``gta_dataset/`` inside the folder), test only."""
    if split != "test":
        return None
    for f in (folder / "dataset.json", folder / "gta_dataset" / "dataset.json"):
        if f.exists():
            return read_json_records(f)
    return None


def hub_loader(split: str) -> list[dict] | None:
    if split != "test":
        return None
    from huggingface_hub import hf_hub_download

    return read_json_records(Path(hf_hub_download(HUB_REPO, "dataset.json", repo_type="dataset")))


GTA = Task(
    id="gta",
    name="GTA tool-use answer summarisation",
    description=(
        "Answer real user queries about attached images and files using the outputs of tools already "
        "called for them (OCR, image description, object counting, calculator, search and others): "
        "read the query and the tool calls with their results, then give a short, direct final answer. "
        "Metric: answer accuracy (the answer must contain the expected values as whole words)."
    ),
    metric="answer_acc",
    prompt_template="{prompt}",
    completion_template="{reference}",
    input_columns=("prompt", "reference", "gt_answer"),
    parse=parse,
    score=score,
    max_new_tokens=128,
    hub=HubSource(repo_id=HUB_REPO, splits={"test": "dataset.json"}),
    normalize=normalize,
    read_folder=read_folder,
    hub_loader=hub_loader,
    source_splits=("test",),
    dev_from_test=20,  # 229 queries: 20 dev, 209 test
    source="open-compass/GTA release gta_dataset.zip (dataset.json); scoring opencompass/datasets/gta_bench.py iscorrect",
    licence="Apache-2.0 repo; dataset licence not stated",
)
