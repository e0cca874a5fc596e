"""A spilled SpilledList's memory does not grow with its records (a million-blob audit holds two).

It used to keep one Python int per record (the record's file offset): ~36 bytes each, 72 MB for
the two lists of a 1,000,000-blob audit (measured: 105 MiB peak RSS against 35 MiB with the sparse
index, docs/benchmarks.md). Indexing still finds every record.
"""

from __future__ import annotations

import tracemalloc

from sekiops.spill import INDEX_STRIDE, SpilledList


def test_heap_does_not_grow_with_spilled_records(tmp_path, monkeypatch):
    monkeypatch.setenv("SEKIOPS_SPOOL_DIR", str(tmp_path))
    lst = SpilledList(budget=1000)
    for i in range(2000):  # spilled by now
        lst.append({"key": f"P/{i:064x}.bin", "bytes": i})
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(2000, 202_000):
            lst.append({"key": f"P/{i:064x}.bin", "bytes": i})
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(lst) == 202_000 and lst.spilled
    assert grown < 1_000_000, f"the Python heap grew by {grown:,} bytes for 200,000 spilled records"
    for i in (0, 1, 999, 1000, 1001, INDEX_STRIDE - 1, INDEX_STRIDE, INDEX_STRIDE + 1, 150_001, 201_999, -1):
        j = i % len(lst)
        assert lst[i] == {"key": f"P/{j:064x}.bin", "bytes": j}
    assert lst[5:8] == [{"key": f"P/{j:064x}.bin", "bytes": j} for j in (5, 6, 7)]
    assert sum(1 for _ in lst) == 202_000
    lst.close()
