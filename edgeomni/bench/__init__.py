"""Benchmarks (figures, not timed tests): `edgeomni bench speech` and the speech set it measures on.

Nothing here is on the runtime path; the peers' packages are optional (requirements/bench.txt).
"""
