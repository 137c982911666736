"""Data recipes: typed operators (``ops``), their execution with ``datasets`` (``build``), a
content-addressed step cache (``cache``) and a dry run (``python -m trex_ray.recipes check``).

This package's ``__init__`` imports nothing heavy: the driver imports ``ops`` through
``trex_ray.search.plan``; only the worker (and the dry run) imports ``build`` and ``datasets``.
"""
