"""The first GPU check: the project's trial function, without Ray, against a plain trl script.

For each model shape (bench/shapes: SmolLM2-135M's and Qwen3-1.7B's published configs, randomly
initialised) and each method (LoRA, full), in bf16 on one GPU, it runs
  1. the trial: ``executor.execute``, the function Tune's trainable runs (recipe built with
     ``datasets``, ``fine_tune`` with trl's SFTTrainer, dev evaluation with ftbench), and
  2. plain trl: SFTTrainer on the same rows, model and training config, written as a user would,
and prints, per run: training tokens/s of both and their ratio (goal >= 0.95), peak GPU memory
while training (torch.cuda.max_memory_allocated) against search/fit.py's estimate, and the dev
evaluation's throughput (rows/s, tokens/s).

The data are FT-Bench SST-2's packaged sentences joined into rows of about --row-tokens tokens
(FT-Bench rows are that long; SST-2's own 20-token rows would leave a GPU idle), in the task's
schema, written to a temporary data folder that the task loads like any user's data. There is
no hub on the GPU machine: the tokenizer is a BPE trained on those sentences, and the model's
vocabulary keeps the shape's full size, so the embeddings, lm_head and loss cost what they do
for the real model. Scores are meaningless (random weights); throughput and memory are not.

On the GPU machine (python 3.12, torch with CUDA, transformers, peft, accelerate, pyarrow; no
network, no ray, trl or datasets), one command, after fetching the missing pins here (keep .whl
out of git: echo /.whl/ >> .git/info/exclude; the device tool's run then carries it):
    python bench/gpu_check.py --fetch-wheels .whl       # here: cp312 wheels the image lacks
    python3 -m pip install -q --no-index --no-deps --no-compile --target .site .whl/*.whl \\
        && PYTHONPATH=$PWD/.site:$PWD python3 bench/gpu_check.py
On a CPU, end to end in well under a minute (tests/test_gpu_paths.py runs it):
    python bench/gpu_check.py --tiny --device cpu
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHAPES = REPO / "bench" / "shapes"
# What the GPU image lacks, or holds at another version than the project's pins (KINDS.md's
# package list): carried as wheels, at the versions installed here (the pyproject.toml pins).
CARRY = ["trl", "datasets", "transformers", "peft", "huggingface_hub", "httpx2", "httpcore2", "truststore",
         "dill", "multiprocess", "pydantic", "pydantic_core", "annotated-types", "typing-inspection",
         "typing_extensions", "fsspec", "rdkit"]
WHEEL_LIMIT_MB = 60  # the device tool carries 64 MiB with the working tree
# --paper-estimate's defaults, until this check has run on a GPU: Qwen3-1.7B LoRA at 40% of an
# A100-80GB's 312 bf16 TFLOP/s, about 4 x 1.72e9 FLOP per token (forward, and backward through
# the frozen base); HF generate's per-step time for a batch of 32 (launch-bound at this size).
PAPER_TOKENS_PER_S = 18_000
DECODE_S = 0.03
TRIAL_OVERHEAD_S = 60  # process start, loading 3.4 GB of weights, saving the adapter
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class Setting:
    """One run's shape and size."""

    shape: str  # a file in bench/shapes, without .json
    method: str  # lora or full
    rows: int  # training rows (one epoch)
    batch_size: int
    max_seq_length: int
    dev_rows: int


def settings(tiny: bool) -> list[Setting]:
    if tiny:
        return [Setting("tiny", m, rows=16, batch_size=4, max_seq_length=128, dev_rows=8) for m in ("lora", "full")]
    return [Setting(shape, m, rows=rows, batch_size=8, max_seq_length=1024, dev_rows=256)
            for shape, rows in (("smollm2-135m", 800), ("qwen3-1.7b", 320)) for m in ("lora", "full")]


# ------------------------------------------------------------------ data, tokenizer, model
def write_data(folder: Path, row_tokens: int, train_rows: int, dev_rows: int, seed: int = 0) -> None:
    """SST-2 sentences joined into rows of about ``row_tokens`` tokens (about 1.3 tokens a word),
    each labelled by its first sentence, as train.jsonl and dev.jsonl in the task's schema."""
    from ftbench.task import load_split
    from ftbench.tasks import get_task

    sentences = load_split(get_task("sst2"), "train")
    rng = random.Random(seed)
    words_per_row = max(4, int(row_tokens / 1.3))
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", train_rows), ("dev", dev_rows)):
        with open(folder / f"{split}.jsonl", "w") as f:
            for k in range(n):
                first = rng.choice(sentences)
                words = first["input"].split()
                while len(words) < words_per_row:
                    words += rng.choice(sentences)["input"].split()
                f.write(json.dumps({"id": f"{split}/{k}", "input": " ".join(words[:words_per_row]),
                                    "label": first["label"], "reference": first["reference"]}) + "\n")


def build_model(shape: str, folder: Path, corpus_file: Path, device: str) -> Path:
    """A randomly initialised model of ``shape`` with a BPE tokenizer trained on the corpus,
    saved in bf16 (the trial loads LoRA's base in bf16 and full fine-tuning's in fp32)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    config = json.loads((SHAPES / f"{shape}.json").read_text())
    texts = [json.loads(line)["input"] for line in corpus_file.read_text().splitlines()]
    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    specials = ["<unk>", "<|im_start|>", "<|im_end|>", "<pad>"]
    tk.train_from_iterator(texts + ["positive negative"] * 8, trainers.BpeTrainer(
        vocab_size=min(8000, config["vocab_size"]), special_tokens=specials, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<|im_start|>",
                                  eos_token="<|im_end|>", pad_token="<pad>")
    tok.chat_template = CHAT_TEMPLATE
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    fields = {k: v for k, v in config.items() if k not in ("architectures", "torch_dtype", "model_type")}
    cfg = AutoConfig.for_model(config["model_type"], **fields, **ids)
    torch.manual_seed(0)
    with torch.device(device):  # initialise where it is fast (a 1.7B model on the CPU takes minutes)
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    del model
    return folder


# ------------------------------------------------------------------ the two runs
def memory_start(device: str) -> int:
    import torch

    gc.collect()
    if device != "cuda":
        return 0
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_allocated()


def memory_peak(device: str) -> int | None:
    import torch

    return torch.cuda.max_memory_allocated() if device == "cuda" else None


def run_trial(s: Setting, model_dir: Path, data_dir: Path, out: Path, device: str) -> dict[str, Any]:
    """The project's trial function, as Tune's trainable calls it, minus Ray."""
    from trex_ray.config import LLMConfig, ModelConfig, TaskConfig
    from trex_ray.executor.context import TrialContext
    from trex_ray.executor.execute import execute
    from trex_ray.search.plan import FormatOp, LoadOp, Plan, Recipe, TrainingConfig, TrialResources
    from ftbench.tasks import get_task

    task = get_task("sst2")
    plan = Plan(direction="method", recipe=Recipe(steps=[
        LoadOp(), FormatOp(prompt=task.prompt_template, completion=task.completion_template)]),
        training=training_config(s, TrainingConfig))
    ctx = TrialContext(task=TaskConfig(name="sst2", data_dir=str(data_dir)).resolved(),
                       model=ModelConfig(name_or_path=str(model_dir)), llm=LLMConfig(),
                       resources=TrialResources(gpus_per_worker=1 if device == "cuda" else 0,
                                                cpus_per_worker=max(1, (os.cpu_count() or 2) // 2)),
                       run_dir=str(out), dev_limit=s.dev_rows, eval_batch_size=32,
                       threads=max(1, (os.cpu_count() or 2) // 2))
    seen: dict[str, Any] = {}

    def progress(update: dict[str, Any]) -> None:
        if "train_runtime" in update:  # the Trainer's last log: the training loop's own time
            seen["train_runtime"] = update["train_runtime"]
            seen["peak"] = memory_peak(device)

    base = memory_start(device)
    outcome = execute(plan, "n1", ctx, progress)
    node = out / "nodes" / "n1"
    preds = [json.loads(line) for line in (node / "dev_predictions.jsonl").read_text().splitlines()]
    import torch

    bf16 = torch.load(node / "model" / "training_args.bin", weights_only=False).bf16  # what the trial chose
    return {"tokens": outcome.cost.train_tokens, "bf16": bf16, "train_s": seen["train_runtime"], "peak": seen.get("peak"),
            "base": base, "score": outcome.score, "eval_s": outcome.metrics["eval_seconds"],
            "eval_rows": int(outcome.metrics["n"]), "predictions": [p["prediction"] for p in preds]}


def training_config(s: Setting, cls: Any) -> Any:
    return cls(method=s.method, learning_rate=2e-4 if s.method == "lora" else 2e-5, num_epochs=1,
               batch_size=s.batch_size, max_seq_length=s.max_seq_length, lora_r=16, lora_alpha=32,
               lora_dropout=0.05, warmup_ratio=0.0, seed=0)


def run_plain_trl(s: Setting, model_dir: Path, data_dir: Path, out: Path, device: str, bf16: bool,
                  limit: int | None = None) -> dict[str, Any]:
    """What a user writes with trl alone: the same rows, prompt, model and knobs, the same
    precision (``bf16``: autocast, LoRA's base in bf16, full fine-tuning's master weights in fp32)."""
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from trl import SFTConfig, SFTTrainer

    from ftbench.tasks import get_task

    task = get_task("sst2")
    rows = [json.loads(line) for line in (data_dir / "train.jsonl").read_text().splitlines()][:limit]
    ds = datasets.Dataset.from_list([
        {"prompt": [{"role": "user", "content": task.prompt_template.format(**r)}],
         "completion": [{"role": "assistant", "content": task.completion_template.format(**r)}]} for r in rows])
    base = memory_start(device)
    tok = AutoTokenizer.from_pretrained(model_dir)
    dtype = torch.bfloat16 if bf16 and s.method == "lora" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    t = training_config(s, dict)
    args = SFTConfig(output_dir=str(out), per_device_train_batch_size=t["batch_size"], learning_rate=t["learning_rate"],
                     num_train_epochs=1, max_length=t["max_seq_length"], bf16=bf16, use_cpu=device != "cuda",
                     logging_steps=10, save_strategy="no", report_to="none", disable_tqdm=True, seed=0,
                     gradient_checkpointing=False)  # the trial's setting (trl's default recomputes activations)
    lora = LoraConfig(r=t["lora_r"], lora_alpha=t["lora_alpha"], lora_dropout=t["lora_dropout"],
                      target_modules="all-linear", task_type="CAUSAL_LM") if s.method == "lora" else None
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=lora)
    trainer.remove_callback(PrinterCallback)  # keep this script's report readable
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
    metrics = trainer.train().metrics
    result = {"tokens": tokens, "train_s": metrics["train_runtime"], "peak": memory_peak(device), "base": base}
    del trainer, model
    return result


# ------------------------------------------------------------------ report
def estimate_gib(s: Setting, model_dir: Path, seq_len: int) -> float:
    from trex_ray.search.fit import ModelDims, estimate

    dims = ModelDims.from_model_dir(model_dir)
    assert dims is not None
    return estimate(dims, s.method, 16, s.batch_size, seq_len, lora_dropout=0.05).total_gib


def eval_tokens(model_dir: Path, data_dir: Path, n: int, predictions: list[str]) -> int:
    """Prompt plus generated tokens of the dev evaluation, as the model saw them."""
    from transformers import AutoTokenizer

    from ftbench.evaluate import chat_text
    from ftbench.tasks import get_task

    task = get_task("sst2")
    tok = AutoTokenizer.from_pretrained(model_dir)
    rows = [json.loads(line) for line in (data_dir / "dev.jsonl").read_text().splitlines()][:n]
    prompts = sum(len(tok(chat_text(tok, task.format_prompt(r)), add_special_tokens=False)["input_ids"]) for r in rows)
    return prompts + sum(len(tok(p, add_special_tokens=False)["input_ids"]) for p in predictions)


def gib(b: int | None) -> str:
    return "n/a (cpu)" if b is None else f"{b / 2**30:.2f} GiB"


def check(args: argparse.Namespace) -> int:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = True  # what any GPU user sets; fp32 parts of amp use it
    import transformers

    print(f"device {device}" + (f" ({torch.cuda.get_device_name()}, capability "
                                f"{'.'.join(map(str, torch.cuda.get_device_capability()))})" if device == "cuda" else ""))
    print(f"torch {torch.__version__}  transformers {transformers.__version__}  "
          f"trl {__import__('trl').__version__}  peft {__import__('peft').__version__}  "
          f"datasets {__import__('datasets').__version__}")
    t_start = time.time()
    work = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    worst = None
    for shape in dict.fromkeys(s.shape for s in settings(args.tiny)):
        runs = [s for s in settings(args.tiny) if s.shape == shape]
        row_tokens = 48 if args.tiny else args.row_tokens
        data = work / f"data-{shape}"
        write_data(data, row_tokens, max(s.rows for s in runs), max(s.dev_rows for s in runs))
        t0 = time.time()
        model_dir = build_model(shape, work / f"model-{shape}", data / "train.jsonl", device)
        from trex_ray.search.fit import ModelDims

        dims = ModelDims.from_model_dir(model_dir)
        print(f"\n== {shape}: {dims.params / 1e6:,.1f}M parameters, vocabulary {dims.vocab}, "
              f"built in {time.time() - t0:.0f} s")
        if shape == settings(args.tiny)[0].shape:
            # warm-up, not measured: the first training of a process pays for CUDA's context,
            # cuBLAS handles and kernel loading, which would count against whichever ran first
            run_plain_trl(runs[0], model_dir, data, work / "warm-up", device, bf16=device == "cuda",
                          limit=2 * runs[0].batch_size)
        for s in runs:
            trial = run_trial(s, model_dir, data, work / f"trial-{shape}-{s.method}", device)
            plain = run_plain_trl(s, model_dir, data, work / f"trl-{shape}-{s.method}", device, trial["bf16"])
            tps_trial, tps_plain = trial["tokens"] / trial["train_s"], plain["tokens"] / plain["train_s"]
            ratio = tps_trial / tps_plain
            worst = ratio if worst is None else min(worst, ratio)
            longest = s.max_seq_length  # rows are cut there (the estimate's sequence length)
            est = estimate_gib(s, model_dir, longest)
            peak = None if trial["peak"] is None else trial["peak"] - trial["base"]
            eval_tok = eval_tokens(model_dir, data, trial["eval_rows"], trial["predictions"])
            print(f"-- {shape} {s.method}: {s.rows} rows x ~{trial['tokens'] // s.rows} tokens, batch {s.batch_size}, "
                  f"max_seq_length {s.max_seq_length}, bf16 {trial['bf16']}")
            print(f"   train tokens/s      trial {tps_trial:,.0f}  plain trl {tps_plain:,.0f}  ratio {ratio:.3f} "
                  f"(goal >= 0.95; tokens {trial['tokens']:,} / {plain['tokens']:,})")
            print(f"   peak memory         trial {gib(peak)}  plain trl "
                  f"{gib(None if plain['peak'] is None else plain['peak'] - plain['base'])}  "
                  f"estimate {est:.2f} GiB" + (f"  (peak / estimate {peak / 2**30 / est:.2f})" if peak else ""))
            print(f"   eval                {trial['eval_rows']} rows in {trial['eval_s']:.1f} s: "
                  f"{trial['eval_rows'] / trial['eval_s']:.1f} rows/s, {eval_tok / trial['eval_s']:,.0f} tokens/s "
                  f"(dev score {trial['score']:.3f}, random weights)")
            sys.stdout.flush()
            for d in (f"trial-{shape}-{s.method}", f"trl-{shape}-{s.method}"):  # saved models: GBs each
                shutil.rmtree(work / d, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    print(f"\nworst throughput ratio {worst:.3f} (goal >= 0.95); total {time.time() - t_start:.0f} s")
    return 0


def paper_estimate(tokens_per_s: float) -> int:
    """What each cluster/configs/paper-*.yaml asks of a cluster: GPUs (its concurrency x GPUs per
    trial), memory per GPU (search/fit.py at the batch's real row length) and hours, from the
    tokens its trials train on (the task's rows, formatted and tokenized, x rows x epochs, for
    trials of train_samples up to max_train_samples rows), its dev evaluations (prefill at
    3x the training rate, decoding at DECODE_S per step of a 32-row batch) and ``tokens_per_s``
    (training, one GPU), plus TRIAL_OVERHEAD_S a trial and the final test scoring. FT-Bench data from $FTBENCH_DATA or ../shared/ftbench-data; tokens
    counted with SmolLM2's tokenizer (the builtin model; Qwen3's needs the hub)."""
    import math

    from ftbench.evaluate import chat_text
    from ftbench.task import TaskDataError, load_split
    from transformers import AutoTokenizer

    from trex_ray.config import ModelConfig, load_config
    from trex_ray.executor.models import resolve_model
    from trex_ray.search.fit import ModelDims, estimate
    from trex_ray.tasks import resolve_task

    data_root = Path(os.environ.get("FTBENCH_DATA", REPO.parent / "shared" / "ftbench-data"))
    tok = AutoTokenizer.from_pretrained(resolve_model(ModelConfig(name_or_path="builtin:smollm2-135m-instruct")))
    dims = ModelDims.from_config(json.loads((SHAPES / "qwen3-1.7b.json").read_text()))
    print(f"training at {tokens_per_s:,.0f} tokens/s per GPU; decoding {DECODE_S * 1000:.0f} ms per step; "
          f"{TRIAL_OVERHEAD_S} s start-up a trial")
    for f in sorted((REPO / "cluster" / "configs").glob("paper-*.yaml")):
        cfg = load_config(f, [f"--task.data_dir={data_root / f.stem[len('paper-'):]}"])
        try:
            task = resolve_task(cfg.task)
            rows = load_split(task, "train", cfg.task.paths())
        except (TaskDataError, OSError, ValueError) as e:
            print(f"{f.name:26} no local train split ({str(e)[:60]})")
            continue
        t, r = cfg.train, cfg.resources
        sample = rows[:: max(1, len(rows) // 500)]
        lengths = sorted(min(t.max_seq_length, len(tok(chat_text(tok, task.format_prompt(x)) + task.completion_template.format(**x)
                                                       + tok.eos_token, add_special_tokens=False)["input_ids"]))
                         for x in sample)
        mean, p95 = sum(lengths) / len(lengths), lengths[int(0.95 * (len(lengths) - 1))]
        def eval_s(split: str, limit: int) -> float:
            try:
                n = min(limit, len(load_split(task, split, cfg.task.paths())))
            except TaskDataError:
                return 0.0
            return math.ceil(n / 32) * task.max_new_tokens * DECODE_S + n * mean / (3 * tokens_per_s)

        dev_s = eval_s("dev", cfg.task.dev_limit)
        final_s = dev_s + 2 * eval_s("test", cfg.task.test_limit)  # baseline on dev; base and best on test
        hours = []
        for n in (t.train_samples, t.max_train_samples):
            train_s = min(n, len(rows)) * mean * t.num_epochs / tokens_per_s
            hours.append((cfg.search.max_trials * (TRIAL_OVERHEAD_S + train_s + dev_s) + final_s) / 3600)
        gpus = cfg.search.max_concurrent_trials * r.num_workers * max(1.0, r.gpus_per_trial)
        mem = estimate(dims, t.method, t.lora_r, t.batch_size, p95).total_gib
        worst = estimate(dims, t.method, t.lora_r, t.batch_size, t.max_seq_length).total_gib
        print(f"{f.name:26} {len(rows):>6,} train rows, {mean:,.0f} tokens/row (p95 {p95:,}): {gpus:g} GPUs, "
              f"{mem:.0f} GiB/GPU at p95 rows ({worst:.0f} at max_seq_length), "
              f"{hours[0] / gpus:.1f}-{hours[1] / gpus:.1f} h ({hours[0]:.0f}-{hours[1]:.0f} GPU-h)")
    return 0


def fetch_wheels(dest: Path) -> int:
    """Download cp312 manylinux wheels of CARRY at the versions installed here; fail when they
    exceed what the device tool carries."""
    from importlib.metadata import version

    dest.mkdir(parents=True, exist_ok=True)
    pins = [f"{name}=={version(name)}" for name in CARRY]
    plats = [a for p in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                         "manylinux2014_x86_64", "manylinux1_x86_64") for a in ("--platform", p)]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           "3.12", "--implementation", "cp", *plats, "-d", str(dest), *pins]
    if subprocess.run(cmd).returncode:
        return 1
    size = sum(f.stat().st_size for f in dest.glob("*.whl")) / 2**20
    print(f"{len(pins)} wheels, {size:.1f} MiB in {dest}")
    if size > WHEEL_LIMIT_MB:
        print(f"error: {size:.0f} MiB of wheels is more than the {WHEEL_LIMIT_MB} MiB the device tool carries")
        return 1
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="a tiny shape and a few rows: the CPU test of this script")
    ap.add_argument("--device", choices=["auto", "cpu"], default="auto", help="cpu: hide any GPU")
    ap.add_argument("--row-tokens", type=int, default=900, help="tokens per training row (about)")
    ap.add_argument("--fetch-wheels", metavar="DIR", type=Path, help="download the wheels the GPU image lacks, then exit")
    ap.add_argument("--paper-estimate", action="store_true",
                    help="print what cluster/configs/paper-*.yaml ask of a cluster (GPUs, memory, hours), then exit")
    ap.add_argument("--tokens-per-s", type=float, default=PAPER_TOKENS_PER_S,
                    help="training tokens/s of one GPU for --paper-estimate (this check's Qwen3-1.7B LoRA figure)")
    args = ap.parse_args()
    if args.fetch_wheels:
        return fetch_wheels(args.fetch_wheels)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch is imported
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    sys.path.insert(0, str(REPO))
    logging.basicConfig(level=logging.WARNING)
    import datasets
    import transformers

    datasets.disable_progress_bar()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return paper_estimate(args.tokens_per_s) if args.paper_estimate else check(args)


if __name__ == "__main__":
    sys.exit(main())
