"""``python -m trex_ray.report RUN_DIR``: (re)build a run's report.html and report.md."""

from __future__ import annotations

import argparse
import logging
import sys

from trex_ray.report.page import write_report

log = logging.getLogger("trex_ray.report")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trex_ray.report", description="(Re)build a run's report.html and report.md.")
    ap.add_argument("run_dir")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = write_report(args.run_dir)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    log.info("wrote %s and %s", path, path.with_name("report.md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
