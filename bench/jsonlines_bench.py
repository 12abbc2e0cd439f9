"""picpipe.stream against the `jsonlines` package (issue 18): should the record stream use it?

The design card names `jsonlines` for reading and writing JSON Lines. Our contract (DESIGN §1) asks
more of a reader than JSON Lines does: a line that is no JSON object is a file path, every message
names its line, reading goes on after a bad line, one flushed write per record. This measures, on
BENCH_RECORDS records (default 100000) shaped like pp-upload's (about 330 bytes, a Chinese file
name), the median of BENCH_REPEAT runs (default 5) of:

  write  - one record at a time, flushed after each, to a file on /dev/null (a syscall per record, as
           into a pipe): picpipe.stream.Output.record vs jsonlines.Writer(compact=True, flush=True)
  read   - the whole stream from memory: picpipe.stream.read_stream (lenient: paths, checks of the
           known fields) vs jsonlines.Reader (strict JSON), and vs jsonlines.Reader wrapped to give
           the contract's leniency (a non-JSON line becomes a path record)
  import - `python -c "import ..."` wall time, start-up included (every command pays it)

and shows what each says about a bad line and whether reading goes on after it. Needs
`pip install jsonlines` (only here: picpipe does not depend on it). Run: python bench/jsonlines_bench.py
"""

from __future__ import annotations

import gc
import io
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jsonlines  # noqa: E402

from picpipe.stream import Output, read_stream  # noqa: E402

RECORDS = int(os.environ.get("BENCH_RECORDS", "100000"))
REPEAT = int(os.environ.get("BENCH_REPEAT", "5"))


def record(number: int) -> dict[str, Any]:
    sha = f"{number:064x}"
    return {"path": f"/home/me/图床/截图 {number}.png", "source": f"/home/me/图床/截图 {number}.png",
            "sha256": sha, "size": 20000 + number, "width": 1280, "height": 720, "format": "png",
            "mime": "image/png", "host": "qiniu", "key": f"2024/05/{sha[:12]}.png",
            "url": f"https://img.example.com/2024/05/{sha[:12]}.png", "uploaded_at": "2024-05-01T08:00:00.000Z"}


def medians(contenders: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Median seconds of each, the runs interleaved (a, b, c, a, b, c ...) so that drift hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(REPEAT):
        for name, work in contenders.items():
            gc.collect()
            start = time.perf_counter()
            work()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(each) for name, each in times.items()}


def write_ours(records: list[dict[str, Any]]) -> None:
    with open(os.devnull, "wb") as sink:
        out = Output(stream=sink, quiet=True)
        for one in records:
            out.record(one)


def write_jsonlines(records: list[dict[str, Any]]) -> None:
    with open(os.devnull, "wb") as sink, jsonlines.Writer(sink, compact=True, flush=True) as writer:
        for one in records:
            writer.write(one)


def read_ours(data: bytes) -> int:
    return sum(1 for _ in read_stream(io.BytesIO(data)))


def read_jsonlines(data: bytes) -> int:
    return sum(1 for _ in jsonlines.Reader(io.BytesIO(data)))


def lenient_jsonlines(data: bytes) -> Iterator[dict[str, Any]]:
    """jsonlines.Reader made to keep our contract as far as it can: a line that is no JSON is a path."""
    reader = jsonlines.Reader(io.BytesIO(data))
    while True:
        try:
            value = reader.read(type=dict, skip_empty=True)
        except EOFError:
            return
        except jsonlines.InvalidLineError as exc:
            line = exc.line.decode("utf-8", "backslashreplace") if isinstance(exc.line, bytes) else exc.line
            if line.lstrip().startswith("{"):
                yield {"error": {"type": "bad_json", "message": str(exc)}}
            else:
                yield {"path": line.rstrip("\r\n")}
            continue
        yield value


def read_lenient_jsonlines(data: bytes) -> int:
    return sum(1 for _ in lenient_jsonlines(data))


def python_c(statement: str) -> Callable[[], object]:
    return lambda: subprocess.run([sys.executable, "-c", statement], check=True)


class CountingSink(io.RawIOBase):
    """A raw (unbuffered) stream that counts write calls: each one is a syscall on a pipe, and a
    reader can see what one call wrote before the next arrives."""

    def __init__(self) -> None:
        self.calls = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.calls += 1
        return len(data)


def writes_per_record() -> tuple[int, int]:
    ours, theirs = CountingSink(), CountingSink()
    Output(stream=ours, quiet=True).record(record(1))  # type: ignore[arg-type]
    jsonlines.Writer(theirs, compact=True, flush=True).write(record(1))
    return ours.calls, theirs.calls


def lone_surrogate() -> tuple[str, str]:
    """A path that was no UTF-8 (`caf\udce9.png`, from an argument): what each writes."""
    one = {"path": "caf\udce9.png"}
    sink = io.BytesIO()
    Output(stream=sink, quiet=True).record(one)
    try:
        jsonlines.Writer(io.BytesIO(), compact=True).write(one)
        theirs = "written"
    except UnicodeEncodeError as exc:
        theirs = f"UnicodeEncodeError: {exc}"
    return sink.getvalue().decode().strip(), theirs


def behaviour() -> list[tuple[str, str, str]]:
    """(case, picpipe.stream, jsonlines) for the inputs a pipeline meets."""
    cases = {
        "bad JSON on line 2": b'{"path": "a.png"}\n{"path": oops}\n{"path": "c.png"}\n',
        "a path line (ls)": "截图 1.png\n".encode(),
        "a Windows path line": "C:\\Users\\me\\截图 1.png\n".encode(),
        "not UTF-8 on line 1": b"\xff\xfe.png\n{}\n",
        "NaN": b'{"size": NaN}\n',
    }
    rows = []
    for case, data in cases.items():
        ours = "; ".join(item.record["error"]["message"] if "error" in item.record else f"record {item.record}"
                         for item in read_stream(io.BytesIO(data)))
        theirs, reader = [], jsonlines.Reader(io.BytesIO(data))
        while True:
            try:
                theirs.append(f"record {reader.read()}")
            except EOFError:
                break
            except jsonlines.InvalidLineError as exc:
                theirs.append(f"InvalidLineError: {exc}")
        rows.append((case, ours, "; ".join(theirs)))
    return rows


def main() -> None:
    records = [record(n) for n in range(RECORDS)]
    data = b"".join((json.dumps(r, ensure_ascii=False) + "\n").encode() for r in records)
    from importlib.metadata import version

    print(f"{RECORDS} records of {len(data) / RECORDS:.0f} bytes, median of {REPEAT}, Python "
          f"{sys.version.split()[0]}, jsonlines {version('jsonlines')}")
    write = medians({"ours": lambda: write_ours(records), "jsonlines": lambda: write_jsonlines(records)})
    read = medians({"ours": lambda: read_ours(data), "jsonlines": lambda: read_jsonlines(data),
                    "lenient": lambda: read_lenient_jsonlines(data)})
    start = medians({"pass": python_c("pass"), "ours": python_c("import picpipe.stream"),
                     "both": python_c("import picpipe.stream, jsonlines")})
    ours_calls, their_calls = writes_per_record()

    def rate(seconds: float) -> str:
        return f"{RECORDS / seconds / 1000:.0f}k/s"

    print("| 100k records | picpipe.stream | jsonlines 4.0.0 | jsonlines + our leniency |")
    print("|---|---:|---:|---:|")
    print(f"| write, flush per record | {rate(write['ours'])} | {rate(write['jsonlines'])} | - |")
    print(f"| read (ours: lenient + field checks) | {rate(read['ours'])} | {rate(read['jsonlines'])} | "
          f"{rate(read['lenient'])} |")
    print(f"| write calls per record (unbuffered) | {ours_calls} | {their_calls} | - |")
    print(f"| start-up: python -c 'import ...' | {start['ours'] * 1000:.0f} ms | "
          f"+{(start['both'] - start['ours']) * 1000:.0f} ms on top | "
          f"(python -c pass: {start['pass'] * 1000:.0f} ms) |")
    print()
    for case, ours_said, theirs_said in behaviour():
        print(f"{case}\n  picpipe.stream: {ours_said}\n  jsonlines:      {theirs_said}")
    ours_line, theirs_said = lone_surrogate()
    print(f"a lone surrogate in a path (writing)\n  picpipe.stream: {ours_line}\n  jsonlines:      {theirs_said}")


if __name__ == "__main__":
    main()
