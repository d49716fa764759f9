"""Benchmark suite for the issuer (``make bench``), kept outside the pytest suite.

Tests assert behaviour, never timings; the figures here are measured on
purpose, against a real ``issuer serve`` (gunicorn) with PostgreSQL and Redis,
and expressed as ratios to a hello-world route of the same server so that
they hold on a noisy machine. See docs/performance.md.

Modules: :mod:`bench.scenario` (the registered set-up and the user tokens),
:mod:`bench.server` (starting the issuer, its database and Redis namespace,
worker RSS, audit counts), :mod:`bench.loadgen` (the load generator, run as a
separate process), :mod:`bench.stats` (percentiles, CPU accounting),
:mod:`bench.report` (table, JSON, regression check, plot),
:mod:`bench.verifier` (verifier SDK micro-benchmarks) and
:mod:`bench.runner` (``python -m bench``).
"""
