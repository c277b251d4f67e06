"""From parsed facts to edges: which captured file an import means, who calls whom.

Resolution works on the captured file list alone -- no file system, no
``sys.path``, no ``node_modules`` -- so it is deterministic, fast and safe to
run on a workspace that is not installed. The price is that it only knows
about files inside the workspace: an import of an installed or external
package resolves to nothing, which is what a context graph of the workspace
wants anyway.
"""

from __future__ import annotations

import posixpath
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from functools import partial

from statekeep.context.elements import CodeFacts, ImportRef
from statekeep.errors import ValidationError

__all__ = ["ModuleIndex", "call_links"]

#: A module lookup: dotted-name parts -> the captured file, if any.
_Finder = Callable[[list[str]], str | None]

_SCRIPT_LANGUAGES = frozenset({"javascript", "typescript", "tsx"})
_PY_SUFFIXES = (".py", ".pyi")  # stubs second: a stub only stands in for a missing module
_PY_INITS = frozenset({"__init__.py", "__init__.pyi"})
#: Conventional Python source roots besides the workspace root itself.
_CONVENTIONAL_ROOTS = frozenset({"src", "lib"})
#: What a JavaScript/TypeScript specifier without an extension may name, in
#: probe order (TypeScript sources before their compiled output).
_SCRIPT_EXTENSIONS = (".ts", ".tsx", ".d.ts", ".js", ".jsx", ".mjs", ".cjs", ".mts", ".cts")
#: TypeScript ESM code imports ``./x.js`` and means the source ``./x.ts``.
_TS_SOURCES_FOR = {
    ".js": (".ts", ".tsx", ".d.ts"),
    ".jsx": (".tsx",),
    ".mjs": (".mts", ".d.mts"),
    ".cjs": (".cts", ".d.cts"),
}


def _normalized(path: str, field: str) -> str:
    """A clean workspace-relative posix path; anything absolute or escaping is a caller bug."""
    clean = posixpath.normpath(path) if path else ""
    if clean in ("", ".", "..") or clean.startswith(("/", "../")):
        raise ValidationError(
            f"{field} must be a workspace-relative file path, got {path!r}", field=field
        )
    return clean


def _join(*parts: str) -> str:
    """Join path parts where ``""`` is the workspace root (so it contributes nothing)."""
    return "/".join(part for part in parts if part)


def _inside(directory: str, path: str) -> bool:
    return directory == "" or path.startswith(directory + "/")


def _depth(directory: str) -> int:
    return directory.count("/") + 1 if directory else 0


def _ancestor(directory: str, levels: int) -> str | None:
    """``levels`` directories up from ``directory``; None when that leaves the workspace."""
    for _ in range(levels):
        if directory == "":
            return None
        directory = posixpath.dirname(directory)
    return directory


class ModuleIndex:
    """The captured files, indexed for import resolution. Immutable, so shareable across threads.

    Python source roots are inferred from the files, the way a person reading
    the tree would: the workspace root; top-level ``src/`` and ``lib/``; and
    the parent of every top-level package (a directory with ``__init__.py``
    whose parent has none), which covers monorepos with several
    ``packages/*/src`` trees.
    """

    def __init__(self, paths: Iterable[str]) -> None:
        self._files = frozenset(_normalized(path, "paths") for path in paths)
        self._package_dirs = frozenset(
            posixpath.dirname(path) for path in self._files if posixpath.basename(path) in _PY_INITS
        )
        self._roots = self._python_roots()

    @property
    def paths(self) -> frozenset[str]:
        """The normalized paths the index was built from."""
        return self._files

    def _python_roots(self) -> tuple[str, ...]:
        roots = {""}
        for path in self._files:
            top, sep, _ = path.partition("/")
            if sep and top in _CONVENTIONAL_ROOTS:
                roots.add(top)
        for package in self._package_dirs:
            parent = posixpath.dirname(package)
            if package and parent not in self._package_dirs:
                roots.add(parent)
        return tuple(sorted(roots, key=lambda root: (_depth(root), root)))

    # ------------------------------------------------------------------ public

    def resolve(self, importer: str, language: str, ref: ImportRef) -> list[str]:
        """The captured files ``ref`` refers to, as written in ``importer`` (sorted, maybe empty).

        Usually zero or one file; ``from pkg import a, b`` gives both when
        ``a`` and ``b`` are submodules. The importer itself is never returned:
        a self edge says nothing.
        """
        importer = _normalized(importer, "importer")
        if language == "python":
            found = self._resolve_python(importer, ref)
        elif language in _SCRIPT_LANGUAGES:
            found = self._resolve_script(importer, language, ref.module)
        else:
            raise ValidationError(
                f"cannot resolve imports for language {language!r}; "
                f"supported: {', '.join(sorted(_SCRIPT_LANGUAGES | {'python'}))}",
                field="language",
            )
        return sorted({path for path in found if path != importer})

    def dependencies(self, importer: str, facts: CodeFacts) -> list[tuple[str, ImportRef]]:
        """Every (target file, import) pair ``facts`` resolves to, deduplicated and sorted."""
        pairs = {
            (target, ref)
            for ref in facts.imports
            for target in self.resolve(importer, facts.language, ref)
        }
        return sorted(pairs, key=lambda pair: (pair[0], pair[1].module, pair[1].names))

    # ------------------------------------------------------------------ Python

    def _resolve_python(self, importer: str, ref: ImportRef) -> list[str]:
        """``from a import b`` is the submodule ``a.b`` when one exists, else a name in ``a``.

        Relative imports start from the importer's package -- its directory,
        for a module and an ``__init__`` alike -- and climb one directory per
        extra dot.
        """
        level = len(ref.module) - len(ref.module.lstrip("."))
        rest = ref.module[level:]
        parts = rest.split(".") if rest else []
        if not all(part.isidentifier() for part in parts):
            return []
        find: _Finder
        if level:
            package = _ancestor(posixpath.dirname(importer), level - 1)
            if package is None:
                return []
            find = partial(self._find_in, package)
        elif parts:
            find = partial(self._find_absolute, importer)
        else:
            return []
        return _from_import(parts, ref.names, find)

    def _find_absolute(self, importer: str, parts: list[str]) -> str | None:
        """First root (in :meth:`_roots_for` order) holding the module; a ``.py`` anywhere wins
        over a stub anywhere."""
        roots = self._roots_for(importer)
        for suffix in _PY_SUFFIXES:
            for root in roots:
                hit = self._module_file(_join(root, *parts), suffix)
                if hit is not None:
                    return hit
        return None

    def _find_in(self, package: str, parts: list[str]) -> str | None:
        """A module relative to a package directory; no parts means the package's ``__init__``."""
        for suffix in _PY_SUFFIXES:
            if parts:
                hit = self._module_file(_join(package, *parts), suffix)
            else:
                init = _join(package, "__init__" + suffix)
                hit = init if init in self._files else None
            if hit is not None:
                return hit
        return None

    def _module_file(self, base: str, suffix: str) -> str | None:
        """A package (``base/__init__``) shadows a module file (``base.py``), as in Python."""
        for candidate in (_join(base, "__init__" + suffix), base + suffix):
            if candidate in self._files:
                return candidate
        return None

    def _roots_for(self, importer: str) -> list[str]:
        """Roots that contain the importer first, deepest first: in a monorepo a file's own
        tree wins over a same-named module elsewhere. Last, the importer's own directory when
        it is not a package -- a script or a test module next to its helpers imports them by
        bare name, because that directory is put on ``sys.path`` when it runs."""
        own = [root for root in self._roots if _inside(root, importer)]
        own.sort(key=_depth, reverse=True)
        others = [root for root in self._roots if not _inside(root, importer)]
        roots = own + others
        directory = posixpath.dirname(importer)
        if directory not in self._package_dirs and directory not in roots:
            roots.append(directory)
        return roots

    # ------------------------------------------------------------------ JavaScript / TypeScript

    def _resolve_script(self, importer: str, language: str, specifier: str) -> list[str]:
        """Relative specifiers only: bare ones name packages outside the workspace.

        Path aliases (``tsconfig`` ``paths``, bundler ``@/`` prefixes) and
        ``package.json`` ``main`` fields are not read, so those resolve to
        nothing.
        """
        if specifier not in (".", "..") and not specifier.startswith(("./", "../")):
            return []
        target = posixpath.normpath(posixpath.join(posixpath.dirname(importer), specifier))
        if target == ".." or target.startswith(("../", "/")):
            return []
        base = "" if target == "." else target
        typescript = language != "javascript"
        for candidate in _script_candidates(base, typescript=typescript):
            if candidate in self._files:
                return [candidate]
        return []


def _from_import(parts: list[str], names: tuple[str, ...], find: _Finder) -> list[str]:
    """The files read by importing ``names`` from the module ``parts``.

    Each name is tried as a submodule; the module itself is read when any
    name is not one, or when no names were given.
    """
    found: list[str] = []
    read_module_itself = not names
    for name in names:
        hit = find([*parts, name]) if name.isidentifier() else None
        if hit is None:
            read_module_itself = True
        else:
            found.append(hit)
    if read_module_itself:
        hit = find(parts)
        if hit is not None:
            found.append(hit)
    return found


def _script_candidates(base: str, *, typescript: bool) -> list[str]:
    """Files a specifier may name, in the order Node/TypeScript would take them.

    A TypeScript importer writing ``./x.js`` means the source ``./x.ts``
    first (that is how the compiler resolves it); a JavaScript importer means
    the file as written first.
    """
    candidates: list[str] = []
    if base:
        stem, extension = posixpath.splitext(base)
        sources = [stem + suffix for suffix in _TS_SOURCES_FOR.get(extension, ())]
        candidates += [*sources, base] if typescript else [base, *sources]
        candidates += [base + extension for extension in _SCRIPT_EXTENSIONS]
    candidates += [_join(base, "index" + extension) for extension in _SCRIPT_EXTENSIONS]
    return candidates


def call_links(
    definers: Mapping[str, CodeFacts],
    callers: Mapping[str, CodeFacts],
    *,
    max_definers: int = 3,
) -> list[tuple[str, str, str]]:
    """``(caller_key, callee_key, function_name)`` for each name a caller calls and a definer
    defines, sorted.

    Matching is on the last component of the qualified name (``"Cls.save"``
    is defined as ``"save"``), because a call site only shows that much
    without type inference. A name defined by more than ``max_definers``
    items is too generic to say anything -- ``get``, ``run``, ``__init__`` --
    and links to none of them: a few precise edges are worth more to the
    context ranking than many guessed ones. Never a self link.
    """
    if max_definers < 1:
        raise ValidationError(
            f"max_definers must be at least 1, got {max_definers}", field="max_definers"
        )
    defined_by: defaultdict[str, set[str]] = defaultdict(set)
    for key, facts in definers.items():
        for qualified in facts.functions:
            defined_by[qualified.rpartition(".")[2]].add(key)
    links: set[tuple[str, str, str]] = set()
    for caller, facts in callers.items():
        for name in facts.calls:
            targets = defined_by.get(name, set())
            if len(targets) > max_definers:
                continue
            links.update((caller, target, name) for target in targets if target != caller)
    return sorted(links)
