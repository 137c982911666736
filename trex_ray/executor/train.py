"""Fine-tune one plan in this process with trl's SFTTrainer (LoRA through peft, or full).

This is the single training entry point of a trial; multi-worker DeepSpeed training through
Ray Train replaces this one function and nothing around it.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from trex_ray.search.plan import TrainingConfig

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model_dir: str
    steps: int
    train_loss: float | None
    train_samples: int
    train_tokens: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    examples: int = 0  # training examples processed by this run (a resumed run counts only its own steps)
    checkpoint: str | None = None  # where a run stopped early (stop_at) saved its full state

    def stats(self) -> dict[str, Any]:
        """What a node's recipe statistics keep of the training: loss, steps, the loss curve."""
        return {"train_loss": self.train_loss, "train_steps": self.steps,
                "loss_curve": [{"step": h["step"], "loss": h["loss"]} for h in self.history if "loss" in h]}


@dataclass(frozen=True)
class Hardware:
    """Where and in which precision this process trains and evaluates. On a GPU, the device is
    plain ``cuda``, the current one: under Ray the first GPU Ray assigned the trial
    (``CUDA_VISIBLE_DEVICES`` renumbers them from 0), under Ray Train the worker's own
    (``distributed.use_worker_device``), never a ``cuda:N`` taken from a plan."""

    gpus: int  # CUDA devices this process trains on (0: CPU)
    bf16: bool  # bf16 mixed precision: GPUs of compute capability 8.0 and later, CPUs with AMX

    @classmethod
    def detect(cls, reserved_gpus: float | None = None) -> "Hardware":
        """What this process sees. ``reserved_gpus``: what Ray reserved for it (None outside Ray):
        a trial that reserved none trains on the CPU even on a GPU node, where Ray (2.5x and
        later) leaves every GPU visible to it; one that reserved GPUs Ray only declared (no CUDA
        here, as in tests) trains on the CPU too."""
        import torch

        if torch.cuda.is_available() and (reserved_gpus is None or reserved_gpus > 0):
            # Native bf16 from Ampere (8.0) on; torch.cuda.is_bf16_supported() also says yes for
            # older GPUs that only emulate it (slowly), so the capability decides.
            return cls(gpus=torch.cuda.device_count(), bf16=torch.cuda.get_device_capability() >= (8, 0))
        if reserved_gpus:
            log.warning("%g GPU(s) reserved but CUDA is not available to torch: training on the CPU", reserved_gpus)
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            flags = ""
        return cls(gpus=0, bf16="amx_bf16" in flags)  # about 1.8x faster than fp32 with AMX

    @property
    def device(self) -> str:
        return "cuda" if self.gpus else "cpu"

    def trainer_flags(self) -> dict[str, bool]:
        """Trainer flags: on CPU the Trainer needs use_cpu (else it errors on bf16, or silently
        trains independent copies when multi-process); bf16 autocast where the device has it.
        Pre-Ampere GPUs train in fp32: fp16 would need loss scaling tuned per model."""
        return {"use_cpu": not self.gpus, "bf16": self.bf16}

    def weights_dtype(self, method: str) -> Any:
        """The dtype the model is loaded in for training. Full fine-tuning keeps fp32 weights
        (autocast computes in bf16; the optimizer updates fp32 master weights); LoRA's frozen base
        needs no master copy, so it is held in bf16 when the device computes in bf16 (half the
        memory; the adapter itself stays fp32, peft's default). search/fit.py counts the same."""
        import torch

        return torch.bfloat16 if self.bf16 and method == "lora" else torch.float32

    @property
    def eval_dtype(self) -> Any:
        """Every dev evaluation on a bf16 GPU runs in bf16 (the base model's and the trials',
        so their scores compare); elsewhere fp32."""
        import torch

        return torch.bfloat16 if self.bf16 and self.gpus else torch.float32

    def check_one_process(self, distributed: bool) -> None:
        """A single-worker trial trains in one process on one GPU: with more visible, the Trainer
        would wrap the model in DataParallel, multiplying the plan's batch size by the GPU count.
        Several GPUs per trial are several Ray Train workers (resources.num_workers)."""
        if self.gpus > 1 and not distributed:
            raise ValueError(f"this trial sees {self.gpus} GPUs but trains in one process; reserve 1 GPU per "
                             f"worker and set resources.num_workers={self.gpus} to train on all of them")


def fine_tune(
    t: TrainingConfig,
    model_path: str,
    dataset,
    out_dir: str | os.PathLike,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    trust_remote_code: bool = False,
    deepspeed: dict[str, Any] | None = None,
    callbacks: list | None = None,
    save_steps: int = 0,
    resume_from: str | None = None,
    init_from: str | os.PathLike | None = None,
    stop_at: int | None = None,
    hardware: Hardware | None = None,
):
    """Train on ``dataset`` (prompt/completion rows); returns (model, tokenizer, TrainResult).

    The model returned is the trained one in memory (a PeftModel for LoRA), ready to evaluate;
    the saved copy (adapter or full weights, plus tokenizer) is in ``out_dir/model``.
    Under Ray Train, ``deepspeed`` is the ZeRO config, ``callbacks`` report checkpoints saved every
    ``save_steps`` steps, and ``resume_from`` is the checkpoint a restarted worker group resumes.
    ``init_from`` (a local folder) is the parent node's saved model a warm start trains further:
    its LoRA adapter, loaded trainable on the base model (never wrapped in a new one), or its full
    weights. The child's saved adapter is a complete one on the base model, like any other.
    ``stop_at`` (successive halving): the run follows the full run's schedule (every step count,
    warm-up and decay, over the plan's full length) but stops after that step and saves a
    checkpoint (weights, optimizer, scheduler, data position); a later run given it as
    ``resume_from`` continues exactly where it stopped, so a promoted plan's full run is this
    proxy's run carried on, not a second one.
    ``hardware``: where and in which precision to train (default: what this process sees).
    The returned model is on the trial's device in ``hardware.eval_dtype``.
    """
    import torch

    t0 = time.time()
    hw = hardware or Hardware.detect()
    hw.check_one_process(distributed=torch.distributed.is_available() and torch.distributed.is_initialized())
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback, set_seed
    from trl import SFTConfig, SFTTrainer

    out = Path(out_dir)
    if t.warm_start and not init_from:
        raise ValueError("a warm-start plan needs init_from: the parent node's trained model")
    if init_from and not Path(init_from).is_dir():
        raise FileNotFoundError(f"warm start: the parent's model folder {init_from} does not exist")
    # Seeded before anything random (LoRA's initial weights are drawn when the adapter is made,
    # before the Trainer seeds itself): a plan's run is then the same run every time, which a
    # promotion's continuation of its proxy relies on.
    set_seed(t.seed)
    tok = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    weights = init_from if init_from and t.method == "full" else model_path
    model = AutoModelForCausalLM.from_pretrained(weights, dtype=hw.weights_dtype(t.method),
                                                 trust_remote_code=trust_remote_code)
    total = t.full_steps(len(dataset))
    args = SFTConfig(
        output_dir=str(out / "checkpoints"),
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate,
        num_train_epochs=t.num_epochs,
        # every run fixes its length in steps (the HF Trainer counts a run given in epochs a
        # little differently from one given in steps), so a proxy continued from its checkpoint
        # and the same plan trained in one go follow the very same schedule
        max_steps=total,
        lr_scheduler_type=t.scheduler,
        warmup_steps=int(t.warmup_ratio * total),
        weight_decay=t.weight_decay,
        seed=t.seed,
        max_length=t.max_seq_length,
        logging_steps=max(1, total // 20),
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        save_total_limit=1 if save_steps else None,
        deepspeed=deepspeed,
        report_to="none",
        disable_tqdm=True,
        gradient_checkpointing=False,
        dataloader_num_workers=0,
        **hw.trainer_flags(),
    )
    peft_config = None
    if t.method == "lora" and init_from:
        from peft import PeftConfig, PeftModel

        adapter = PeftConfig.from_pretrained(str(init_from))
        adapter.lora_dropout = t.lora_dropout  # the only LoRA knob a warm start may change
        model = PeftModel.from_pretrained(model, str(init_from), config=adapter, is_trainable=True)
    elif t.method == "lora":
        from peft import LoraConfig

        targets = t.lora_target_modules
        peft_config = LoraConfig(
            r=t.lora_r, lora_alpha=t.lora_alpha, lora_dropout=t.lora_dropout, task_type="CAUSAL_LM",
            target_modules="all-linear" if targets == ["all-linear"] else targets,
        )
    history: list[dict[str, Any]] = []

    class _Report(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):  # noqa: ANN001
            entry = {"step": state.global_step, "max_steps": state.max_steps, **(logs or {})}
            history.append(entry)
            if on_log:
                on_log(entry)

    class _StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
            if stop_at is not None and state.global_step >= stop_at and state.global_step < state.max_steps:
                control.should_save = control.should_training_stop = True

    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok,
                         peft_config=peft_config, callbacks=[_Report(), _StopAt(), *(callbacks or [])])
    trainer.remove_callback(PrinterCallback)  # it prints every log dict; the live view reports progress
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
    start = _checkpoint_step(resume_from)
    result = trainer.train(resume_from_checkpoint=resume_from)
    checkpoint = None
    if stop_at is not None and result.global_step < total:
        checkpoint = str(Path(args.output_dir) / f"checkpoint-{result.global_step}")
    model_dir = out / "model"
    # On every rank: under ZeRO-3 the ranks gather the full weights, and only rank 0 writes.
    trainer.save_model(str(model_dir))
    if trainer.is_world_process_zero():
        tok.save_pretrained(model_dir)
    trained = trainer.model
    if deepspeed is None:  # a ZeRO-3 model's weights are DeepSpeed's partitions: leave them be
        trained = trained.to(hw.eval_dtype)
    trained.eval()
    return trained, tok, TrainResult(
        model_dir=str(model_dir), steps=result.global_step, train_loss=result.training_loss,
        train_samples=len(dataset), train_tokens=int(tokens * t.num_epochs if t.max_steps < 0 else tokens),
        seconds=round(time.time() - t0, 2), history=history,
        examples=(result.global_step - start) * t.batch_size * t.grad_accum * args.world_size, checkpoint=checkpoint,
    )


def _checkpoint_step(checkpoint: str | None) -> int:
    """The step a Trainer checkpoint was saved at (0: no checkpoint)."""
    if not checkpoint:
        return 0
    import json

    state = Path(checkpoint) / "trainer_state.json"
    return int(json.loads(state.read_text())["global_step"]) if state.is_file() else 0
