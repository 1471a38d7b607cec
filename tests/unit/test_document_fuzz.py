"""Mutation fuzzing of the manifest, index and config parsers: every damaged document is
read or refused with Oci2vmError, in bounded time and memory, whichever parser gets it.
See support/fuzzing.py for the bounds and for how to run many more examples."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from oci2vm.image import model
from oci2vm.image.blobs import BlobRef
from oci2vm.image.model import Descriptor, Platform
from support.fuzzing import bounded_memory, fuzz_settings, outcome
from support.mutations import json_seeds, mutated_json

SEEDS = json_seeds()
DECLARED = st.sampled_from([None, model.OCI_INDEX, model.DOCKER_MANIFEST, "text/plain"])


class _Ref:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read_all(self, limit: int = 16 << 20) -> bytes:
        assert len(self.data) <= limit
        return self.data


def read_as_registry_would(data: bytes, declared: str | None) -> None:
    """What the sources do with a document: manifest or index, then a config."""
    doc = model.load_json(data, "manifest")
    if model.manifest_kind(doc, declared) == "index":
        entries = model.index_entries(doc, "index")
        model.select_platform(entries, Platform("linux", "amd64"), "index")
    else:
        model.parse_manifest(doc, "manifest")


def assemble_with_config(config: bytes) -> None:
    def lookup(desc: Descriptor) -> BlobRef:
        return _Ref(config)  # type: ignore[return-value]

    manifest = SEEDS[0]
    model.assemble(
        source="s",
        name="n",
        manifest_bytes=manifest,
        manifest_digest=None,
        manifest_media_type=None,
        blob=lookup,
        what="manifest",
    )


def test_every_mutated_document_is_read_or_refused_by_every_parser() -> None:
    @fuzz_settings(100)
    @given(data=mutated_json(SEEDS), declared=DECLARED)
    def check(data: bytes, declared: str | None) -> None:
        outcome(lambda: read_as_registry_would(data, declared))
        outcome(lambda: model.parse_config(data))
        outcome(lambda: assemble_with_config(data))
        outcome(lambda: model.load_json_list(data, "manifest.json"))

    with bounded_memory():
        check()
