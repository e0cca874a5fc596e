"""sekiops.streams.WriteBehind: the restore's output thread keeps order, bounds memory, and fails loudly."""

from __future__ import annotations

import threading

import pytest

from sekiops.streams import ReadAhead, WriteBehind


def test_writes_arrive_in_order_and_close_waits_for_them():
    got = []
    with WriteBehind(got.append) as out:
        for i in range(1000):
            out.write(b"%d," % i)
    assert b"".join(got) == b"".join(b"%d," % i for i in range(1000))


def test_at_most_depth_chunks_wait():
    release = threading.Event()
    started = threading.Event()

    def slow(data):
        started.set()
        release.wait()

    out = WriteBehind(slow, depth=2)
    out.write(b"a")
    started.wait(5)
    out.write(b"b")
    out.write(b"c")  # queue now full: the next write must block
    blocked = threading.Thread(target=out.write, args=(b"d",), daemon=True)
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive(), "a fourth chunk was accepted while the writer was stuck"
    release.set()
    blocked.join(5)
    out.close()


def test_a_failed_write_is_raised_and_nothing_after_it_is_written():
    got = []

    def write(data):
        if data == b"bad":
            raise OSError(28, "No space left on device")
        got.append(data)

    with pytest.raises(OSError, match="No space"):
        with WriteBehind(write) as out:
            out.write(b"ok")
            out.write(b"bad")
            for _ in range(100):
                out.write(b"after")
    assert got == [b"ok"]


def test_a_producer_error_stops_the_writer_and_propagates():
    got = []
    with pytest.raises(ValueError):
        with WriteBehind(got.append) as out:
            out.write(b"one")
            raise ValueError("corrupt input")
    assert got in ([], [b"one"])


def test_read_ahead_yields_every_chunk_in_order():
    import io

    data = bytes(range(256)) * 5000
    with ReadAhead(io.BytesIO(data).read, size=1000, depth=2) as chunks:
        assert b"".join(chunks) == data


def test_read_ahead_raises_a_failed_read_and_stops_when_left_early():
    calls = []

    def read(n):
        calls.append(n)
        if len(calls) == 3:
            raise OSError(5, "Input/output error")
        return b"x" * n

    with pytest.raises(OSError, match="Input/output"):
        with ReadAhead(read, size=10) as chunks:
            for _ in chunks:
                pass
    endless = ReadAhead(lambda n: b"y" * n, size=10, depth=1)
    with endless as chunks:
        next(iter(chunks))
    assert not endless._thread.is_alive()
