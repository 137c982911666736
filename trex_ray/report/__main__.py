"""``python -m trex_ray.report RUN_DIR``: (re)build a run's report.html and report.md."""

from __future__ import annotations

import argparse
import logging
import sys

from trex_ray.config import ConfigError
from trex_ray.guard.redact import console_line, console_logging
from trex_ray.report.page import write_report
from trex_ray.search.ledger import LedgerError

log = logging.getLogger("trex_ray.report")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trex_ray.report", description="(Re)build a run's report.html and report.md.")
    ap.add_argument("run_dir")
    args = ap.parse_args(argv)
    console_logging("INFO", "%(message)s")
    try:
        path = write_report(args.run_dir)
    except (FileNotFoundError, LedgerError, ConfigError) as e:  # no run there, or a damaged ledger
        print(f"error: {console_line(str(e))}", file=sys.stderr)
        return 2
    log.info("wrote %s and %s", path, path.with_name("report.md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
