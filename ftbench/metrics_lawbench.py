"""LawBench's 20 task scorers (open-compass/LawBench ``evaluation/evaluation_functions``), rewritten.

Each scorer takes the raw predictions, the references (the source ``answer`` string) and the
prompts, and returns ``{"score": s, "abstention_rate": a}`` with s in [0, 1] as the source does;
the benchmark number is the unweighted mean of the task scores. Definitions kept from the source,
quirks included: multiple-choice answers count only when no other option string appears; items
whose gold is "赔偿" (2-2) or a death/life sentence (3-4, 3-5) are skipped but still count in the
abstention denominator; 3-4/3-5 are normalised as (log 216 - mean log-distance) / log 216.

Known deviations: ROUGE-L reimplements ``rouge_chinese`` 1.0.3 (``Rouge().get_scores``) on
jieba-tokenised text, identical by construction. ``cn2an.transform`` (used by 3-1, 3-4, 3-5) is
replaced by ``cn_to_arabic`` below, which converts Chinese numerals the same way for the forms
those scorers look for (``第十二条``, ``一年六个月``, ``两年``, ``半``) but not cn2an's date, fraction
and percentage special cases. 2-1 is in ``metrics_cherrant`` (see its deviations).
"""

from __future__ import annotations

import logging
import math
import re
from functools import lru_cache
from collections import Counter
from typing import Callable, Sequence

from ftbench.metrics import mean
from ftbench.metrics_cherrant import wsjd_f05

Scorer = Callable[[Sequence[str], Sequence[str], Sequence[str]], dict[str, float]]

# ------------------------------------------------------------------ shared helpers


# Pure per-text work is cached by its inputs: a bootstrap rescores the same rows many times.
@lru_cache(maxsize=1 << 16)
def _jieba_words(text: str) -> str:
    import jieba

    jieba.setLogLevel(logging.WARNING)  # jieba logs its dictionary load at INFO on first use
    return " ".join(jieba.cut(text))


def _cut_sent(para: str) -> list[str]:
    """rouge_chinese's sentence splitter."""
    para = re.sub(r"([。！？\?])([^”’])", r"\1\n\2", para)
    para = re.sub(r"(\.{6})([^”’])", r"\1\n\2", para)
    para = re.sub(r"(\…{2})([^”’])", r"\1\n\2", para)
    para = re.sub(r"([。！？\?][”’])([^，。！？\?])", r"\1\n\2", para)
    return para.rstrip().split("\n")


def _lcs_len(x: list[str], y: list[str]) -> int:
    prev = [0] * (len(y) + 1)
    for xi in x:
        cur = [0]
        for j, yj in enumerate(y, 1):
            cur.append(prev[j - 1] + 1 if xi == yj else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


@lru_cache(maxsize=1 << 16)
def rouge_l_zh(hyp: str, ref: str) -> float:
    """ROUGE-L F of LawBench's ``compute_rouge``: both texts jieba-tokenised and space-joined, an
    empty hypothesis replaced by "无内容" (one untokenised word, so it matches nothing), then ``rouge_chinese`` ROUGE-L: its sentences are split,
    whitespace-normalised and flattened into words (split on single spaces), and
    F = 2PR/(P+R+1e-8) with P, R = LCS / hypothesis, reference length. An empty reference (which
    makes rouge_chinese raise) scores 0."""
    h = _jieba_words(hyp)
    h = h if h.strip() != "" else "无内容"
    r = _jieba_words(ref)
    h_sents = [" ".join(s.split()) for s in _cut_sent(h) if len(s) > 0]
    r_sents = [" ".join(s.split()) for s in _cut_sent(r) if len(s) > 0]
    if not h_sents or not r_sents:
        return 0.0
    hw = [w for s in h_sents for w in s.split(" ")]
    rw = [w for s in r_sents for w in s.split(" ")]
    lcs = _lcs_len(rw, hw)
    p, rec = lcs / len(hw), lcs / len(rw)
    return 2.0 * ((p * rec) / (p + rec + 1e-8))


def _cjrc_tokens(s: str) -> list[str]:
    """CAIL/CJRC F1 tokens: lower-cased characters, keeping only letters and digits."""
    return [ch for ch in s.lower() if ch.isdigit() or ch.isalpha()] if s else []


def cjrc_f1(gold: str, pred: str) -> float:
    """Character-level F1 of CAIL-2021's ``CJRCEvaluator.compute_f1``."""
    g, p = _cjrc_tokens(gold), _cjrc_tokens(pred)
    if not g or not p:
        return float(g == p)
    same = sum((Counter(g) & Counter(p)).values())
    if same == 0:
        return 0.0
    prec, rec = same / len(p), same / len(g)
    return 2 * prec * rec / (prec + rec)


def f1_sets(a: set, b: set) -> float:
    inter = len(a & b)
    prec = inter / len(a) if a else 0.0
    rec = inter / len(b) if b else 0.0
    return 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0


def multi_choice_judge(prediction: str, options: Sequence[str], answer: str) -> tuple[int, int]:
    """(correct, abstained): correct when the answer option appears and no other option does."""
    present = {o for o in options if o in prediction}
    if not present:
        return 0, 1
    return int(present == {answer}), 0


_CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_CN_UNITS = {"十": 10, "百": 100, "千": 1000}
_CN_BIG = {"万": 10_000, "亿": 100_000_000}
_CN_RUN = re.compile(r"[零〇一二三四五六七八九十百千万亿]+")


def _cn_int(run: str) -> int | None:
    if not any(c in _CN_UNITS or c in _CN_BIG for c in run):  # digit-by-digit form: 一二三 -> 123
        return int("".join(str(_CN_DIGITS[c]) for c in run))
    total, section, digit = 0, 0, None
    for c in run:
        if c in _CN_DIGITS:
            digit = _CN_DIGITS[c]
        elif c in _CN_UNITS:
            section += (1 if digit is None else digit) * _CN_UNITS[c]
            digit = None
        else:  # 万 / 亿
            section += digit or 0
            if section == 0:
                return None
            total, section, digit = (total + section) * _CN_BIG[c], 0, None
    return total + section + (digit or 0)


def cn_to_arabic(text: str) -> str:
    """Chinese numerals in ``text`` as Arabic digits (stand-in for ``cn2an.transform(t, "cn2an")``),
    including cn2an's pre-substitutions 廿 -> 二十, 半 -> 0.5, 两 -> 2."""
    text = text.replace("廿", "二十").replace("半", "0.5").replace("两", "2")

    def sub(m: re.Match) -> str:
        value = _cn_int(m.group())
        return m.group() if value is None else str(value)

    return _CN_RUN.sub(sub, text)


# ------------------------------------------------------------------ the 20 scorers


def _rouge_task(strip: str = "") -> Scorer:
    def score(preds, refs, prompts):
        return {"score": mean(rouge_l_zh(p, r.replace(strip, "") if strip else r) for p, r in zip(preds, refs))}

    return score


def _choice_task(options: Sequence[str], answer_of: Callable[[str], str], skip: Callable[[str], bool] = lambda a: False) -> Scorer:
    def score(preds, refs, prompts):
        scores, abstained = [], 0
        for p, r in zip(preds, refs):
            if skip(r):
                continue
            ok, ab = multi_choice_judge(p, options, answer_of(r))
            scores.append(ok)
            abstained += ab
        return {"score": mean(scores), "abstention_rate": abstained / max(len(refs), 1)}

    return score


def _option_set_task(options: Sequence[str], gold_of: Callable[[str], set]) -> Scorer:
    """F1 between the gold label set and the set of option strings found in the prediction."""

    def score(preds, refs, prompts):
        scores, abstained = [], 0
        for p, r in zip(preds, refs):
            found = {o for o in options if o in p}
            abstained += not found
            scores.append(f1_sets(gold_of(r), found))
        return {"score": mean(scores), "abstention_rate": abstained / max(len(refs), 1)}

    return score


def _rc_f1(preds, refs, prompts):
    return {"score": mean(cjrc_f1(r.replace("回答:", ""), p) for p, r in zip(preds, refs))}


NER_TYPES = ("犯罪嫌疑人", "受害人", "被盗货币", "物品价值", "盗窃获利", "被盗物品", "作案工具", "时间", "地点", "组织机构")


def _entities_pred(pred: str) -> dict[str, str]:
    out = {}
    for etype in NER_TYPES:
        for m in re.finditer(etype, pred):
            end = m.end()
            if end >= len(pred) - 2:
                continue
            if pred[end] in (":", "："):
                inst = re.split("\n| ", pred[end + 1 :].strip())[0].strip()
                if inst not in ("无", "未提及"):
                    out[etype] = inst
    return out


def _entities_ref(ref: str) -> dict[str, str]:
    if ref.strip() == "":
        return {}
    return {seg.split(":")[0]: seg.split(":")[1] for seg in ref.split(";")}


def _ie_f1(preds, refs, prompts):
    """2-6 soft-F1: per entity type found in both, CJRC F1 of the instances; P over predicted
    types, R over gold types."""
    total, abstained = 0.0, 0
    for p, r in zip(preds, refs):
        h, g = _entities_pred(p), _entities_ref(r)
        if not g:
            total += 1 if not h else 0
            continue
        abstained += not h
        inter = [cjrc_f1(g[t], inst) for t, inst in h.items() if t in g]
        prec = sum(inter) / len(h) if h else 0.0
        rec = sum(inter) / len(g)
        total += 2 * prec * rec / (prec + rec + 1e-10)
    return {"score": total / max(len(refs), 1), "abstention_rate": abstained / max(len(refs), 1)}


def _cfcy(preds, refs, prompts):
    """2-10 soft-F1: the i-th predicted trigger (split on ';') against the i-th gold one."""
    total = 0.0
    for p, r in zip(preds, refs):
        golds, hyps = r.split(";"), p.split(";")
        inter = [cjrc_f1(g, h) for g, h in zip(golds, hyps)]
        prec, rec = sum(inter) / len(hyps), sum(inter) / len(golds)
        total += 2 * prec * rec / (prec + rec + 1e-10)
    return {"score": total / max(len(refs), 1)}


def _ljp_article(preds, refs, prompts):
    scores, abstained = [], 0
    for p, r in zip(preds, refs):
        gold = {int(x) for x in r.replace("法条:刑法第", "").replace("条", "").split("、") if x.isdigit()}
        found = set()
        for chunk in p.split("、"):
            chunk = chunk.replace("万元", "元")
            chunk = re.sub(r"第(.*?)款", "", chunk)
            chunk = re.sub(r"第(.*?)条", lambda m: m.group(1), chunk)
            nums = re.findall(r"\d+", cn_to_arabic(chunk))
            if nums:
                found.add(int(nums[0]))
        abstained += not found
        scores.append(f1_sets(found, gold))
    return {"score": mean(scores), "abstention_rate": abstained / max(len(refs), 1)}


_LOG216 = math.log(216)


def _ljp_imprison(preds, refs, prompts):
    dists, abstained = [], 0
    for p, r in zip(preds, refs):
        if "死刑" in r or "无期" in r:
            continue
        gold = int(r.replace("刑期:", "").replace("个月", ""))
        p = cn_to_arabic(p)
        months = [int(d) for d in re.findall(r"(\d+)个月", p)] + [int(d) for d in re.findall(r"(\d+)月", p)]
        years = [int(d) for d in re.findall(r"(\d+)年", p)]
        guess = months[0] if months else years[0] * 12 if years else -1
        if guess == -1:
            abstained += 1
            dists.append(_LOG216)
        else:
            dists.append(abs(math.log(gold + 1) - math.log(guess + 1)))
    return {"score": (_LOG216 - mean(dists)) / _LOG216 if dists else 0.0,
            "abstention_rate": abstained / max(len(refs), 1)}


def _jetq(preds, refs, prompts):
    scores, abstained = [], 0
    for p, r in zip(preds, refs):
        gold = float(r.replace("上文涉及到的犯罪金额:", "").replace("元。", ""))
        nums = [float(d) for d in re.findall(r"\d+\.?\d*", p)]
        abstained += not nums
        scores.append(int(gold in nums))
    return {"score": mean(scores), "abstention_rate": abstained / max(len(refs), 1)}


def _wsjd(preds, refs, prompts):
    return {"score": wsjd_f05(preds, refs, prompts)}


ABCD, ABCDE = ("A", "B", "C", "D"), ("A", "B", "C", "D", "E")
DISPUTE_FOCI = ("诉讼主体", "租金情况", "利息", "本金争议", "责任认定", "责任划分", "损失认定及处理", "原审判决是否适当",
                "合同效力", "财产分割", "责任承担", "鉴定结论采信问题", "诉讼时效", "违约", "合同解除", "肇事逃逸")
MARITAL = ("婚后有子女", "限制行为能力子女抚养", "有夫妻共同财产", "支付抚养费", "不动产分割", "婚后分局", "二次起诉离婚",
           "按月给付抚养费", "准予离婚", "有夫妻共同债务", "婚前个人财产", "法定离婚", "不履行家庭义务", "存在非婚生子",
           "适当帮助", "不履行离婚协议", "损害赔偿", "感情不和分居满二年", "子女随非抚养权人生活", "婚后个人财产")
TOPICS = ("婚姻家庭", "劳动纠纷", "交通事故", "债权债务", "刑事辩护", "合同纠纷", "房产纠纷", "侵权", "公司法", "医疗纠纷",
          "拆迁安置", "行政诉讼", "建设工程", "知识产权", "综合咨询", "人身损害", "涉外法律", "海事海商", "消费权益", "抵押担保")
EVENTS = ("支付/给付", "欺骗", "搜查/扣押", "要求/请求", "卖出", "买入", "获利", "拘捕", "鉴定", "同意/接受", "供述", "联络",
          "帮助/救助", "租用/借用", "受伤", "伪造", "卖淫", "伤害人身", "赔偿", "归还/偿还")


def _charges() -> tuple[str, ...]:
    from ftbench.lawbench_charges import CHARGES

    return CHARGES


def _accusation(preds, refs, prompts):
    return _option_set_task(_charges(), lambda r: set(r.replace("罪名:", "").split(";")))(preds, refs, prompts)


SCORERS: dict[str, Scorer] = {
    "1-1": _rouge_task("答案:"),
    "1-2": _choice_task(ABCD, lambda r: r[5]),
    "2-1": _wsjd,
    "2-2": _choice_task(DISPUTE_FOCI, lambda r: r[7:-1], skip=lambda r: r[7:-1] == "赔偿"),
    "2-3": _option_set_task(MARITAL, lambda r: set(r[3:-1].split("、"))),
    "2-4": _choice_task(TOPICS, lambda r: r),
    "2-5": _rc_f1,
    "2-6": _ie_f1,
    "2-7": _rouge_task(),
    "2-8": _choice_task(ABCDE, lambda r: r[6]),
    "2-9": _option_set_task(EVENTS, lambda r: set(r.split(";"))),
    "2-10": _cfcy,
    "3-1": _ljp_article,
    "3-2": _rouge_task(),
    "3-3": _accusation,
    "3-4": _ljp_imprison,
    "3-5": _ljp_imprison,
    "3-6": _choice_task(ABCD, lambda r: r[5]),
    "3-7": _jetq,
    "3-8": _rouge_task(),
}


def lawbench_scores(preds: Sequence[str], refs: Sequence[str], prompts: Sequence[str], task_ids: Sequence[str]) -> dict[str, float]:
    """Per-task scores (``task_<id>``) and their unweighted mean (``average``) over the LawBench
    tasks present; the leaderboard's "average" is this x 100 over all 20."""
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(task_ids):
        groups.setdefault(t, []).append(i)
    out: dict[str, float] = {}
    for t in sorted(groups, key=lambda k: [int(x) for x in k.split("-")]):
        idx = groups[t]
        res = SCORERS[t]([preds[i] for i in idx], [refs[i] for i in idx], [prompts[i] for i in idx])
        out[f"task_{t}"] = res["score"]
        if "abstention_rate" in res:
            out[f"abstention_{t}"] = res["abstention_rate"]
    out["average"] = mean(v for k, v in out.items() if k.startswith("task_"))
    return out
