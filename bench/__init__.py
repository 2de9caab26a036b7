"""orchgpt benchmarks: routing, events, scale, start-up and task overhead.

Every figure is a ratio against a baseline measured in the same run (the
machines are shared and noisy). Run everything with ``python -m bench.run``.
"""
