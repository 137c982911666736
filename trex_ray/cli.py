"""``python launch.py``: parse the command line, validate, run. Bad input -> one line, exit 2."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from trex_ray.config import ConfigError, load_config, options_help
from trex_ray.guard.redact import console_line, console_logging

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
    """The one ``error:`` line of a refused command (scrubbed, one line, no control characters)."""
    print(f"error: {console_line(str(message))}", file=sys.stderr)


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
    return 0 if summary["base_score"] is not None else 1


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


COMMANDS = {"push": (push_main, "upload a finished run's best model to the Hugging Face Hub")}


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
