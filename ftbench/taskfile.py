"""A user's own task, defined in YAML with no Python: the ``TaskFile`` model and the ``Task`` it builds.

A task file says what FT-Bench's ten tasks say in code: the requirement in the user's words,
where the splits live, the prompt and completion templates, the answer format with its parser,
the metric (with its direction and range) and the generation budget. ``build_task`` turns it into
an ordinary ``ftbench.task.Task``, so everything downstream (loading, evaluation, scoring, the
search) treats FT-Bench's tasks and a user's task alike.

Rows are read from local files or folders (``.jsonl``/``.json``/``.csv``/``.parquet``) or
``hub:`` datasets, renamed as ``columns`` says, and given the uniform schema: ``id``, every
column as text (nested values as JSON) and ``reference``, the gold answer as canonical text.
When there is no dev split, dev is carved from train; train rows whose prompt also occurs in dev
or test are removed from train (``TaskFileLoader.overlap`` lists them; the checks report them).
"""

from __future__ import annotations

import hashlib
import json
import string
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ftbench.formats import METRICS, AnswerParser, AnswerScorer, MetricInfo, metrics_for
from ftbench.datafiles import TaskDataError, local_file, read_local
from ftbench.task import SPLITS, Task


def template_fields(template: str) -> list[str]:
    """Column names a template uses. Only bare ``{name}`` fields are allowed: attribute and
    index access (``{x.__class__}``), conversions and format specs could reach Python objects,
    and templates come from untrusted LLM output."""
    names = []
    for _, name, spec, conv in string.Formatter().parse(template):
        if name is None:
            continue
        if not name.isidentifier() or spec or conv:
            raise ValueError(f"template field {{{name}}} is not a plain column name")
        names.append(name)
    return names


class TaskFileError(TaskDataError):
    """A task file that cannot be used; one problem per line, each naming the field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        # printed after "error: " by both command lines: every further problem gets its own error line
        super().__init__("\nerror: ".join(self.problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True)


class SplitSource(_Strict):
    """Where one split lives (a task file may give a bare string: the ``path``)."""

    path: str = Field(min_length=1, max_length=1000)
    """A local file (.jsonl/.json/.csv/.parquet), a folder holding <split>.<ext>, or hub:<dataset id>."""
    config: str | None = None
    """Hub dataset config name (hub: only)."""
    split: str | None = None
    """Hub split name (hub: only; default: the split's own name, train/dev/test)."""
    revision: str | None = None
    """Hub git revision to pin (hub: only)."""

    @model_validator(mode="before")
    @classmethod
    def _bare_path(cls, v: Any) -> Any:
        return {"path": v} if isinstance(v, str) else v

    @property
    def hub(self) -> str | None:
        return self.path[len("hub:"):] if self.path.startswith("hub:") else None


class TaskFile(_Strict):
    """A task defined in YAML: ``--task.file=my_task.yaml``, or the same keys under ``task.definition``."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    """Short name of the task (letters, digits, _ . -), used in run names, reports and the model card."""
    name: str = ""
    """Human title (default: the id)."""
    description: str = Field(min_length=1, max_length=8000)
    """The requirement in your own words: what the model must do and how answers are judged. The
    Researcher starts from it."""
    data_dir: str | None = None
    """Folder with train/dev/test files (<split>.jsonl, .json, .csv or .parquet; dev may also be
    named validation or val). Relative paths are relative to the task file."""
    train: SplitSource | None = None
    """The train split (overrides data_dir): a path, hub:<id>, or {path, config, split, revision}."""
    dev: SplitSource | None = None
    """The dev split, which scores every trial (overrides data_dir). Without one, dev is carved from train."""
    test: SplitSource | None = None
    """The test split, scored once at the end for the report (overrides data_dir)."""
    dev_from_train: int = Field(200, ge=0)
    """Rows carved from train (by a hash of their id, at most a fifth of train) when there is no dev split."""
    id_column: str | None = None
    """Column with a unique row id (default: a column named id, else the row's position)."""
    columns: dict[str, str] = Field(default_factory=dict)
    """Renames applied after loading, source column -> the name the templates use."""
    target: str = Field(min_length=1)
    """The column (after renaming) holding the gold answer."""
    prompt: str = Field(min_length=1)
    """Prompt template: text with plain {column} fields."""
    completion: str | None = None
    """Training-target template (default: "{<target>}", the gold answer alone)."""
    answer: Literal["label", "labels", "number", "json", "text"]
    """Answer format: label (one of labels), labels (several of labels), number, json (an object
    with json_fields) or text (free text)."""
    labels: list[str] | None = None
    """The allowed labels (answer label or labels), as they appear in the target column."""
    label_separator: str = "; "
    """How several labels are written in one answer (answer labels; a list in the data also works)."""
    json_fields: dict[str, Literal["string", "number", "integer", "boolean", "list"]] | None = None
    """The JSON answer's schema (answer json): field name -> string, number, integer, boolean or
    list (of strings). Scored field by field; a field with no value is null."""
    metric: str
    """Primary metric: label: accuracy, macro_f1, micro_f1, weighted_f1; labels: macro_f1,
    micro_f1, weighted_f1, samples_f1, exact_match; number: mae, rmse; json: field_accuracy,
    field_f1, exact_match; text: exact_match, token_f1, rouge1, rouge2, rougeL, bleu, chrf."""
    higher_is_better: bool | None = None
    """Direction of the metric (default: the metric's own; stating the wrong one is an error)."""
    metric_range: tuple[float, float] | None = None
    """(low, high) of the metric, to normalise rewards (default: the metric's own, 0-1 or 0-100;
    required for mae and rmse, in the target's units, e.g. [0, 50])."""
    max_new_tokens: int = Field(64, ge=1, le=8192)
    """Generation budget per answer at evaluation."""
    source: str = ""
    """Where the data comes from (shown in the model card)."""
    licence: str = ""
    """The data's licence (shown in the model card)."""

    @field_validator("prompt", "completion")
    @classmethod
    def _plain_fields(cls, v: str | None) -> str | None:
        if v is not None:
            template_fields(v)
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "TaskFile":
        problems = []
        info = METRICS.get(self.metric)
        if info is None:
            problems.append(f"metric: unknown metric {self.metric!r}; for answer {self.answer}: "
                            f"{', '.join(metrics_for(self.answer))}")
        elif self.answer not in info.formats:
            problems.append(f"metric: {self.metric} does not fit answer {self.answer}; use one of "
                            f"{', '.join(metrics_for(self.answer))}")
        elif self.higher_is_better is not None and self.higher_is_better != info.higher_is_better:
            problems.append(f"higher_is_better: {self.metric} is better when {'higher' if info.higher_is_better else 'lower'}")
        elif info.range is None and self.metric_range is None:
            problems.append(f"metric_range: required for {self.metric} (in the target's units, e.g. [0, 100])")
        if self.metric_range is not None and not self.metric_range[0] < self.metric_range[1]:
            problems.append(f"metric_range: low must be below high (got {list(self.metric_range)})")
        if self.answer in ("label", "labels"):
            if not self.labels:
                problems.append(f"labels: required for answer {self.answer} (the allowed labels)")
            elif len(set(self.labels)) != len(self.labels) or any(not x.strip() for x in self.labels):
                problems.append("labels: must be distinct and non-empty")
        elif self.labels:
            problems.append(f"labels: only for answer label or labels (answer is {self.answer})")
        if self.answer == "json" and not self.json_fields:
            problems.append("json_fields: required for answer json (field name -> type)")
        elif self.answer != "json" and self.json_fields:
            problems.append(f"json_fields: only for answer json (answer is {self.answer})")
        if self.answer == "labels" and not self.label_separator.strip():
            problems.append("label_separator: must contain a visible character")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    # ------------------------------------------------------------------ derived
    @property
    def completion_template(self) -> str:
        return self.completion if self.completion is not None else "{" + self.target + "}"

    @property
    def info(self) -> MetricInfo:
        return METRICS[self.metric]

    @property
    def bounds(self) -> tuple[float, float]:
        return tuple(self.metric_range or self.info.range)  # type: ignore[return-value]

    def parser(self) -> AnswerParser:
        return AnswerParser(self.answer, tuple(self.labels or ()), self.label_separator,
                            tuple((self.json_fields or {}).items()))

    def split_sources(self) -> dict[str, SplitSource | None]:
        """Where each split comes from: its own entry, else <split>.<ext> in data_dir, else None."""
        out: dict[str, SplitSource | None] = {}
        for split in SPLITS:
            src = getattr(self, split)
            if src is None and self.data_dir:
                folder = Path(self.data_dir)
                names = (split, "validation", "val") if split == "dev" else (split,)
                f = next((f for n in names if (f := local_file(folder, n)) is not None), None)
                src = SplitSource(path=str(f)) if f is not None else None
            out[split] = src
        return out

    def with_base(self, folder: str | Path) -> "TaskFile":
        """A copy with every local path made absolute against ``folder`` (the task file's folder)."""
        def fix(p: str) -> str:
            return p if p.startswith("hub:") else str((Path(folder) / Path(p).expanduser()).resolve())

        update: dict[str, Any] = {"data_dir": fix(self.data_dir) if self.data_dir else None}
        for split in SPLITS:
            src = getattr(self, split)
            update[split] = src.model_copy(update={"path": fix(src.path)}) if src else None
        return self.model_copy(update=update)


def explain(e: ValidationError, where: str) -> list[str]:
    """One line per problem of a pydantic error, each naming the field."""
    lines = []
    for err in e.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(file)"
        if err["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key {field}")
        elif err["type"] == "value_error" and not err["loc"]:  # the cross-field checks, one per line
            lines += [f"{where}: {msg}" for msg in str(err["ctx"]["error"]).splitlines()]
        else:
            lines.append(f"{where}: {field}: {err['msg']}")
    return lines


def parse_task_file(data: Any, where: str) -> TaskFile:
    """Validate a task file's content; TaskFileError with one line per problem."""
    if not isinstance(data, dict):
        raise TaskFileError([f"{where}: must hold a mapping of task fields"])
    try:
        return TaskFile.model_validate(data)
    except ValidationError as e:
        raise TaskFileError(explain(e, where)) from None


def read_task_file(path: str | Path) -> TaskFile:
    """The task file at ``path``, its local paths made absolute against its folder."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise TaskFileError([f"task file not found: {p}"])
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise TaskFileError([f"task file {p} is not valid YAML: {str(e).splitlines()[0]}"]) from None
    return parse_task_file(data, f"task file {p.name}").with_base(p.resolve().parent)


# ---------------------------------------------------------------- rows
def cell_text(value: Any) -> str:
    """A cell as template text: strings as they are, other values as JSON, missing as ''."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def canonical_target(value: Any, tf: TaskFile) -> str:
    """The gold answer as the text a model should write (and ``reference`` holds)."""
    if tf.answer == "labels":
        if isinstance(value, list):
            items = value
        else:
            items = str(value).split(tf.label_separator.strip()) if value not in (None, "") else []
        return tf.label_separator.join(str(x).strip() for x in items if str(x).strip())
    if tf.answer == "json":
        obj = value
        if isinstance(value, str):
            try:
                obj = json.loads(value)
            except json.JSONDecodeError:
                return value  # left as is; the checks name the row
        if not isinstance(obj, dict):
            return cell_text(value)
        return json.dumps({f: obj.get(f) for f in tf.json_fields or {}}, ensure_ascii=False)
    return cell_text(value).strip()


def uniform_rows(raw: list[dict], tf: TaskFile, split: str) -> tuple[list[dict], list[Any]]:
    """(rows renamed, as text, with ``id`` and the canonical ``reference``; their target cells as stored)."""
    out, targets = [], []
    for i, r in enumerate(raw):
        row = {tf.columns.get(k, k): v for k, v in r.items()}
        id_col = tf.id_column or ("id" if "id" in row else None)
        rid = row.get(id_col) if id_col else None
        text = {k: cell_text(v) for k, v in row.items()}
        if tf.target in row:
            text[tf.target] = canonical_target(row[tf.target], tf)
            text["reference"] = text[tf.target]
        text["id"] = cell_text(rid) if rid not in (None, "") else f"{split}/{i}"
        out.append(text)
        targets.append(row.get(tf.target))
    return out, targets


def prompt_key(tf: TaskFile, row: dict) -> str:
    """What makes two rows the same example: their prompt, case- and space-folded."""
    try:
        return " ".join(tf.prompt.format(**row).casefold().split())
    except (KeyError, IndexError):
        return ""


class TaskFileLoader:
    """split -> uniform rows of a task file (``Task.hub_loader``): dev carved from train when
    there is none, train rows overlapping dev or test removed. Splits are read once per loader."""

    def __init__(self, tf: TaskFile) -> None:
        self.tf = tf
        self._stored: dict[str, list[dict] | None] = {}
        self._cells: dict[tuple[str, str], Any] = {}  # (split, row id) -> the target cell as stored
        self.overlap: list[str] = []  # ids of train rows removed because dev or test holds their prompt
        self.carved = False

    def stored(self, split: str) -> list[dict] | None:
        """A split as its source stores it (uniform rows), or None when the file gives none."""
        if split not in self._stored:
            src = self.tf.split_sources()[split]
            rows = None
            if src is not None:
                rows, cells = uniform_rows(_read(src, split, self.tf.id), self.tf, split)
                self._cells.update({(split, r["id"]): c for r, c in zip(rows, cells)})
            self._stored[split] = rows
        return self._stored[split]

    def target_cell(self, split: str, row_id: str) -> Any:
        """A row's target as its source stores it (a list, an object, a number...), for the checks."""
        return self._cells.get(("train" if split == "dev" and self.carved else split, row_id))

    def local_paths(self) -> set[Path]:
        """The local files and folders the task's data comes from."""
        paths = {Path(s.path) for s in self.tf.split_sources().values() if s is not None and s.hub is None}
        return paths | ({Path(self.tf.data_dir)} if self.tf.data_dir else set())

    def fingerprint(self) -> str:
        """Identity of the task and its data (file sizes and times; hub ids), without reading rows."""
        parts = [self.tf.model_dump_json()]
        for s in self.tf.split_sources().values():
            if s is not None and s.hub is None and Path(s.path).is_file():
                st = Path(s.path).stat()
                parts.append(f"{s.path}|{st.st_size}|{st.st_mtime_ns}")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def _dev_ids(self, train: list[dict]) -> set[str]:
        rank = sorted((str(r["id"]) for r in train),
                      key=lambda i: hashlib.sha256(f"{self.tf.id}|dev|{i}".encode()).hexdigest())
        return set(rank[: min(self.tf.dev_from_train, len(rank) // 5)])

    def __call__(self, split: str) -> list[dict] | None:
        train = self.stored("train")
        dev = self.stored("dev")
        if dev is None and train and self.tf.dev_from_train:
            self.carved = True
            held = self._dev_ids(train)
            dev = [r for r in train if r["id"] in held]
            train = [r for r in train if r["id"] not in held]
        if split == "dev":
            return dev
        if split == "test":
            return self.stored("test")
        if train is None:
            return None
        seen = {prompt_key(self.tf, r) for r in (dev or []) + (self.stored("test") or [])} - {""}
        kept = [r for r in train if prompt_key(self.tf, r) not in seen]
        self.overlap = [r["id"] for r in train if prompt_key(self.tf, r) in seen]
        return kept


def _read(src: SplitSource, split: str, task_id: str) -> list[dict]:
    if src.hub is not None:
        import datasets

        try:
            ds = datasets.load_dataset(src.hub, src.config, split=src.split or split, revision=src.revision)
        except Exception as e:  # offline, unknown id, gated: all the same to the user
            raise TaskDataError(
                f"task {task_id}: cannot load {src.hub} ({src.split or split}) from the Hugging Face Hub "
                f"({type(e).__name__}); download it elsewhere and give the local path as {split}") from None
        return ds.to_list()
    p = Path(src.path)
    if p.is_dir():
        f = local_file(p, split)
        if f is None:
            raise TaskDataError(f"task {task_id}: {split}: no {split}.jsonl/.parquet/.csv/.json in {p}")
        p = f
    rows = read_local(p)
    if not all(isinstance(r, dict) for r in rows):
        raise TaskDataError(f"task {task_id}: {split}: {p} must hold one JSON object per record")
    return rows


def build_task(tf: TaskFile) -> Task:
    """The ``Task`` a task file defines (the same record FT-Bench's own tasks are)."""
    parser = tf.parser()
    used = template_fields(tf.prompt) + template_fields(tf.completion_template)
    return Task(
        id=tf.id, name=tf.name or tf.id, description=tf.description, metric=tf.metric,
        prompt_template=tf.prompt, completion_template=tf.completion_template,
        input_columns=tuple(dict.fromkeys([*used, "reference"])),
        parse=parser, score=AnswerScorer(parser, tf.bounds),
        higher_is_better=tf.info.higher_is_better, metric_range=tf.bounds, max_new_tokens=tf.max_new_tokens,
        hub_loader=TaskFileLoader(tf), source=tf.source or "a user's task file", licence=tf.licence,
    )


def describe_answer(tf: TaskFile) -> str:
    """The answer format in one line, for the Researcher's requirement analysis and prompts."""
    if tf.answer == "label":
        return f"exactly one label of: {', '.join(tf.labels or [])}"
    if tf.answer == "labels":
        return f"the labels that apply, from: {', '.join(tf.labels or [])}, separated by {tf.label_separator!r}"
    if tf.answer == "number":
        return "a number"
    if tf.answer == "json":
        fields = ", ".join(f"{k} ({v})" for k, v in (tf.json_fields or {}).items())
        return f"one JSON object with the fields {fields} (null where the input has no value); scored field by field"
    return "free text"

