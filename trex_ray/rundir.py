"""The run directory: a new one (a fresh run id, created exclusively) or the one being resumed
(its saved config, its ledger replayed and checked before Ray starts), locked for one driver.

One driver per run: ``open_run`` locks the run directory and the run's storage root
(``guard/lock.py``) until the caller releases the locks; a second driver gets LockHeld (one
line, nothing written), and a run id cannot collide with another's.
"""

from __future__ import annotations

from pathlib import Path

from trex_ray.config import Config, ConfigError, dump_config, load_config
from trex_ray.guard.lock import RunLock, new_run_id
from trex_ray.guard.redact import credentials_problem, scrub
from trex_ray.search.ledger import LEDGER_NAME, LedgerError, read_events
from trex_ray.search.tree import Tree
from trex_ray.storage import RunStorage, as_local, fetch_run, is_remote, run_storage_uri

CONFIG_NAME = "config.yaml"


def open_run(cfg: Config | None, resume: str | None) -> tuple[Config, Path, list[RunLock]]:
    """(config, run directory, the locks held on it): a new directory, or the one being resumed
    with its saved config and a ledger checked before Ray starts. One driver per run: the run
    directory (and the run's storage root) is locked until ``release``; a second driver gets
    LockHeld (one line, nothing written)."""
    locks: list[RunLock] = []
    try:
        if resume:
            cfg, run_dir = _open_resumed(resume, locks)
        else:
            assert cfg is not None
            cfg, run_dir = _open_new(cfg, locks)
        return cfg, run_dir, locks
    except BaseException:
        for lock in reversed(locks):
            lock.release()
        raise


def _open_resumed(resume: str, locks: list[RunLock]) -> tuple[Config, Path]:
    problem = credentials_problem("--resume", resume)
    if problem:
        raise ConfigError(problem)
    resume = as_local(resume)
    fetched = is_remote(resume)
    if fetched:  # a run mirrored to object storage, resumed on another machine: lock it first
        shown = resume.split("?")[0]
        try:
            locks.append(RunLock(resume, shown).acquire())
            resume = str(fetch_run(resume, "runs"))
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001 - pyarrow raises OSError, ArrowInvalid, ValueError...
            raise ConfigError(f"--resume {shown}: cannot read the run from its storage: "
                              f"{scrub(str(e).splitlines()[0] if str(e) else type(e).__name__)[:300]}") from None
    run_dir = Path(resume).expanduser().resolve()
    if not (run_dir / LEDGER_NAME).is_file() or not (run_dir / CONFIG_NAME).is_file():
        raise ConfigError(f"--resume {resume}: not a TREX-Ray run directory (no {LEDGER_NAME} and {CONFIG_NAME})")
    cfg = load_config(run_dir / CONFIG_NAME)
    _check_ledger(run_dir, cfg)  # read only: a refused resume writes nothing, not even a lock file
    locks.append(RunLock(run_dir).acquire())
    if cfg.run.storage and not fetched:
        _lock_storage(cfg, run_dir, locks)
    return cfg, run_dir


def _open_new(cfg: Config, locks: list[RunLock]) -> tuple[Config, Path]:
    for _ in range(3):  # a drawn id is created exclusively: another run may have drawn it too
        run_id = cfg.run.run_id or new_run_id()
        run_dir = (Path(cfg.run.output_dir).expanduser() / run_id).resolve()
        taken = f"run directory {run_dir} already holds a run; use --resume {run_dir} or another run.run_id"
        if (run_dir / LEDGER_NAME).exists():
            raise ConfigError(taken)
        try:
            run_dir.mkdir(parents=True, exist_ok=bool(cfg.run.run_id))
            break
        except FileExistsError:
            continue
        except OSError as e:
            raise ConfigError(f"cannot create the run directory {run_dir} (run.output_dir): {e.strerror or e}") from None
    else:
        raise ConfigError(f"could not create a new run directory under {cfg.run.output_dir}")
    locks.append(RunLock(run_dir).acquire())
    if (run_dir / LEDGER_NAME).exists():  # another driver started it between the check and the lock
        raise ConfigError(taken)
    if cfg.run.storage:
        _lock_storage(cfg, run_dir, locks)
    (run_dir / CONFIG_NAME).write_text(dump_config(cfg.model_copy(update={"run": cfg.run.model_copy(update={"run_id": run_id})})))
    return cfg, run_dir


def _lock_storage(cfg: Config, run_dir: Path, locks: list[RunLock]) -> None:
    """Lock the run's storage root too: two machines with their own run directories may still
    share it (unless the storage root is the run directory, locked already)."""
    root = run_storage_uri(cfg.run.storage, run_dir)
    if not is_remote(root) and Path(root).resolve() == run_dir:
        return
    locks.append(RunLock(root, RunStorage(root).display()).acquire())


def _check_ledger(run_dir: Path, cfg: Config) -> None:
    """The ledger replays (every line a valid event, in order, and the tree rebuilds from them)
    and is a run of the task and base model the config names; ConfigError names the line, the
    event or the mismatch, before Ray starts (a failing replay would otherwise kill the
    TreeState actor after the cluster is up)."""
    path = run_dir / LEDGER_NAME
    try:
        events = list(read_events(path))
    except LedgerError as e:
        raise ConfigError(f"--resume: {e}") from None
    tree = Tree()
    for ev in events:
        try:
            tree.apply(ev)
        except Exception as e:  # noqa: BLE001 - KeyError (an unknown node), a plan that no longer validates...
            what = f"{ev['type']} {ev.get('node_id', '')}".strip()
            raise ConfigError(f"--resume: {path}: event seq {ev['seq']} ({what}) cannot be replayed: "
                              f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}") from None
    started = next((ev for ev in events if ev["type"] == "run_started"), None)
    if started is None:
        raise ConfigError(f"--resume: {path} has no run_started event")
    base = started.get("base_model")
    if started["task"] != cfg.task.name or base is not None and base != cfg.model.name_or_path:
        raise ConfigError(f"--resume: the ledger is a run of task {started['task']}"
                          + (f" on {base}" if base else "") + f", but {CONFIG_NAME} names task {cfg.task.name} "
                          f"on {cfg.model.name_or_path}; the run directory was mixed up with another run's files")
