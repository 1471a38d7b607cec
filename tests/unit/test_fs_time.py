"""The filesystem's own time (identity.fs_time): from SOURCE_DATE_EPOCH or the image's
creation time, the same whatever the host's time zone. (test_ext4_limits.py: how the
superblock stores it.)"""

from __future__ import annotations

import os
import time
from types import SimpleNamespace
from typing import cast

import pytest

from oci2vm.errors import Oci2vmError
from oci2vm.identity import fs_time
from oci2vm.image.model import Image


def _image(created: str) -> Image:
    return cast(Image, SimpleNamespace(config=SimpleNamespace(created=created)))


@pytest.fixture(autouse=True)
def _no_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)


@pytest.mark.parametrize(
    ("created", "seconds"),
    [
        ("2023-06-01T12:00:00Z", 1685620800),
        ("2023-06-01T12:00:00.123456789+02:00", 1685613600),
        ("2023-06-01T12:00:00", 1685620800),  # no offset: UTC, not the host's zone
        ("0001-01-01T00:00:00Z", 0),  # Go's zero time: no date
        ("1960-01-01T00:00:00Z", 0),
        ("not a date", 0),
        ("", 0),
    ],
)
def test_the_creation_time_in_seconds(created: str, seconds: int) -> None:
    assert fs_time(_image(created)) == seconds


def test_a_naive_creation_time_does_not_follow_the_host_time_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = set()
    for zone in ("UTC", "America/New_York", "Asia/Kolkata"):
        monkeypatch.setenv("TZ", zone)
        time.tzset()
        seen.add(fs_time(_image("2023-06-01T12:00:00")))
    monkeypatch.delenv("TZ")
    time.tzset()
    assert seen == {1685620800}, os.environ.get("TZ")


def test_source_date_epoch_wins_and_must_be_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1714564800")
    assert fs_time(_image("2023-06-01T12:00:00Z")) == 1714564800
    for bad in ("-1", "1e9", " 5", "１２"):
        monkeypatch.setenv("SOURCE_DATE_EPOCH", bad)
        with pytest.raises(Oci2vmError, match=r"^malformed SOURCE_DATE_EPOCH"):
            fs_time(_image(""))
