"""An installed kernel's own module metadata, as depmod left it in the image: which modules
modules.dep lists (and what each needs) and which are built in (modules.builtin). Used to
build oci2vm's initramfs for a kernel the image already has, from its own modules."""

from __future__ import annotations

from collections.abc import Iterable

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
    out) and everything they need, each after what it needs (a cycle, which depmod
    refuses to write, is cut where it closes). A walk by a stack of its own: an image's
    modules.dep may chain more modules than Python's recursion limit."""
    by_path = {path: name for name, (path, _) in deps.items()}
    ordered: list[str] = []
    done: set[str] = set()
    for name in names:
        normal = name.replace("-", "_")
        if normal in builtin or normal in done or normal not in deps:
            continue
        done.add(normal)
        path, needs = deps[normal]
        stack = [(path, iter(needs))]
        while stack:
            path, todo = stack[-1]
            for need in todo:
                child = by_path.get(need, module_name(need))
                if child not in done and child in deps:
                    done.add(child)
                    stack.append((deps[child][0], iter(deps[child][1])))
                    break
            else:
                stack.pop()
                ordered.append(path)
    return ordered
