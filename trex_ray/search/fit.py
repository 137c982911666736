"""Will a plan fit its GPUs? A conservative estimate made before any GPU time is spent.

Per GPU, for mixed-precision Adam training (Rajbhandari et al., ZeRO, 2020):
weights 2 bytes/param, gradients 2 bytes/trainable param, optimizer state 12 bytes/trainable
param (fp32 master copy, momentum, variance); ZeRO stage 1 partitions the optimizer state over
the data-parallel workers, stage 2 also the gradients, stage 3 also the weights; CPU offload
moves the optimizer state (and at stage 3 the weights) to host memory. Activations without
checkpointing: about 34·s·b·h + 5·a·s²·b bytes per layer (Korthikanti et al., 2022), plus the
logits (s·b·vocab, fp32 for the loss). A 15% margin covers the CUDA context and fragmentation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from trex_ray.search.plan import Plan, TrainingConfig, TrialResources

GIB = 2**30
MARGIN = 1.15


@dataclass(frozen=True)
class ModelDims:
    params: int
    hidden: int
    layers: int
    heads: int
    vocab: int
    intermediate: int

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
                   vocab=vocab, intermediate=inter)

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


def lora_params(dims: ModelDims, r: int) -> int:
    """Trainable parameters of LoRA on every linear layer of every block."""
    h, i = dims.hidden, dims.intermediate
    per_layer = r * (4 * (h + h)) + r * 3 * (h + i)  # q,k,v,o (upper bound: kv as full width) + gate,up,down
    return dims.layers * per_layer


def estimate(dims: ModelDims, method: str, lora_r: int, batch_size: int, seq_len: int,
             workers: int = 1, zero_stage: int = 0, offload: bool = False) -> MemoryEstimate:
    """Peak training memory per GPU (see the module docstring for the model behind it)."""
    p = dims.params
    trainable = p if method == "full" else lora_params(dims, lora_r)
    weights = 2 * p
    grads = 2 * trainable
    optim = 12 * trainable
    if method == "lora":
        optim += 4 * trainable  # fp32 copy of the adapter itself
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
    s, b, h, a = seq_len, batch_size, dims.hidden, dims.heads
    acts = dims.layers * (34 * s * b * h + 5 * a * s * s * b) + 4 * s * b * dims.vocab
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
                   resources.num_workers, resources.zero_stage, resources.offload)
    available = gpu_memory_gib * resources.gpus_per_worker
    if est.total_gib > available:
        return f"does not fit: estimated {est.describe()} > {available:.0f} GiB available"
    return None
