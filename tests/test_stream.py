"""The record stream layer: lenient input, ordered bounded concurrency, output."""

from __future__ import annotations

import io
import threading
import time

import pytest

from picpipe import stream
from picpipe.concurrency import ordered_map
from picpipe.stream import Output, parse_line, read_items, read_stream


def items_of(data: bytes) -> list[stream.Item]:
    return list(read_stream(io.BytesIO(data)))


def test_json_objects_paths_and_blank_lines():
    items = items_of(b'{"path": "a.png", "extra": [1]}\n\n  \nphotos/b c.png\r\n[draft] x.png\n')
    assert [i.record for i in items] == [
        {"path": "a.png", "extra": [1]},
        {"path": "photos/b c.png"},
        {"path": "[draft] x.png"},
    ]
    assert [i.where for i in items] == ["line 1", "line 4", "line 5"]


@pytest.mark.parametrize(
    ("line", "type_"),
    [('{"path": "a.png"', "bad_json"), ("{oops}", "bad_json"),
     ("[1, 2]", "not_an_object"), ('"a.png"', "not_an_object"), ("42", "not_an_object"), ("null", "not_an_object")],
)
def test_bad_json_lines_become_error_records_naming_the_line(line, type_):
    items = items_of(b'{"path": "ok.png"}\n' + line.encode() + b'\n{"path": "after.png"}\n')
    assert len(items) == 3
    bad = items[1].record
    assert bad["error"]["stage"] == "input"
    assert bad["error"]["type"] == type_
    assert bad["error"]["message"].startswith("line 2: ")
    assert bad["error"]["hint"]
    assert bad["raw"] == line  # nothing lost
    assert items[2].record == {"path": "after.png"}


def test_byte_order_mark_and_invalid_utf8():
    items = items_of(b'\xef\xbb\xbf{"path": "a.png"}\n\xff\xfe.png\n')
    assert items[0].record == {"path": "a.png"}
    assert items[1].record["error"]["type"] == "bad_encoding"
    assert items[1].record["raw"] == "\\xff\\xfe.png"


def test_overlong_line_is_refused_and_reading_goes_on(monkeypatch):
    monkeypatch.setattr(stream, "MAX_LINE_BYTES", 64)
    items = items_of(b'{"path": "' + b"x" * 200 + b'"}\n{"path": "next.png"}\n')
    assert items[0].record["error"]["type"] == "line_too_long"
    assert items[1].record == {"path": "next.png"}
    assert items[1].where == "line 2"


def test_positional_paths_and_dash():
    stdin = io.BytesIO(b"from-stdin.png\n")
    records = [i.record for i in read_items(["a.png", "-", "b.png"], stdin)]
    assert records == [{"path": "a.png"}, {"path": "from-stdin.png"}, {"path": "b.png"}]


def test_parse_line_keeps_unknown_fields_and_unicode():
    assert parse_line('{"path": "图.png", "mine": {"x": 1}}', "line 1") == {"path": "图.png", "mine": {"x": 1}}


def test_ordered_map_keeps_order_under_concurrency():
    def slow_double(x: int) -> int:
        time.sleep(0.02 if x % 3 == 0 else 0.001)
        return 2 * x

    assert list(ordered_map(slow_double, range(60), jobs=8)) == [2 * x for x in range(60)]


def test_ordered_map_memory_is_bounded_by_the_window():
    consumed = 0
    lock = threading.Lock()

    def source():
        nonlocal consumed
        for i in range(10_000):
            with lock:
                consumed += 1
            yield i

    results = ordered_map(lambda x: x, source(), jobs=4)
    first = next(iter(results))
    time.sleep(0.2)  # let the feeder run ahead as far as it is allowed to
    assert first == 0
    assert consumed <= 4 * 2 + 2, consumed  # window (2 × jobs) plus the one in hand
    assert sum(1 for _ in results) == 9_999


def test_ordered_map_yields_finished_results_before_the_input_ends():
    gate = threading.Event()

    def source():
        yield 1
        gate.wait(5)  # the next input line is slow to come
        yield 2

    results = iter(ordered_map(lambda x: x * 10, source(), jobs=2))
    started = time.monotonic()
    assert next(results) == 10
    assert time.monotonic() - started < 1
    gate.set()
    assert list(results) == [20]


def test_ordered_map_reraises_input_failure():
    def source():
        yield 1
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(ordered_map(lambda x: x, source(), jobs=2))


class CountingStream(io.BytesIO):
    flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def test_output_one_flush_per_record_and_error_tally():
    sink = CountingStream()
    out = Output(sink, quiet=True)
    out.record({"path": "a.png", "名": "图"})
    out.record({"path": "b.png", "error": {"stage": "x", "type": "y", "message": "z"}})
    assert sink.flushes == 2
    assert sink.getvalue().decode().splitlines() == ['{"path":"a.png","名":"图"}',
                                                     '{"path":"b.png","error":{"stage":"x","type":"y","message":"z"}}']
    assert out.status == 1


def test_progress_only_on_a_terminal_after_a_delay(monkeypatch, capsys):
    class FakeTTY(io.StringIO):
        def isatty(self) -> bool:
            return True

    fake = FakeTTY()
    monkeypatch.setattr("sys.stderr", fake)
    progress = stream.Progress(enabled=True)
    progress.tick()
    assert fake.getvalue() == ""  # short runs stay silent
    progress._next = 0  # pretend the delay has passed
    progress.tick()
    assert "2 records" in fake.getvalue() and "/s" in fake.getvalue()
    progress.done()
    assert fake.getvalue().endswith("\r\033[K")
    assert stream.Progress(enabled=False).enabled is False


def test_pending_gives_finished_results_in_order_and_never_overtakes():
    from picpipe.concurrency import OrderedMap

    release = threading.Event()

    def work(x: int) -> int:
        if x == 0:
            release.wait(5)
        return x

    stuck = OrderedMap(work, range(6), jobs=6)
    time.sleep(0.2)  # 1..5 are done, 0 is not
    assert stuck.pending() == []  # nothing may overtake the unfinished first one
    release.set()
    done = OrderedMap(work, range(6), jobs=6)
    time.sleep(0.2)
    assert done.pending() == [0, 1, 2, 3, 4, 5]  # pending() is what Ctrl-C writes, once


@pytest.mark.parametrize("line", ['{"x": NaN}', '{"x": 1e400}', '{"x": -Infinity}',
                                  '{"a": ' + "[" * 150 + "]" * 150 + "}"])
def test_values_json_cannot_carry_are_refused(line):
    [item] = items_of(line.encode() + b"\n")
    assert item.record["error"]["type"] == "bad_json"
    assert item.bad_input


def test_an_upstream_input_error_is_not_a_new_one():
    upstream = b'{"error": {"stage": "input", "type": "bad_json", "message": "line 2: x"}, "raw": "{bad"}\n'
    [item] = items_of(upstream)
    assert item.record["error"]["type"] == "bad_json" and not item.bad_input
