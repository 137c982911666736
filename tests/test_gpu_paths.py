"""The GPU paths, tested where a CPU can test them: the precision and device decisions (with
torch's CUDA queries answered as a GPU would answer them: no GPU can exist here), the backend
and worker shapes of multi-GPU trials, the memory estimate against the tensors of a real trial
trained in bf16 mixed precision on the CPU, and bench/gpu_check.py end to end on a tiny shape."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trex_ray.executor.train import Hardware
from trex_ray.search.fit import ModelDims, activation_bytes_per_token, estimate, lora_params
from trex_ray.search.plan import Plan, TrainingConfig, TrialResources

REPO = Path(__file__).resolve().parents[1]


def as_gpu(monkeypatch, count: int, capability: tuple[int, int]) -> None:
    """torch answers as on a machine with ``count`` CUDA GPUs of ``capability``."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)


# ---------------------------------------------------------------- precision and device
@pytest.mark.parametrize("capability, bf16", [((9, 0), True), ((8, 0), True), ((8, 6), True), ((7, 5), False), ((7, 0), False)])
def test_bf16_exactly_where_the_gpu_computes_in_it(monkeypatch, capability, bf16):
    as_gpu(monkeypatch, 1, capability)
    hw = Hardware.detect()
    assert hw == Hardware(gpus=1, bf16=bf16)
    assert hw.device == "cuda"  # the current device: the first Ray assigned, never cuda:N from a plan
    assert hw.trainer_flags() == {"use_cpu": False, "bf16": bf16}
    # LoRA's frozen base in bf16 when computing in bf16; full fine-tuning keeps fp32 master weights
    assert hw.weights_dtype("lora") == (torch.bfloat16 if bf16 else torch.float32)
    assert hw.weights_dtype("full") == torch.float32
    assert hw.eval_dtype == (torch.bfloat16 if bf16 else torch.float32)


def test_a_trial_that_reserved_no_gpu_trains_on_the_cpu_of_a_gpu_node(monkeypatch):
    # Ray 2.5x+ leaves CUDA_VISIBLE_DEVICES alone for a task with no GPUs: it sees them all
    as_gpu(monkeypatch, 8, (9, 0))
    hw = Hardware.detect(reserved_gpus=0)
    assert hw.gpus == 0 and hw.device == "cpu" and hw.trainer_flags()["use_cpu"] is True
    assert Hardware.detect(reserved_gpus=0.5).device == "cuda"  # a fraction of one: the GPU Ray gave it


def test_declared_gpus_without_cuda_train_on_the_cpu_and_say_so(caplog):
    assert not torch.cuda.is_available()  # this machine
    with caplog.at_level(logging.WARNING, logger="trex_ray.executor.train"):
        hw = Hardware.detect(reserved_gpus=1)
    assert hw.gpus == 0 and hw.trainer_flags()["use_cpu"] is True and hw.eval_dtype == torch.float32
    assert "CUDA is not available" in caplog.text


def test_one_process_never_trains_on_several_gpus():
    # the Trainer would wrap the model in DataParallel and multiply the plan's batch size
    with pytest.raises(ValueError, match="num_workers=2"):
        Hardware(gpus=2, bf16=True).check_one_process(distributed=False)
    Hardware(gpus=2, bf16=True).check_one_process(distributed=True)  # Ray Train ranks see their node's GPUs
    Hardware(gpus=1, bf16=True).check_one_process(distributed=False)


def test_fine_tune_refuses_a_second_visible_gpu_before_loading_anything(tmp_path):
    from trex_ray.executor.train import fine_tune

    with pytest.raises(ValueError, match="sees 2 GPUs"):
        fine_tune(TrainingConfig(), str(tmp_path / "no-model"), [], tmp_path, hardware=Hardware(gpus=2, bf16=True))


# ---------------------------------------------------------------- multi-GPU trials
def test_nccl_between_gpu_workers_and_gloo_between_cpu_workers():
    pytest.importorskip("ray")
    from trex_ray.executor.distributed import torch_config

    assert torch_config(TrialResources(num_workers=4, gpus_per_worker=1)).backend == "nccl"
    assert torch_config(TrialResources(num_workers=2, gpus_per_worker=0)).backend == "gloo"


@pytest.mark.parametrize("workers, gpus, stage, problem", [
    (4, 1, 2, None),
    (1, 0.5, 2, None),  # one rank on half a GPU: nothing to share
    (2, 0, 2, None),  # CPU workers over gloo
    (2, 0.5, 2, "share GPUs"),  # NCCL cannot put two ranks on one device
    (2, 2, 3, "leave some idle"),  # a rank drives one GPU
])
def test_worker_gpu_shapes_that_cannot_train(workers, gpus, stage, problem):
    from trex_ray.executor.distributed import gpu_shape_problem

    found = gpu_shape_problem(TrialResources(num_workers=workers, gpus_per_worker=gpus, zero_stage=stage))
    assert found is None if problem is None else problem in found


def test_a_shared_gpu_multi_worker_trial_fails_before_any_worker_starts(tmp_path):
    pytest.importorskip("ray")
    from core_helpers import trial_context
    from trex_ray.executor.distributed import run_distributed

    plan = Plan.model_validate({"direction": "method", "training": {}, "recipe": {"steps": [
        {"op": "load"}, {"op": "format", "prompt": "{input}", "completion": "{reference}"}]}})
    res = TrialResources(num_workers=2, gpus_per_worker=0.5, zero_stage=2)
    with pytest.raises(ValueError, match="NCCL"):
        run_distributed(plan, "n1", trial_context(tmp_path, tmp_path), res)
    assert not (tmp_path / "train").exists()  # no Ray Train run was started


# ---------------------------------------------------------------- the memory estimate's inputs
QWEN3_1_7B = json.loads((REPO / "bench/shapes/qwen3-1.7b.json").read_text())


def test_published_shapes_have_their_published_sizes():
    q = ModelDims.from_config(QWEN3_1_7B)
    assert q.params == pytest.approx(1.72e9, rel=0.01)  # "1.7B, 1.4B non-embedding"
    assert q.params - q.vocab * q.hidden == pytest.approx(1.41e9, rel=0.01)
    assert (q.q_dim, q.kv_dim) == (2048, 1024)  # 16 query heads and 8 key/value heads of 128
    s = ModelDims.from_config(json.loads((REPO / "bench/shapes/smollm2-135m.json").read_text()))
    assert s.params == pytest.approx(134.5e6, rel=0.01)


def test_lora_parameters_follow_the_targets_and_the_grouped_kv_width():
    q = ModelDims.from_config(QWEN3_1_7B)
    r = 16
    assert lora_params(q, r, ["q_proj", "v_proj"]) == 28 * r * ((2048 + 2048) + (2048 + 1024))
    every = 28 * r * (2 * (2048 + 2048) + 2 * (2048 + 1024) + 3 * (2048 + 6144))
    assert lora_params(q, r) == lora_params(q, r, ["all-linear"]) == every
    assert lora_params(q, r, ["query_key_value"]) == every  # another family's names: the upper bound
    fewer = estimate(q, "lora", r, 1, 512, lora_targets=["q_proj", "v_proj"])
    assert fewer.optimizer_gib < estimate(q, "lora", r, 1, 512).optimizer_gib


def test_long_sequences_are_not_charged_for_attention_scores():
    # SDPA keeps no s x s scores: activations grow linearly with the sequence length
    q = ModelDims.from_config(QWEN3_1_7B)
    a, b = estimate(q, "lora", 16, 1, 4096), estimate(q, "lora", 16, 1, 8192)
    assert b.activations_gib == pytest.approx(2 * a.activations_gib, rel=0.02)


class StateProbe:
    """A Trainer callback that measures, at the second optimizer step of a real trial, the bytes
    of the weights, gradients and optimizer state, and the bytes the step's forward pass saved
    for the backward pass (other than the weights themselves)."""

    def __new__(cls):
        from transformers import TrainerCallback

        class _Probe(TrainerCallback):
            def __init__(self):
                self.step, self.hooks, self.saved, self.states = 0, None, {}, None
                self.dtypes: dict[str, set[str]] = {}

            def on_step_begin(self, args, state, control, model=None, **kw):
                if self.step == 1:
                    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}

                    def pack(t):
                        st = t.untyped_storage()
                        if st.data_ptr() not in weights:
                            self.saved[st.data_ptr()] = st.nbytes()
                        return t

                    self.hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
                    self.hooks.__enter__()

            def on_pre_optimizer_step(self, args, state, control, **kw):
                if self.hooks is not None:
                    self.hooks.__exit__(None, None, None)
                    self.hooks = None

            def on_optimizer_step(self, args, state, control, model=None, optimizer=None, **kw):
                if self.step == 1:
                    ps = list(model.parameters())
                    size = lambda ts: sum(t.numel() * t.element_size() for t in ts)  # noqa: E731
                    self.states = (size(ps), size(p.grad for p in ps if p.grad is not None),
                                   size(v for s in optimizer.state.values() for v in s.values()
                                        if torch.is_tensor(v) and v.dim() > 0))
                    self.dtypes = {"trainable": {str(p.dtype) for p in ps if p.requires_grad},
                                   "frozen": {str(p.dtype) for p in ps if not p.requires_grad}}
                self.step += 1

        return _Probe()


@pytest.mark.parametrize("method", ["lora", "full"])
def test_estimate_matches_a_real_bf16_trial(tiny_model_dir, tmp_path, method):
    """fine_tune as on a bf16 GPU (autocast computes in bf16 on the CPU too): the estimate's
    weights, gradients and optimizer state are the trial's exactly, and its activations bound
    what the forward pass really saved, within 15%."""
    import datasets

    from trex_ray.executor.train import fine_tune

    row = {"prompt": [{"role": "user", "content": "Classify the sentiment of this movie review. " * 3}],
           "completion": [{"role": "assistant", "content": "positive negative positive"}]}
    rows = 12
    probe = StateProbe()
    t = TrainingConfig(method=method, batch_size=4, max_seq_length=256, lora_r=16, lora_dropout=0.05)
    model, _, tr = fine_tune(t, str(tiny_model_dir), datasets.Dataset.from_list([row] * rows), tmp_path,
                             callbacks=[probe], hardware=Hardware(gpus=0, bf16=True))
    seq = tr.train_tokens // rows  # every row has the same length: no padding
    dims = ModelDims.from_model_dir(tiny_model_dir)
    est = estimate(dims, method, 16, 4, seq, lora_dropout=0.05)
    weights, grads, optim = probe.states
    if method == "lora":
        assert probe.dtypes == {"trainable": {"torch.float32"}, "frozen": {"torch.bfloat16"}}
        assert weights == est.weights_gib * 2**30
        casts = 0
    else:
        assert probe.dtypes["trainable"] == {"torch.float32"}
        assert weights == dims.params * 4  # the estimate adds autocast's bf16 copies: 2 bytes/param more
        assert est.weights_gib * 2**30 == dims.params * 6
        # autocast's bf16 copies of the block projections are saved for the backward pass
        per_layer = sum(a * b for a, b in [(dims.hidden, dims.q_dim), (dims.hidden, dims.kv_dim),
                                           (dims.hidden, dims.kv_dim), (dims.q_dim, dims.hidden),
                                           (dims.hidden, dims.intermediate), (dims.hidden, dims.intermediate),
                                           (dims.intermediate, dims.hidden)])
        casts = 2 * dims.layers * per_layer
    assert grads == est.gradients_gib * 2**30
    assert optim == est.optimizer_gib * 2**30
    saved_per_token = (sum(probe.saved.values()) - casts) / (4 * seq)
    # an upper bound, and a close one (measured: 0.90 of it for LoRA, 1.0 for full)
    assert 0.85 <= saved_per_token / activation_bytes_per_token(dims, method, 16, 0.05) <= 1.05
    assert next(model.parameters()).dtype == torch.float32  # evaluated in fp32 off a GPU


# ---------------------------------------------------------------- bench/gpu_check.py
@pytest.mark.slow
def test_gpu_check_runs_end_to_end_on_a_tiny_shape():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "bench/gpu_check.py", "--tiny", "--device", "cpu"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "device cpu" in out
    for method in ("lora", "full"):
        block = out[out.index(f"-- tiny {method}:"):]
        m = re.search(r"trial ([\d,]+)  plain trl ([\d,]+)  ratio ([\d.]+) .*tokens ([\d,]+) / ([\d,]+)", block)
        assert m, block[:600]
        trial, plain, ratio, t_tok, p_tok = m.groups()
        num = lambda s: float(s.replace(",", ""))  # noqa: E731
        assert num(trial) > 0 and num(plain) > 0
        assert num(ratio) == pytest.approx(num(trial) / num(plain), rel=0.01)
        assert t_tok == p_tok and num(t_tok) > 16 * 20  # both trained on the same 16 rows
        est = re.search(r"estimate ([\d.]+) GiB", block)
        assert est and 0 < float(est.group(1)) < 1  # a tiny model: megabytes
        ev = re.search(r"eval +(\d+) rows in ([\d.]+) s: ([\d.]+) rows/s, ([\d,]+) tokens/s", block)
        assert ev and int(ev.group(1)) == 8 and float(ev.group(3)) > 0 and num(ev.group(4)) > 0
    assert re.search(r"worst throughput ratio [\d.]+ \(goal >= 0.95\)", out)
