"""LinkProbe: two downloads together, then the first alone, tell a shared link (the first
alone gets what both got) from separate ones (it gets its own share only)."""

from __future__ import annotations

from dataclasses import dataclass

from oci2vm.sources.linkprobe import PHASE, LinkProbe, Step

TICK = PHASE / 8


@dataclass
class Flow:
    received: int = 0
    done: bool = False


def run_probe(rates: dict[Step, tuple[int, int]], *, finish_second_at: float = 1e9) -> LinkProbe:
    """Drive a probe over two flows that receive `rates[step]` bytes per tick each (0
    for one that pauses), until it gives its verdict; return it."""
    probe = LinkProbe()
    first, second = Flow(1), Flow(1)
    now = 0.0
    step = Step.ALL
    while step is not Step.DONE:
        step = probe.step([first, second], now)
        if step is not Step.DONE:
            a, b = rates[step]
            first.received += a
            second.received += b
        now += TICK
        second.done = now >= finish_second_at
        assert now < 10 * PHASE, "no verdict"
    return probe


def test_a_first_download_that_gets_the_whole_link_alone_means_a_shared_link() -> None:
    probe = run_probe({Step.ALL: (50, 50), Step.FIRST: (100, 0)})
    assert probe.shared is True


def test_a_first_download_that_gets_its_own_share_alone_means_separate_links() -> None:
    probe = run_probe({Step.ALL: (100, 100), Step.FIRST: (100, 0)})
    assert probe.shared is False


def test_everyone_runs_until_two_downloads_have_bytes() -> None:
    probe = LinkProbe()
    waiting, started = Flow(0), Flow(10)
    assert probe.step([waiting, started], 0.0) is Step.ALL
    assert probe.step([waiting, started], 5 * PHASE) is Step.ALL
    assert probe.shared is None


def test_a_download_done_during_the_probe_ends_it_as_a_shared_link() -> None:
    probe = run_probe({Step.ALL: (100, 100), Step.FIRST: (100, 0)}, finish_second_at=PHASE)
    assert probe.shared is True


def test_the_phases_come_in_order() -> None:
    probe = LinkProbe()
    first, second = Flow(1), Flow(1)
    seen = []
    now = 0.0
    while (step := probe.step([first, second], now)) is not Step.DONE:
        if not seen or seen[-1] is not step:
            seen.append(step)
        first.received += 10
        now += TICK
    assert seen == [Step.ALL, Step.FIRST]
    assert 3 * PHASE <= now <= 3 * PHASE + 2 * TICK
