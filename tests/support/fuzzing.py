"""The harness of the mutation fuzz tests: how many examples run, and the bounds every
input must keep. A parser given any input either succeeds or raises Oci2vmError; any other
exception, more than TIME_LIMIT seconds, or memory over the limits for one input fails it.

The normal run is fixed (derandomized) and short. More, random examples:

    OCI2VM_FUZZ_EXAMPLES=20000 PYTHONPATH=src python -m pytest -p no:cacheprovider \\
        tests/unit/test_tar_fuzz.py tests/unit/test_document_fuzz.py
"""

from __future__ import annotations

import os
import signal
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from hypothesis import HealthCheck, settings

from oci2vm.errors import Oci2vmError

EXAMPLES_VARIABLE = "OCI2VM_FUZZ_EXAMPLES"
TIME_LIMIT = 5.0  # seconds for one input; a hang never ends
PYTHON_PEAK_LIMIT = 128 << 20  # bytes the parser may allocate for one input (tracemalloc)
# How far one input may raise the process's resident size above where it was: what
# tracemalloc does not see (C libraries' buffers: zlib, ISA-L, zstd, xz) is bounded here.
# Per input, not per run: Hypothesis itself holds ~100 MB per 1000 examples.
RSS_LIMIT = 200 << 20


def fuzz_settings(default_examples: int) -> Any:
    """Hypothesis settings: `default_examples` fixed examples, or as many random ones as
    OCI2VM_FUZZ_EXAMPLES says."""
    wanted = os.environ.get(EXAMPLES_VARIABLE)
    return settings(
        max_examples=int(wanted) if wanted else default_examples,
        derandomize=not wanted,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


class Hang(BaseException):
    """Raised into a parser that outlives TIME_LIMIT (a BaseException, so that no
    `except Exception` in the code under test swallows it)."""


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise Hang(f"no result after {TIME_LIMIT} s")


def _status(field: str) -> int:
    """A size from /proc/self/status, in bytes (VmHWM: the highest resident set size
    since the last reset; VmRSS: the current one)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> None:
    """VmHWM back to the current resident size (proc(5), clear_refs: 5; Linux 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def outcome(parse: Callable[[], object]) -> str:
    """Run `parse` under the bounds; 'ok' or the Oci2vmError's message. Any other
    exception propagates (the fuzz test fails with it and the input that caused it)."""
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT)
    tracemalloc.reset_peak()
    held = tracemalloc.get_traced_memory()[0]  # live before the input: not its doing
    _reset_peak_rss()
    resident = _status("VmRSS")
    try:
        parse()
        result = "ok"
    except Oci2vmError as e:
        result = str(e)
        assert result and "\n" not in result, f"not a one-line message: {result!r}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    peak = tracemalloc.get_traced_memory()[1] - held
    assert peak <= PYTHON_PEAK_LIMIT, f"{peak} bytes allocated for one input"
    rise = _status("VmHWM") - resident
    assert rise <= RSS_LIMIT, f"one input raised the resident size by {rise} bytes"
    return result


@contextmanager
def bounded_memory() -> Iterator[None]:
    """Trace allocations while fuzzing, for outcome()'s per-input bounds."""
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()
