"""``python launch.py``: parse the command line, validate, run. Bad input -> one line, exit 2."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from trex_ray.config import Config, ConfigError, load_config, options_help
from trex_ray.guard.redact import console_line, console_logging

if TYPE_CHECKING:
    from trex_ray.search.inbox import Inbox

USAGE = """python launch.py [--config FILE.yaml] [--section.key=value ...] [--push-to-hub USER/NAME]
       python launch.py --resume RUN_DIR

Runs a TREX tree search: a baseline evaluation of the base model, then fine-tuning trials
proposed by the Researcher and scheduled by Ray Tune, on an embedded local Ray or the cluster
in RAY_ADDRESS (ray job submit). Every option below can be set in the YAML file or overridden.
--push-to-hub REPO (= --run.push_to_hub=REPO) uploads best/ to the Hugging Face Hub at the end,
with the token from $HF_TOKEN (run.hub_token_env); exit 1 if only that upload failed."""


def setup_logging(level: str) -> None:
    """The console's logging: every line scrubbed of secrets and terminal control sequences."""
    console_logging(level)
    for noisy in ("ray", "transformers", "datasets", "filelock", "urllib3", "httpx", "torch", "deepspeed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def error(message: object) -> None:
    """The ``error:`` line of a refused command (scrubbed, one line, no control characters); an
    error that lists several problems (a task file's ``problems``) gets one line per problem."""
    for problem in getattr(message, "problems", None) or [message]:
        print(f"error: {console_line(str(problem))}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="launch.py", usage=USAGE, add_help=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config file")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    parser.add_argument("--push-to-hub", metavar="REPO", help="upload best/ to this Hub model repo at the end")
    parser.add_argument("-h", "--help", action="store_true")
    args, rest = parser.parse_known_args(argv)
    if args.help:
        print(USAGE + "\n\nOptions (default shown):" + options_help())
        return 0
    try:
        bad = [a for a in rest if not (a.startswith("--") and "." in a.split("=", 1)[0] and "=" in a)]
        if bad:
            raise ConfigError(f"unrecognised argument {bad[0]!r} (options look like --section.key=value)")
        if args.resume and (args.config or rest or args.push_to_hub):
            raise ConfigError("--resume takes the run's saved config; give no --config or overrides with it "
                              "(push a finished run with python -m trex_ray push RUN_DIR --push-to-hub REPO)")
        cfg = None if args.resume else load_config(args.config, rest)
        if cfg and args.push_to_hub is not None:  # set as a string: YAML would read a repo "123" as a number
            cfg.run.push_to_hub = args.push_to_hub
        setup_logging(cfg.run.log_level if cfg else "INFO")
        from trex_ray.run import run_search

        summary = run_search(cfg, args.resume)
    except ConfigError as e:
        error(e)
        return 2
    except KeyboardInterrupt:
        print("interrupted; continue with: python launch.py --resume <run dir>", file=sys.stderr)
        return 130
    push = summary.get("push") or {}
    if push.get("status") == "failed":  # the run itself is complete and on disk; only the upload is missing
        from trex_ray.report.hub import push_message

        error(push_message(summary["run_dir"], push))
        return 1
    if summary.get("no_success"):  # the outputs are written; the run just found nothing
        print(f"error: {summary['no_success']} (see {summary['run_dir']}/report.md)", file=sys.stderr)
        return 1
    return 0


def push_main(argv: list[str] | None = None) -> int:
    """``python -m trex_ray push RUN_DIR --push-to-hub REPO``: push a finished run's best/.
    Exit 2: bad input (one line); exit 1: the upload failed (recorded in summary.json)."""
    parser = argparse.ArgumentParser(prog="python -m trex_ray push", description=push_main.__doc__)
    parser.add_argument("run_dir", help="a finished TREX-Ray run directory")
    parser.add_argument("--push-to-hub", required=True, metavar="REPO", help="Hub model repo, user/name")
    parser.add_argument("--public", action="store_true", help="create the repo public (default: run.hub_private)")
    args = parser.parse_args(argv)
    from trex_ray.report.hub import check_push, hub_token, push_best, push_message, record_push

    setup_logging("INFO")  # (httpx quiet: one line per HTTP request otherwise)
    run_dir = Path(args.run_dir).expanduser().resolve()
    try:
        if not (run_dir / "summary.json").is_file() or not (run_dir / "config.yaml").is_file():
            raise ConfigError(f"{run_dir} is not a finished TREX-Ray run (no summary.json and config.yaml)")
        if not (run_dir / "best").is_dir():
            raise ConfigError(f"{run_dir} has no exported best model (best/): nothing to push")
        cfg = load_config(run_dir / "config.yaml")
        check_push(args.push_to_hub, cfg.run.hub_token_env)
    except ConfigError as e:
        error(e)
        return 2
    status = push_best(run_dir, args.push_to_hub, hub_token(cfg.run.hub_token_env),
                       private=cfg.run.hub_private and not args.public)
    record_push(run_dir, json.loads((run_dir / "summary.json").read_text()), status)
    if status["status"] != "pushed":
        error(push_message(run_dir, status))
        return 1
    print(status["commit_url"])
    return 0


def task_main(argv: list[str] | None = None) -> int:
    """``python -m trex_ray task draft --describe TEXT --data PATH [-o FILE]``: draft a task file
    from a requirement and the data, for you to read and edit; it never runs a search. With an
    LLM (``--config FILE`` and/or ``--llm.KEY=VALUE`` as launch.py takes them) the LLM proposes it,
    else rules do. Exit 2: bad input or data that fails the checks (one error line each)."""
    parser = argparse.ArgumentParser(prog="python -m trex_ray task", description=task_main.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    d = sub.add_parser("draft", help="draft a task file from a requirement and the data")
    d.add_argument("--describe", required=True, help="the requirement in your own words")
    d.add_argument("--data", required=True, help="a folder with train/dev/test files, or one data file")
    d.add_argument("-o", "--out", help="the task file to write (default: print it)")
    d.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    d.add_argument("--config", help="run config whose llm section to use")
    args, rest = parser.parse_known_args(argv)
    logging.basicConfig(level="INFO", format="%(message)s", stream=sys.stderr)
    for noisy in ("httpx", "openai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from ftbench.taskfile import TaskFileError
    from trex_ray.researcher.taskdraft import draft_task, write_draft

    try:
        bad = [a for a in rest if not a.startswith("--llm.")]
        if bad:
            raise ConfigError(f"unrecognised argument {bad[0]!r} (only --llm.KEY=VALUE options are taken here)")
        if args.out and Path(args.out).exists() and not args.force:
            raise ConfigError(f"{args.out} exists; give --force to overwrite it")
        llm = load_config(args.config, rest).llm
        draft = draft_task(args.describe, args.data, llm)
        text = write_draft(draft, args.out)
    except (ConfigError, TaskFileError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for w in draft.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.out:
        print(f"task file drafted by {draft.source}: {args.out}", file=sys.stderr)
    else:
        print(text, end="")
    return 0


STEER_HELP = """Steer a running search (from anywhere that can read and write the run's storage: the
driver's machine, a laptop with the bucket's credentials, or `ray job submit -- python -m trex_ray
steer ...`). The driver applies each command within run.steer_poll_s seconds and answers it:

  pin NODE                      keep the expansions under NODE while it can grow
  unpin NODE                    undo pin
  prune NODE                    cancel NODE's planned and running trials (freeing their slots at
                                once) and never expand it again
  annotate NODE TEXT            a note the LLM Researcher sees, as your words, when expanding
                                NODE or below
  budget +N trials              run N more trials
  budget +S accelerator-seconds raise the run's accelerator budget (limits.accelerator_hours)
  stop                          start no new trial; running ones finish, then the run ends
  status                        leaderboard and spend from the live state

Exit status: 0 applied, 1 refused (one line says why), 2 bad input, 3 no driver answered within
--wait (the command stays queued and applies when the run goes on, e.g. after launch.py --resume)."""


def _open_inbox(target: str) -> tuple["Inbox", Path | None]:
    """The steering inbox of a run directory or of a run's storage root (s3://.../RUN_ID, an NFS
    path), and the local run directory when there is one."""
    from trex_ray.search.inbox import DRIVER, Inbox
    from trex_ray.storage import RunStorage, is_remote, run_storage_uri

    if not is_remote(target):
        run_dir = Path(target).expanduser().resolve()
        if (run_dir / "events.jsonl").is_file() and (run_dir / "config.yaml").is_file():
            cfg = load_config(run_dir / "config.yaml")
            return Inbox(RunStorage(run_storage_uri(cfg.run.storage, run_dir))), run_dir
        if not (run_dir / DRIVER).is_file():
            raise ConfigError(f"{target} is not a TREX-Ray run directory or run storage (no events.jsonl, no {DRIVER})")
        return Inbox(RunStorage(run_dir)), None
    try:
        inbox = Inbox(RunStorage(target))
        found = inbox.store.exists(DRIVER) or inbox.store.exists("events.jsonl")
    except Exception as e:  # noqa: BLE001 - pyarrow raises OSError, ValueError, ArrowInvalid...
        raise ConfigError(f"cannot read {target.split('?')[0]}: {str(e).splitlines()[0][:300]}") from None
    if not found:
        raise ConfigError(f"{target.split('?')[0]} holds no TREX-Ray run (no {DRIVER}, no events.jsonl)")
    return inbox, None


def _ledger_status(inbox: "Inbox", run_dir: Path | None) -> dict | None:
    """``status`` from the ledger (the run's directory, or its copy in remote storage) when no
    driver answers: the run has finished, or is not going right now."""
    import tempfile

    from trex_ray.report.data import load_run
    from trex_ray.search.spend import snapshot
    from trex_ray.search.state import run_facts
    from trex_ray.search.steering import status

    with tempfile.TemporaryDirectory() as tmp:
        if run_dir is None:
            if not inbox.store.exists("events.jsonl"):
                return None
            run_dir = Path(tmp)
            for name in ("events.jsonl", "config.yaml"):
                if inbox.store.exists(name):
                    (run_dir / name).write_bytes(inbox.store.read_bytes(name))
        run = load_run(run_dir)
    cfg = run.config or Config()
    tree = run.tree
    facts = run_facts(tree, cfg, run.finished)
    started = sum(1 for n in tree.by_status("running", "succeeded", "failed") if n.parent_id)
    return status(tree, facts, run.metric, cfg.search.max_trials + tree.extra_trials, started,
                  snapshot(tree, facts.default, cfg.limits.accelerator_hours))


def steer_main(argv: list[str] | None = None) -> int:
    """``python -m trex_ray steer RUN_DIR_OR_URI COMMAND ...``: steer a running search."""
    import getpass
    import socket

    parser = argparse.ArgumentParser(prog="python -m trex_ray steer", usage="python -m trex_ray steer "
                                     "[--wait S] [--by NAME] RUN_DIR_OR_URI COMMAND ...", description=STEER_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the driver's answer (default 30)")
    parser.add_argument("--by", default=f"{getpass.getuser()}@{socket.gethostname()}",
                        help="who is steering, for the ledger and the report (default user@host)")
    parser.add_argument("run", help="the run directory, or the run's storage root (s3://bucket/prefix/RUN_ID)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command and its arguments")
    args = parser.parse_args(argv)
    from trex_ray.report.live import render_status
    from trex_ray.search.inbox import new_command_id
    from trex_ray.search.steering import parse

    try:
        cmd = parse(args.command, new_command_id(), args.by[:200] or "user", time.time())
        inbox, run_dir = _open_inbox(args.run)
    except (ValueError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    driver = inbox.driver() or {}
    if driver.get("state") == "finished" and cmd.op != "status":
        print(f"refused: the run has finished ({driver.get('reason')})", file=sys.stderr)
        return 1
    reply = None
    if driver.get("state") != "finished":
        inbox.post(cmd)
        reply = inbox.wait(cmd.id, args.wait)
    if reply is None and cmd.op == "status":
        inbox.withdraw(cmd.id)
        view = _ledger_status(inbox, run_dir)
        if view is not None:
            if driver.get("state") != "finished":
                print(f"(no driver answered within {args.wait:g}s: from the ledger)")
            print(render_status(view))
            return 0
    if reply is None:
        seen = f"; the driver last looked {time.time() - driver['at']:.0f}s ago" if driver.get("at") else ""
        print(f"queued: no driver answered within {args.wait:g}s{seen}; the command stays in the inbox and applies "
              "when the run goes on (launch.py --resume RUN_DIR)", file=sys.stderr)
        return 3
    if reply.status is not None:
        print(render_status(reply.status))
        return 0
    if not reply.accepted:
        print(f"refused: {reply.message}", file=sys.stderr)
        return 1
    print(f"applied: {reply.message}")
    return 0


COMMANDS = {"push": (push_main, "upload a finished run's best model to the Hugging Face Hub"),
            "task": (task_main, "draft a task file from a requirement and your data (task draft)"),
            "steer": (steer_main, "steer a running search: pin, prune, annotate, budget, stop, status")}


def tools_main(argv: list[str] | None = None) -> int:
    """``python -m trex_ray COMMAND ...``: the commands that act on a run (``launch.py`` starts one)."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        lines = [f"  {name:<8} {help_}" for name, (_, help_) in COMMANDS.items()]
        print("usage: python -m trex_ray COMMAND [ARGS]\n\ncommands:\n" + "\n".join(lines)
              + "\n\n(python launch.py starts a search; python -m trex_ray.report RUN_DIR rebuilds a report)",
              file=sys.stderr if argv else sys.stdout)
        return 2 if argv and argv[0] not in ("-h", "--help") else 0
    return COMMANDS[argv[0]][0](argv[1:])
