"""Manifests, indexes and configs from an untrusted source: sizes and nesting are capped,
every field of the wrong type or size is a one-line Oci2vmError naming the document."""

from __future__ import annotations

import json
from typing import Any

import pytest

from oci2vm.errors import Oci2vmError
from oci2vm.image import model
from oci2vm.image.blobs import BlobRef
from oci2vm.image.model import (
    Descriptor,
    Platform,
    index_entries,
    load_json,
    load_json_list,
    manifest_kind,
    parse_config,
    parse_manifest,
    select_platform,
)

DIGEST = "sha256:" + "ab" * 32


def descriptor(**kw: Any) -> dict[str, Any]:
    return {"mediaType": model.OCI_MANIFEST, "digest": DIGEST, "size": 10, **kw}


def dumps(doc: object) -> bytes:
    return json.dumps(doc).encode()


@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_json_nested_100000_deep_is_refused(opener: str) -> None:
    deep = (opener * 100_000).encode()
    with pytest.raises(Oci2vmError, match=r"^malformed manifest: JSON nested deeper than 100"):
        load_json(deep, "manifest")
    with pytest.raises(Oci2vmError, match=r"^malformed manifest.json: JSON nested deeper"):
        load_json_list(deep, "manifest.json")
    # At the limit it parses; brackets inside strings do not count.
    ok = b'{"x": ' + b"[" * 99 + b'"[[[[{{{{"' + b"]" * 99 + b"}"
    assert load_json(ok, "manifest")["x"] is not None


def test_a_json_document_over_the_size_limit_is_refused() -> None:
    big = dumps({"layers": [], "pad": "x" * model.MAX_MANIFEST_SIZE})
    with pytest.raises(Oci2vmError, match=r"^manifest is too large: \d+ bytes, over 4 MiB"):
        load_json(big, "manifest")
    config = dumps({"rootfs": {"diff_ids": []}, "pad": "x" * model.MAX_CONFIG_SIZE})
    with pytest.raises(Oci2vmError, match=r"^image config is too large: \d+ bytes, over 8 MiB"):
        parse_config(config)
    # A config over the manifest limit but under its own is read.
    config = dumps({"rootfs": {"diff_ids": []}, "pad": "x" * model.MAX_MANIFEST_SIZE})
    assert parse_config(config).diff_ids == ()


def test_huge_json_numbers_are_malformed_json_not_a_traceback() -> None:
    with pytest.raises(
        Oci2vmError, match=r"^malformed index: not valid JSON \(an integer of 5001 digits\)$"
    ):
        load_json(b'{"size": 1' + b"0" * 5000 + b"}", "index")
    with pytest.raises(Oci2vmError, match=r"^malformed index: not valid JSON"):
        load_json_list(b"[" + b"1" * 4400 + b"]", "index")


class Lookup:
    """A BlobLookup that records what is asked of it."""

    def __init__(self, config: bytes) -> None:
        self.config = config
        self.asked: list[Descriptor] = []

    def __call__(self, desc: Descriptor) -> BlobRef:
        self.asked.append(desc)
        lookup = self

        class Ref:
            def read_all(self, limit: int = 16 << 20) -> bytes:
                assert len(lookup.config) <= limit
                return lookup.config

        return Ref()  # type: ignore[return-value]


def _manifest(config_size: int) -> bytes:
    return dumps(
        {
            "schemaVersion": 2,
            "mediaType": model.OCI_MANIFEST,
            "config": {"mediaType": model.OCI_CONFIG, "digest": DIGEST, "size": config_size},
            "layers": [],
        }
    )


def test_a_config_descriptor_over_the_limit_is_refused_before_it_is_fetched() -> None:
    lookup = Lookup(b'{"rootfs": {"diff_ids": []}}')
    kw: dict[str, Any] = dict(source="s", name="n", manifest_digest=None, manifest_media_type=None)
    with pytest.raises(Oci2vmError, match=r"^image config of m is too large: 9 GiB.*over 8 MiB"):
        model.assemble(manifest_bytes=_manifest(9 << 30), blob=lookup, what="m", **kw)
    assert lookup.asked == []
    image = model.assemble(manifest_bytes=_manifest(30), blob=lookup, what="m", **kw)
    assert image.layers == () and len(lookup.asked) == 1


@pytest.mark.parametrize(
    ("platform", "want"),
    [
        ({"os": "linux", "architecture": "arm64", "variant": None}, "linux/arm64"),
        ({"os": "linux", "architecture": ["arm64"]}, "architecture must be a string"),
        ({"os": {"deep": 1}, "architecture": "amd64"}, "os must be a string"),
    ],
)
def test_platform_fields_are_strings_and_null_is_empty(platform: dict[str, Any], want: str) -> None:
    doc = {"manifests": [descriptor(platform=platform)]}
    try:
        assert str(index_entries(doc)[0].platform) == want
    except Oci2vmError as e:
        assert str(e) == f"malformed index: platform {want}"


def test_annotations_are_strings() -> None:
    with pytest.raises(Oci2vmError, match=r"^malformed index: annotations must map strings"):
        index_entries({"manifests": [descriptor(annotations={"a": ["b"]})]})


def test_messages_that_quote_the_input_stay_short() -> None:
    long = "x" * 100_000
    for call in (
        lambda: manifest_kind({"mediaType": long}),
        lambda: parse_manifest({"config": descriptor(), "layers": [descriptor(mediaType=long)]}),
        lambda: index_entries({"manifests": [descriptor(digest="sha256:" + long)]}),
        lambda: manifest_kind({"mediaType": ["a"]}),
    ):
        with pytest.raises(Oci2vmError) as e:
            call()
        assert len(str(e.value)) < 300 and "\n" not in str(e.value)
    entries = [
        Descriptor(model.OCI_MANIFEST, DIGEST, 1, Platform("linux", f"arch{i}"))
        for i in range(1000)
    ]
    with pytest.raises(Oci2vmError, match=r"and 990 more\)$") as e:
        select_platform(entries, Platform("linux", "s390x"), "index")
    assert len(str(e.value)) < 300


@pytest.mark.parametrize(
    ("variants", "want", "chosen"),
    [
        (["v3", "v2", "", "v1"], "", ""),  # a plain entry first
        (["v3", "v2"], "", "v2"),  # else the lowest level: it runs on the most CPUs
        (["v3"], "", "v3"),
        (["v10", "v9", "x"], "", "v9"),  # by number, not as text; names last
        (["v3", "v2", ""], "v3", "v3"),  # asked for a variant: that one
    ],
)
def test_a_plain_platform_request_takes_the_lowest_variant(
    variants: list[str], want: str, chosen: str
) -> None:
    entries = [
        Descriptor(model.OCI_MANIFEST, DIGEST, 1, Platform("linux", "amd64", v)) for v in variants
    ]
    got = select_platform(entries, Platform("linux", "amd64", want), "index")
    assert got.platform is not None and got.platform.variant == chosen


def test_an_image_of_another_os_is_refused_with_or_without_platform() -> None:
    windows = Platform("windows", "amd64")
    with pytest.raises(Oci2vmError, match=r"^s: the image is for windows/amd64: oci2vm builds Lin"):
        model.check_platform("s", windows, Platform("linux", "amd64"))
    with pytest.raises(Oci2vmError, match=r"^s: the image is for windows/amd64: oci2vm builds Lin"):
        model.check_linux("s", windows)
    model.check_platform("s", windows, windows)  # inspect may show it
    model.check_linux("s", Platform("linux", "arm64"))


@pytest.mark.parametrize(
    ("config_type", "artifact_type", "named"),
    [
        ("application/vnd.oci.empty.v1+json", "application/vnd.example+type", "example\\+type"),
        ("application/vnd.cncf.helm.config.v1+json", None, "helm.config.v1\\+json"),
    ],
)
def test_an_artifact_is_named_as_such(
    config_type: str, artifact_type: str | None, named: str
) -> None:
    doc: dict[str, Any] = {"config": descriptor(mediaType=config_type), "layers": []}
    if artifact_type:
        doc["artifactType"] = artifact_type
    with pytest.raises(Oci2vmError, match=rf"^m is an OCI artifact \('.*{named}'\), not a contai"):
        parse_manifest(doc, "m")
    for image_config in (
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.docker.container.image.v1+JSON",
        "application/octet-stream",  # what old pushers wrote: Docker pulls it as an image
    ):
        doc["config"] = descriptor(mediaType=image_config)
        assert parse_manifest(doc, "m")[1] == []  # an image, artifactType or not


OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.mark.parametrize(
    ("doc", "declared", "found"),
    [
        ({"mediaType": OCI_INDEX, "manifests": [], "layers": []}, None, "fields layers"),
        ({"mediaType": OCI_MANIFEST, "layers": [], "manifests": []}, None, "fields manifests"),
        ({"mediaType": OCI_MANIFEST, "config": {}, "layers": []}, OCI_INDEX, "declared as"),
        ({"config": {}, "layers": []}, OCI_INDEX, "fields config, layers"),
    ],
)
def test_a_document_that_reads_as_both_kinds_is_refused(
    doc: dict[str, object], declared: str | None, found: str
) -> None:
    """containers/image's rule (CVE-2021-41190): an index with an image's fields, or a
    document declared as the other kind, is ambiguous, not guessed."""
    with pytest.raises(Oci2vmError, match=f"^ambiguous manifest: .*{found}"):
        manifest_kind(doc, declared)


def test_a_declared_type_that_names_no_manifest_leaves_the_document_to_say() -> None:
    """Registries answer with application/json or octet-stream; layouts may say anything."""
    doc = {"mediaType": OCI_MANIFEST, "config": {}, "layers": []}
    for declared in ("application/json", "application/vnd.oci.descriptor.v1+json", None):
        assert manifest_kind(doc, declared) == "manifest"


def test_a_rootfs_type_other_than_layers_is_refused() -> None:
    config = b'{"os": "linux", "architecture": "amd64", "rootfs": {"type": "zfs", "diff_ids": []}}'
    with pytest.raises(Oci2vmError, match=r"rootfs.type 'zfs' \(only 'layers'\)"):
        parse_config(config)
