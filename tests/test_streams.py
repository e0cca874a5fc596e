"""sekiops.streams.WriteBehind: the restore's output thread keeps order, bounds memory, and fails loudly."""

from __future__ import annotations

import threading

import pytest

from sekiops.streams import WriteBehind


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
