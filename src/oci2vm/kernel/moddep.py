"""An installed kernel's own module metadata, as depmod left it in the image: which modules
modules.dep lists (and what each needs) and which are built in (modules.builtin). Used to
build oci2vm's initramfs for a kernel the image already has, from its own modules."""

from __future__ import annotations

from collections.abc import Iterable

from oci2vm.errors import Oci2vmError
from oci2vm.kernel.modinfo import module_name


def parse_modules_dep(text: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """modules.dep: name -> (relpath, the relpaths it needs, as listed)."""
    found: dict[str, tuple[str, tuple[str, ...]]] = {}
    for line in text.splitlines():
        path, sep, deps = line.partition(":")
        if not sep or not path.strip():
            continue
        found.setdefault(module_name(path.strip()), (path.strip(), tuple(deps.split())))
    return found


def builtin_names(text: str) -> frozenset[str]:
    return frozenset(module_name(line.strip()) for line in text.splitlines() if line.strip())


def dep_closure(
    deps: dict[str, tuple[str, tuple[str, ...]]], builtin: frozenset[str], names: Iterable[str]
) -> list[str]:
    """The relpaths of `names` (those that are modules; built-in and absent ones are left
    out) and everything they need, each after what it needs."""
    by_path = {path: name for name, (path, _) in deps.items()}
    ordered: list[str] = []
    done: set[str] = set()

    def visit(name: str, depth: int) -> None:
        if name in done or name not in deps:
            return
        if depth > len(deps):
            raise Oci2vmError(f"modules.dep: a dependency cycle through {name}")
        done.add(name)
        path, needs = deps[name]
        for need in needs:
            visit(by_path.get(need, module_name(need)), depth + 1)
        ordered.append(path)

    for name in names:
        normal = name.replace("-", "_")
        if normal not in builtin:
            visit(normal, 0)
    return ordered
