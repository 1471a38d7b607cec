"""`oci2vm build`: source → root filesystem or bootable disk (see pipeline.py)."""

from __future__ import annotations

from oci2vm import pipeline
from oci2vm.config import Config
from oci2vm.report import Reporter


def build_command(config: Config, reporter: Reporter) -> int:
    reporter.result(pipeline.build(config, reporter))
    return 0
