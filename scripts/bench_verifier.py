#!/usr/bin/env python3
"""Verifier SDK micro-benchmark; moved to :mod:`bench.verifier`, which `make bench` runs.

Kept so the old command still works: .venv/bin/python scripts/bench_verifier.py [N]
It prints µs per operation of the raw signature check, a bare PyJWT decode,
and the SDK's verify + authorize of a capability first seen and seen before.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.verifier import main  # (after the path: the repository root holds the bench package)

if __name__ == "__main__":
    main()
