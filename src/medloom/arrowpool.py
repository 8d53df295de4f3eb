"""Arrow's memory pool for the `ingest` and `export` commands.

pyarrow's default pool (mimalloc) keeps the pages of freed buffers for later reuse. A driver builds an Arrow
table for every 4,096 files it scans and for every part it plans or writes, and frees each one; under mimalloc
the kept pages made the driver's peak grow with the corpus: a 2-worker ingest of 10,000 files peaked at 126 MiB
and one of 100,000 at 156 MiB (1.24x). glibc's malloc, Arrow's "system" pool, hands them back: 112 and 134 MiB
(1.19x; `benchmarks/scale.py`), at the same speed.

Arrow's C++ side reads `ARROW_DEFAULT_MEMORY_POOL` once, when pyarrow first loads, so the command sets it before
that; its local workers inherit it (their peak is 72 MiB either way). `pa.set_memory_pool` alone reaches only
what pyarrow allocates itself, not Parquet's or the compute kernels' buffers (122 and 147 MiB). The library
functions leave a caller's process as it is, and a pool the user chose is kept.
"""

from __future__ import annotations

import os


def use_system_pool() -> None:
    """Have Arrow allocate with malloc in this process and its workers, unless the user chose a pool. Call it
    before anything imports pyarrow: later, the setting is not read (a test runs the commands to check)."""
    if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        os.environ["ARROW_DEFAULT_MEMORY_POOL"] = "system"
