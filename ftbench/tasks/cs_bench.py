"""CS-Bench (English): computer-science knowledge and reasoning in four question formats.

Source: csbench/csbench (Song et al. 2024), CC BY-NC 4.0. EN test 2,183 items (multiple-choice
1,336, assertion 442, fill-in-the-blank 235, open-ended 170) and EN valid 236 (our dev); no
training split exists. Prompts are the English wording of the source's ``create_input.py``
(the data's ``prompt`` field, used verbatim; rebuilt by the same templates for raw rows).

Scoring follows ``gen_judgment.py``: multiple-choice takes the first ``\\b[ABCD]\\b`` match in the
output (case-insensitive, so an English article "a" counts as option A, as in the source) and
compares it with the answer letter. Assertion: the source lower-cases the first
``\\b(true|false)\\b`` match and compares it with ``Answer.upper()``, which can never be equal
("true" != "TRUE"), so every assertion would score 0. The intent is a case-insensitive true/false
match, which is what is implemented here (a documented deviation). Fill-in-the-blank (0/1) and
open-ended (1-10, /10) items are graded by GPT-4 in the source; without a judge they have no
score, and, as in ``show_result.py`` (which skips items without a score), the primary
``accuracy`` is the mean over multiple-choice and assertion items only: the README's judge-free
mode. ``fill_in_blank_exact`` (normalised exact match) is a rough proxy reported on the side.

Hub: ``CS-Bench/CS-Bench`` holds the same files (``CS-Bench/English/...``); its split names
and layout were not verified from here (unsure).
"""

from __future__ import annotations

import re
import string

from ftbench.metrics import mean
from ftbench.task import HubSource, Task

MC, TF, FITB, OPEN = "Multiple-choice", "Assertion", "Fill-in-the-blank", "Open-ended"
_MC_RE = re.compile(r"\b[ABCD]\b", re.IGNORECASE)
_TF_RE = re.compile(r"\b(true|false)\b")
TEMPLATES = {
    MC: ("This is a multiple-choice question. Please read the question carefully and choose the correct answer. "
         "Question:{question}\nWhich one of the following options is correct? Options:\n{options}\n"
         "Please provide the answer to this question directly (a single letter):"),
    TF: ("This is a true/false question. Please determine whether the following statement is true or false. "
         "Statement:{question}Please give the answer directly (true or false):"),
    FITB: ("You are a professor proficient in computer science. This is a fill-in-the-blank question. Give answers "
           "to the following question without explanation or repeating it.Question:{question}Answer:"),
    OPEN: "This is a subjective question:{question}Please provide a brief answer to this question:",
}


def build_prompt(fmt: str, question: str, choices: dict | None) -> str:
    options = "\n".join(f"({k}){v}" for k, v in (choices or {}).items())
    return TEMPLATES[fmt].format(question=question, options=options)


def parse(text: str, row: dict | None = None) -> str | None:
    """MC: the first option letter (upper-cased); assertion: "true"/"false"; else the stripped
    text. None when an MC/assertion output has no answer."""
    text = text if isinstance(text, str) else ""
    fmt = (row or {}).get("format")
    if fmt == MC:
        m = _MC_RE.search(text)
        return m.group(0).upper() if m else None
    if fmt == TF:
        m = _TF_RE.search(text.lower())
        return m.group(1) if m else None
    return text.strip()


def _norm(s: str) -> str:
    s = "".join(ch for ch in s.lower() if ch not in string.punctuation)
    return " ".join(s.split())


def score(generations: list[str], rows: list[dict]) -> dict[str, float]:
    by_fmt: dict[str, list[float]] = {MC: [], TF: [], FITB: []}
    for g, r in zip(generations, rows):
        p, fmt, ans = parse(g, r), r["format"], str(r["reference"])
        if fmt == MC:
            by_fmt[MC].append(float(p is not None and p == ans.upper()))
        elif fmt == TF:
            by_fmt[TF].append(float(p is not None and p == ans.lower()))
        elif fmt == FITB:
            by_fmt[FITB].append(float(_norm(p or "") == _norm(ans)))
    return {
        "accuracy": mean(by_fmt[MC] + by_fmt[TF]),
        "accuracy_multiple_choice": mean(by_fmt[MC]),
        "accuracy_assertion": mean(by_fmt[TF]),
        "fill_in_blank_exact": mean(by_fmt[FITB]),
        "n_scored": float(len(by_fmt[MC]) + len(by_fmt[TF])),
        "n_judge_required": float(sum(r["format"] in (FITB, OPEN) for r in rows)),
    }


def normalize(row: dict) -> dict:
    """Uniform rows pass through; raw source rows (ID, Format, Question, Answer, A-D) are mapped."""
    if "prompt" in row and "format" in row:
        return row
    fmt = row["Format"]
    choices = {k: row[k] for k in "ABCD" if row.get(k) is not None} if fmt == MC else None
    return {
        "id": f"en/{row.get('ID', row['id'])}", "format": fmt, "domain": row.get("Domain"),
        "subdomain": row.get("SubDomain"), "tag": row.get("Tag"), "language": row.get("Language"),
        "question": row["Question"], "choices": choices, "reference": str(row["Answer"]),
        "prompt": build_prompt(fmt, row["Question"], choices),
    }


CS_BENCH = Task(
    id="cs_bench",
    name="CS-Bench computer science knowledge and reasoning (English)",
    description=(
        "Answer computer-science exam questions (data structures and algorithms, computer organization, "
        "operating systems, computer networks): multiple-choice questions with a single letter, "
        "true/false statements with 'true' or 'false', fill-in-the-blank and short open questions. "
        "Metric: accuracy on the multiple-choice and true/false questions."
    ),
    metric="accuracy",
    prompt_template="{prompt}",
    completion_template="{reference}",
    input_columns=("prompt", "reference", "format"),
    parse=parse,
    score=score,
    max_new_tokens=32,
    hub=HubSource(repo_id="CS-Bench/CS-Bench", splits={"dev": "validation", "test": "test"}),
    normalize=normalize,
    source_splits=("dev", "test"),
    source="csbench/csbench Dataset/CSBench-EN/{test,valid}.json; scoring gen_judgment.py + show_result.py",
    licence="CC BY-NC 4.0",
)
