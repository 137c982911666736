"""Will a plan fit its GPUs? A conservative estimate made before any GPU time is spent.

Per GPU, the training states, as the executor lays them out (executor/train.py ``Hardware``):
- one worker, the Trainer's bf16 mixed precision: full fine-tuning keeps fp32 weights (4 bytes/
  param), the bf16 copies autocast makes of them for the forward pass (2), fp32 gradients (4) and
  Adam's two fp32 moments (8): 18 bytes/param. LoRA keeps the frozen base in bf16 (2 bytes/param)
  and the adapter, its gradients and moments in fp32 (4 + 4 + 8 bytes per adapter param).
- DeepSpeed ZeRO (several workers, or a ZeRO stage): bf16 weights and gradients (2 + 2) and
  fp32 master weights and moments (12) (Rajbhandari et al., ZeRO, 2020); stage 1 partitions the
  optimizer state over the data-parallel workers, stage 2 also the gradients, stage 3 also the
  weights; CPU offload moves the optimizer state (and at stage 3 the weights) to host memory.
Activations without checkpointing, measured (bytes that transformers' Llama/Qwen blocks save for
the backward pass, per token and layer, under bf16 autocast with SDPA attention, which keeps no
s x s scores): 30h + 8i + 4kv for full fine-tuning; with LoRA on every linear layer,
24h + 8i + 4kv + 14r, plus 24h + 4i for the dropped-out copies of the inputs when lora_dropout
> 0 (h hidden, i intermediate, kv key/value width, r rank; fewer LoRA targets save less, so
this is an upper bound); outside the blocks, 12h (embeddings, final norm, the loss's copy of the
hidden states). The logits never exist whole: trl's loss (chunked_nll) projects 256 tokens at a
time, 16 bytes per such token and vocabulary entry at its peak (fp32 logits, log-probabilities,
their gradients; measured). The sequence length is max_seq_length (batches are padded to their
longest row, never longer). A 15% margin covers the CUDA context and fragmentation. tests/test_gpu_paths.py checks the states and activations
against a real trial's tensors; bench/gpu_check.py against a GPU's peak memory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from trex_ray.search.plan import Plan, TrainingConfig, TrialResources

GIB = 2**30
MARGIN = 1.15
LOSS_CHUNK = 256  # tokens whose logits trl's chunked_nll loss computes at once
LOGITS_BYTES = 16  # per chunk token and vocabulary entry at the loss's peak (measured)


@dataclass(frozen=True)
class ModelDims:
    params: int
    hidden: int
    layers: int
    heads: int
    vocab: int
    intermediate: int
    q_dim: int = 0  # width of the query projection (heads x head_dim); 0: hidden
    kv_dim: int = 0  # width of each key/value projection (kv heads x head_dim); 0: hidden

    @classmethod
    def from_config(cls, config: dict) -> "ModelDims":
        """From a Hugging Face config.json (llama/qwen/mistral-style field names)."""
        h, layers = config["hidden_size"], config["num_hidden_layers"]
        inter = config.get("intermediate_size", 4 * h)
        vocab = config.get("vocab_size", 32000)
        heads = config.get("num_attention_heads", max(1, h // 64))
        kv = config.get("num_key_value_heads", heads)
        head_dim = config.get("head_dim") or h // heads
        attn = h * heads * head_dim * 2 + h * kv * head_dim * 2
        per_layer = attn + 3 * h * inter + 2 * h
        embed = vocab * h * (1 if config.get("tie_word_embeddings", False) else 2)
        return cls(params=layers * per_layer + embed + h, hidden=h, layers=layers, heads=heads,
                   vocab=vocab, intermediate=inter, q_dim=heads * head_dim, kv_dim=kv * head_dim)

    @classmethod
    def from_model_dir(cls, path: str | Path) -> "ModelDims | None":
        f = Path(path).expanduser() / "config.json"
        if not f.is_file():
            return None
        try:
            return cls.from_config(json.loads(f.read_text()))
        except (KeyError, ValueError, TypeError):
            return None


@dataclass(frozen=True)
class MemoryEstimate:
    weights_gib: float
    gradients_gib: float
    optimizer_gib: float
    activations_gib: float

    @property
    def total_gib(self) -> float:
        return MARGIN * (self.weights_gib + self.gradients_gib + self.optimizer_gib + self.activations_gib)

    def describe(self) -> str:
        return (f"{self.total_gib:.1f} GiB per GPU (weights {self.weights_gib:.1f}, gradients {self.gradients_gib:.1f}, "
                f"optimizer {self.optimizer_gib:.1f}, activations {self.activations_gib:.1f}, +15%)")


# LoRA-able projections of a Llama/Qwen/Mistral block: name -> (input width, output width)
def _projections(dims: ModelDims) -> dict[str, tuple[int, int]]:
    h, i = dims.hidden, dims.intermediate
    q, kv = dims.q_dim or h, dims.kv_dim or h
    return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
            "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}


def lora_params(dims: ModelDims, r: int, targets: Sequence[str] = ("all-linear",)) -> int:
    """Trainable parameters of LoRA of rank ``r`` on ``targets`` in every block (peft's
    "all-linear": every projection, not the output head). A target name this model family does
    not have (another architecture's naming) counts as all-linear: an upper bound."""
    proj = _projections(dims)
    names = list(proj) if "all-linear" in targets or not set(targets) <= set(proj) else targets
    return dims.layers * sum(r * (proj[n][0] + proj[n][1]) for n in set(names))


def activation_bytes_per_token(dims: ModelDims, method: str, lora_r: int = 0, lora_dropout: float = 0.0) -> float:
    """Bytes the forward pass keeps for the backward pass, per token (see the module docstring
    for where the coefficients come from), without the loss's logits."""
    h, i, kv = dims.hidden, dims.intermediate, dims.kv_dim or dims.hidden
    if method == "full":
        per_layer = 30 * h + 8 * i + 4 * kv
    else:
        per_layer = 24 * h + 8 * i + 4 * kv + 14 * lora_r + ((24 * h + 4 * i) if lora_dropout > 0 else 0)
    return dims.layers * per_layer + 12 * h


def estimate(dims: ModelDims, method: str, lora_r: int, batch_size: int, seq_len: int,
             workers: int = 1, zero_stage: int = 0, offload: bool = False,
             lora_targets: Sequence[str] = ("all-linear",), lora_dropout: float = 0.05) -> MemoryEstimate:
    """Peak training memory per GPU (see the module docstring for the model behind it)."""
    p = dims.params
    trainable = p if method == "full" else lora_params(dims, lora_r, lora_targets)
    frozen = p if method == "lora" else 0
    if zero_stage == 0:
        # the Trainer's mixed precision: fp32 trainable weights (+ autocast's bf16 copies of the
        # full model's), a bf16 frozen base; several workers without ZeRO are plain DDP, whose
        # gradient buckets hold a second copy of the gradients
        weights = 2 * frozen + (6 if method == "full" else 4) * trainable
        grads = 4 * trainable * (2 if workers > 1 else 1)
        optim = 8 * trainable
    else:
        weights = 2 * (frozen + trainable)
        grads = 2 * trainable
        optim = 12 * trainable
    if zero_stage >= 1:
        optim /= workers
    if zero_stage >= 2:
        grads /= workers
    if zero_stage >= 3:
        weights /= workers
    if offload:
        optim = 0.0
        if zero_stage >= 3:
            weights = 0.0
    tokens = seq_len * batch_size
    acts = tokens * activation_bytes_per_token(dims, method, lora_r, lora_dropout) \
        + min(tokens, LOSS_CHUNK) * LOGITS_BYTES * dims.vocab
    return MemoryEstimate(weights / GIB, grads / GIB, optim / GIB, acts / GIB)


@dataclass(frozen=True)
class FitCheck:
    """What the TreeState needs to reject plans that cannot fit before any GPU time: the base
    model's dimensions, the run's default trial shape and the memory of one GPU."""

    dims: ModelDims
    resources: TrialResources  # for plans that set none
    gpu_memory_gb: float

    def why_not(self, plan: Plan) -> str | None:
        """None when ``plan`` fits (or has no training), else the reason."""
        return check_fits(self.dims, plan.training, plan.resources or self.resources, self.gpu_memory_gb)


def check_fits(dims: ModelDims | None, training: TrainingConfig | None, resources: TrialResources,
               gpu_memory_gib: float) -> str | None:
    """None when the plan fits (or cannot be judged: no GPUs, unknown model), else the reason."""
    if dims is None or training is None or resources.gpus_per_worker <= 0 or gpu_memory_gib <= 0:
        return None
    est = estimate(dims, training.method, training.lora_r, training.batch_size, training.max_seq_length,
                   resources.num_workers, resources.zero_stage, resources.offload,
                   lora_targets=training.lora_target_modules, lora_dropout=training.lora_dropout)
    available = gpu_memory_gib * resources.gpus_per_worker
    if est.total_gib > available:
        return f"does not fit: estimated {est.describe()} > {available:.0f} GiB available"
    return None
