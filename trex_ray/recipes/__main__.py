"""``python -m trex_ray.recipes check PLAN.yaml --task TASK``: see ``trex_ray.recipes.check``."""

import sys

from trex_ray.recipes.check import main

sys.exit(main())
