"""Closed by default: the embedded Ray of ``python launch.py`` (no cluster to join) serves this
machine only, so every one of its listeners (GCS, raylet, object manager, agents, workers)
binds to 127.0.0.1.

Passing 127.0.0.1 as the node address is not enough: Ray rewrites it to the machine's routable
address and listens on all interfaces, unless its "local-only cluster" switch (the one it turns
on for Windows and macOS) is off. Ray reads that switch when it is imported, in this process, and
from the environment in the processes it starts; ``loopback_only(True)`` sets both and
``loopback_only(False)`` restores them after ``ray.shutdown`` (a later cluster in the same
process, on 127.0.0.x nodes, is not affected). tests/test_closed.py checks the addresses Ray
really listens on, so a Ray upgrade that moves the switch fails there.
"""

from __future__ import annotations

import os

LOCAL_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_saved: list[tuple[str | None, bool]] = []


def loopback_only(on: bool) -> None:
    """Before an embedded ``ray.init`` (with ``_node_ip_address="127.0.0.1"``): True; after its
    ``ray.shutdown``: False."""
    from ray._private import ray_constants

    if on:
        _saved.append((os.environ.get(LOCAL_ONLY), ray_constants.ENABLE_RAY_CLUSTER))
        os.environ[LOCAL_ONLY] = "0"
        ray_constants.ENABLE_RAY_CLUSTER = False
    elif _saved:
        env, flag = _saved.pop()
        if env is None:
            os.environ.pop(LOCAL_ONLY, None)
        else:
            os.environ[LOCAL_ONLY] = env
        ray_constants.ENABLE_RAY_CLUSTER = flag
