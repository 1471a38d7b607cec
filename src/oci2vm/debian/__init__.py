"""Debian packages, fetched through the archive's signed chain and read without running
anything: InRelease (OpenPGP-signed) → Packages index (sha256 from the Release) → .deb
(sha256 from the index) → the files of its data.tar, streamed.

    archive = Archive(store, "bookworm", arch)          # archive.py
    package = archive.resolve(arch.facts.debian_kernel)  # metapackage → the real package
    with open_deb(archive.download(package)).data() as tar:  # deb.py
        for member in tar: ...                           # tar is the member's DataReader
"""
