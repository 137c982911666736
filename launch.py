"""TREX-Ray entry point: ``python launch.py --help``."""

import sys

from trex_ray.cli import main

if __name__ == "__main__":
    sys.exit(main())
