"""``python -m trex_ray COMMAND``: see ``cli.tools_main``."""

import sys

from trex_ray.cli import tools_main

sys.exit(tools_main())
