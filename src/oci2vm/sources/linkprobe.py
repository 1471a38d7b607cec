"""Whether a build's downloads share one link, found by trying: the first two run together
for a moment, then the first alone. On a shared link (the usual slow last mile) the first
alone gets about what both got together, and a download that gives way to the layer being
flattened gives it bandwidth; where each connection is limited alone (a long path, a
throttling server), the first alone gets only its own share, and giving way would only
make the downloads one at a time (sources/downloads.py decides with the verdict).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from enum import Enum
from typing import Protocol

log = logging.getLogger(__name__)

# Seconds of each phase: both run; then the first alone (after as long again for the
# connections' buffers to fill and the other's bytes to stop coming).
PHASE = 0.4
# Alone, the first download gets at least this share of what both got together: a shared
# link (on separate ones it gets half).
SHARED_SHARE = 0.75


class Flow(Protocol):
    """A download as the probe sees it (image.arrival.Arrival)."""

    @property
    def received(self) -> int: ...

    @property
    def done(self) -> bool: ...


class Step(Enum):
    ALL = "all"  # every download runs
    FIRST = "first"  # only the first that is not done runs
    DONE = "done"  # the probe is over: see LinkProbe.shared


class LinkProbe:
    """Call step() often (from each download's writes); it says who may run now."""

    def __init__(self) -> None:
        self.shared: bool | None = None  # the verdict
        self._pair: tuple[Flow, Flow] | None = None
        self._start = 0.0
        self._marks: tuple[int, int] = (0, 0)  # what the pair had received at the start
        self._together = 0.0  # bytes/s of both, in the first phase
        self._alone_mark: int | None = None  # what the first had when measuring alone began

    def step(self, flows: Sequence[Flow], now: float) -> Step:
        """The phase at `now` for downloads `flows` (in the order the build reads them)."""
        if self.shared is not None:
            return Step.DONE
        if self._pair is None:
            running = [f for f in flows if not f.done and f.received > 0]
            if len(running) < 2:
                return Step.ALL
            self._pair = (running[0], running[1])
            self._start = now
            self._marks = (running[0].received, running[1].received)
            return Step.ALL
        first, second = self._pair
        if first.done or second.done:  # too small to tell: the usual case, a shared link
            self.shared = True
            return Step.DONE
        elapsed = now - self._start
        if elapsed < PHASE:
            return Step.ALL
        if not self._together:
            got = first.received - self._marks[0] + second.received - self._marks[1]
            self._together = max(got, 1) / elapsed
        if elapsed < 2 * PHASE:
            return Step.FIRST
        if self._alone_mark is None:
            self._alone_mark = first.received
            self._start = now - 2 * PHASE  # the measuring starts now
            return Step.FIRST
        if elapsed < 3 * PHASE:
            return Step.FIRST
        alone = (first.received - self._alone_mark) / (elapsed - 2 * PHASE)
        self.shared = alone >= SHARED_SHARE * self._together
        log.debug(
            "downloads: %.1f MB/s together, %.1f MB/s the first alone: %s",
            self._together / 1e6,
            alone / 1e6,
            "one shared link" if self.shared else "a limit per connection",
        )
        return Step.DONE
