"""ModuleIndex resolution and call_links, on real layouts and this repository's own source."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statekeep.context.code import parse_code
from statekeep.context.elements import CodeFacts, ImportRef
from statekeep.context.imports import ModuleIndex, call_links
from statekeep.errors import ValidationError

REPO_ROOT = Path(__file__).resolve().parents[2]


def py(index: ModuleIndex, importer: str, module: str, *names: str) -> list[str]:
    return index.resolve(importer, "python", ImportRef(module, names))


def js(
    index: ModuleIndex, importer: str, specifier: str, language: str = "javascript"
) -> list[str]:
    return index.resolve(importer, language, ImportRef(specifier))


# --------------------------------------------------------------------------- Python

SRC_LAYOUT = ModuleIndex(
    [
        "README.md",
        "src/app/__init__.py",
        "src/app/store/__init__.py",
        "src/app/store/base.py",
        "src/app/store/sqlite.py",
        "src/app/store/sub/__init__.py",
        "src/app/store/sub/deep.py",
        "src/app/util.py",
        "src/app/util.pyi",
        "src/app/typed.pyi",
        "src/app/both.py",
        "src/app/both/__init__.py",
        "tests/conftest.py",
        "tests/helpers.py",
        "tests/test_store.py",
        "scripts/run.py",
        "scripts/tool_helpers.py",
    ]
)


def test_src_layout_absolute_import_from_anywhere() -> None:
    for importer in ("tests/test_store.py", "src/app/util.py", "scripts/run.py"):
        assert py(SRC_LAYOUT, importer, "app.store.base") == ["src/app/store/base.py"]
    assert py(SRC_LAYOUT, "tests/test_store.py", "app") == ["src/app/__init__.py"]
    assert py(SRC_LAYOUT, "tests/test_store.py", "app.store") == ["src/app/store/__init__.py"]


def test_from_package_import_submodules_and_names() -> None:
    # Both names are submodules: both files.
    assert py(SRC_LAYOUT, "tests/test_store.py", "app.store", "base", "sqlite") == [
        "src/app/store/base.py",
        "src/app/store/sqlite.py",
    ]
    # A name that is not a submodule is read from the package itself.
    assert py(SRC_LAYOUT, "tests/test_store.py", "app.store", "base", "Store") == [
        "src/app/store/__init__.py",
        "src/app/store/base.py",
    ]
    # `from app.store.base import utcnow`: no submodule, so the module.
    assert py(SRC_LAYOUT, "tests/test_store.py", "app.store.base", "utcnow") == [
        "src/app/store/base.py"
    ]


def test_package_shadows_module_and_py_shadows_stub() -> None:
    assert py(SRC_LAYOUT, "tests/test_store.py", "app.both") == ["src/app/both/__init__.py"]
    assert py(SRC_LAYOUT, "tests/test_store.py", "app.util") == ["src/app/util.py"]
    # A stub stands in only when there is no .py.
    assert py(SRC_LAYOUT, "tests/test_store.py", "app.typed") == ["src/app/typed.pyi"]


def test_unknown_and_external_python_modules_resolve_to_nothing() -> None:
    assert py(SRC_LAYOUT, "tests/test_store.py", "os.path") == []
    assert py(SRC_LAYOUT, "tests/test_store.py", "app.missing") == []
    assert py(SRC_LAYOUT, "tests/test_store.py", "app.store", "nothing_here") == [
        "src/app/store/__init__.py"
    ]


def test_script_directory_is_a_last_resort_root() -> None:
    # tests/ and scripts/ are not packages: their modules import neighbours by bare name.
    assert py(SRC_LAYOUT, "tests/test_store.py", "helpers") == ["tests/helpers.py"]
    assert py(SRC_LAYOUT, "scripts/run.py", "tool_helpers") == ["scripts/tool_helpers.py"]
    # ...but not each other's.
    assert py(SRC_LAYOUT, "scripts/run.py", "helpers") == []
    # Inside a package, a bare name is absolute, never implicitly relative.
    assert py(SRC_LAYOUT, "src/app/store/sqlite.py", "base") == []


def test_relative_imports_at_several_levels() -> None:
    importer = "src/app/store/sqlite.py"
    assert py(SRC_LAYOUT, importer, ".base", "Base") == ["src/app/store/base.py"]
    assert py(SRC_LAYOUT, importer, ".", "base") == ["src/app/store/base.py"]
    assert py(SRC_LAYOUT, importer, ".", "base", "sub") == [
        "src/app/store/base.py",
        "src/app/store/sub/__init__.py",
    ]
    assert py(SRC_LAYOUT, importer, ".sub.deep", "x") == ["src/app/store/sub/deep.py"]
    assert py(SRC_LAYOUT, importer, "..", "util") == ["src/app/util.py"]
    assert py(SRC_LAYOUT, importer, "..util", "helper") == ["src/app/util.py"]
    assert py(SRC_LAYOUT, importer, "..", "Thing") == ["src/app/__init__.py"]
    deep = "src/app/store/sub/deep.py"
    assert py(SRC_LAYOUT, deep, "...", "util") == ["src/app/util.py"]
    assert py(SRC_LAYOUT, deep, "..base", "x") == ["src/app/store/base.py"]


def test_relative_import_from_an_init_uses_its_own_package() -> None:
    init = "src/app/store/__init__.py"
    assert py(SRC_LAYOUT, init, ".", "base") == ["src/app/store/base.py"]
    assert py(SRC_LAYOUT, init, ".sub", "deep") == ["src/app/store/sub/deep.py"]
    assert py(SRC_LAYOUT, init, "..", "util") == ["src/app/util.py"]


def test_never_resolves_to_the_importer_itself() -> None:
    init = "src/app/store/__init__.py"
    # `from . import Name` in an __init__ reads the __init__ itself.
    assert py(SRC_LAYOUT, init, ".", "Name") == []
    assert py(SRC_LAYOUT, "src/app/util.py", "app.util") == []


def test_relative_import_escaping_the_workspace() -> None:
    assert py(SRC_LAYOUT, "src/app/util.py", "....", "x") == []
    assert py(SRC_LAYOUT, "tests/test_store.py", "..", "x") == []
    assert py(SRC_LAYOUT, "top.py", "..x") == []


def test_flat_layout() -> None:
    index = ModuleIndex(
        ["mypkg/__init__.py", "mypkg/core.py", "mypkg/sub/__init__.py", "mypkg/sub/x.py",
         "setup.py", "tests/test_core.py"]
    )
    assert py(index, "tests/test_core.py", "mypkg.core") == ["mypkg/core.py"]
    assert py(index, "tests/test_core.py", "mypkg.sub", "x") == ["mypkg/sub/x.py"]
    assert py(index, "mypkg/sub/x.py", "..core", "f") == ["mypkg/core.py"]
    assert py(index, "setup.py", "mypkg") == ["mypkg/__init__.py"]


def test_namespace_packages_without_init() -> None:
    index = ModuleIndex(["src/ns/part/mod.py", "src/ns/other.py", "plain/a/b.py"])
    assert py(index, "plain/a/b.py", "ns.part.mod") == ["src/ns/part/mod.py"]
    assert py(index, "src/ns/part/mod.py", "ns.other") == ["src/ns/other.py"]
    assert py(index, "src/ns/other.py", "ns.part", "mod") == ["src/ns/part/mod.py"]
    assert py(index, "src/ns/part/mod.py", "..other", "x") == ["src/ns/other.py"]
    assert py(index, "src/ns/other.py", "plain.a.b") == ["plain/a/b.py"]
    # A namespace package has no file of its own.
    assert py(index, "plain/a/b.py", "ns.part") == []


def test_monorepo_roots_prefer_the_importers_own_tree() -> None:
    index = ModuleIndex(
        [
            "packages/alpha/src/alpha/__init__.py",
            "packages/alpha/src/alpha/shared.py",
            "packages/alpha/src/common/__init__.py",
            "packages/beta/beta/__init__.py",
            "packages/beta/beta/main.py",
            "packages/beta/common/__init__.py",
            "common/__init__.py",
        ]
    )
    assert py(index, "packages/beta/beta/main.py", "alpha.shared") == [
        "packages/alpha/src/alpha/shared.py"
    ]
    assert py(index, "packages/alpha/src/alpha/shared.py", "beta.main") == [
        "packages/beta/beta/main.py"
    ]
    # The workspace root holds a `common` too; the importer's deeper root wins.
    assert py(index, "packages/beta/beta/main.py", "common") == [
        "packages/beta/common/__init__.py"
    ]
    assert py(index, "packages/alpha/src/alpha/shared.py", "common") == [
        "packages/alpha/src/common/__init__.py"
    ]
    # Outside every package tree, the workspace root's module.
    assert py(index, "tools/x.py", "common") == ["common/__init__.py"]


def test_a_module_in_any_root_wins_over_a_stub_in_an_earlier_one() -> None:
    index = ModuleIndex(["typed.pyi", "src/typed.py", "src/only_stub.pyi", "tool.py"])
    assert py(index, "tool.py", "typed") == ["src/typed.py"]
    assert py(index, "tool.py", "only_stub") == ["src/only_stub.pyi"]


def test_lib_root() -> None:
    index = ModuleIndex(["lib/tool/__init__.py", "lib/tool/run.py", "bin/main.py"])
    assert py(index, "bin/main.py", "tool.run") == ["lib/tool/run.py"]


def test_malformed_python_refs_resolve_to_nothing() -> None:
    assert py(SRC_LAYOUT, "tests/test_store.py", "app..store") == []
    assert py(SRC_LAYOUT, "tests/test_store.py", "app/store") == []
    assert py(SRC_LAYOUT, "tests/test_store.py", "") == []
    assert py(SRC_LAYOUT, "tests/test_store.py", "app.store", "../../etc") == [
        "src/app/store/__init__.py"
    ]


# ----------------------------------------------------------------------- JavaScript / TypeScript

WEB = ModuleIndex(
    [
        "web/src/app.ts",
        "web/src/util.ts",
        "web/src/util.js",
        "web/src/view.tsx",
        "web/src/types.d.ts",
        "web/src/legacy.js",
        "web/src/data.json",
        "web/src/esm.mjs",
        "web/src/modern.mts",
        "web/src/components/index.ts",
        "web/src/components/Button.tsx",
        "web/src/lib/index.js",
        "web/src/lib/helpers.cjs",
        "web/index.js",
        "web/shared/config.js",
        "root.js",
    ]
)


def test_relative_specifier_probes_extensions_in_order() -> None:
    importer = "web/src/app.ts"
    assert js(WEB, importer, "./util", "typescript") == ["web/src/util.ts"]  # .ts before .js
    assert js(WEB, importer, "./view", "typescript") == ["web/src/view.tsx"]
    assert js(WEB, importer, "./types", "typescript") == ["web/src/types.d.ts"]
    assert js(WEB, importer, "./legacy", "typescript") == ["web/src/legacy.js"]
    assert js(WEB, importer, "./esm", "typescript") == ["web/src/esm.mjs"]
    assert js(WEB, importer, "./lib/helpers", "typescript") == ["web/src/lib/helpers.cjs"]
    assert js(WEB, importer, "./data.json", "typescript") == ["web/src/data.json"]


def test_directory_index_files() -> None:
    assert js(WEB, "web/src/app.ts", "./components", "typescript") == [
        "web/src/components/index.ts"
    ]
    assert js(WEB, "web/src/app.ts", "./lib/", "typescript") == ["web/src/lib/index.js"]
    assert js(WEB, "web/src/util.js", "..") == ["web/index.js"]
    assert js(WEB, "web/src/components/Button.tsx", ".", "tsx") == [
        "web/src/components/index.ts"
    ]


def test_parent_directory_specifiers() -> None:
    assert js(WEB, "web/src/components/Button.tsx", "../util", "tsx") == ["web/src/util.ts"]
    assert js(WEB, "web/src/components/Button.tsx", "../../shared/config", "tsx") == [
        "web/shared/config.js"
    ]
    assert js(WEB, "web/src/lib/index.js", "../../../root") == ["root.js"]


def test_typescript_esm_js_specifier_means_the_ts_source() -> None:
    # util.ts and util.js both exist: TypeScript means the source, JavaScript the file.
    assert js(WEB, "web/src/app.ts", "./util.js", "typescript") == ["web/src/util.ts"]
    assert js(WEB, "web/src/view.tsx", "./util.js", "tsx") == ["web/src/util.ts"]
    assert js(WEB, "web/src/legacy.js", "./util.js") == ["web/src/util.js"]
    # Only a .ts exists: even a JavaScript importer finds it.
    assert js(WEB, "web/src/legacy.js", "./app.js") == ["web/src/app.ts"]
    assert js(WEB, "web/src/app.ts", "./view.js", "typescript") == ["web/src/view.tsx"]
    assert js(WEB, "web/src/app.ts", "./modern.mjs", "typescript") == ["web/src/modern.mts"]


def test_bare_and_absolute_specifiers_are_external() -> None:
    for specifier in ("react", "node:fs", "@scope/pkg", "lodash/fp", "/abs/path", "@/alias",
                      "~/x", "util"):
        assert js(WEB, "web/src/app.ts", specifier, "typescript") == [], specifier


def test_escaping_specifiers_resolve_to_nothing() -> None:
    assert js(WEB, "web/src/app.ts", "../../../outside", "typescript") == []
    assert js(WEB, "root.js", "../root") == []
    assert js(WEB, "web/src/app.ts", "../../../../../../etc/passwd", "typescript") == []


def test_missing_relative_target_and_self_import() -> None:
    assert js(WEB, "web/src/app.ts", "./nope", "typescript") == []
    assert js(WEB, "web/src/app.ts", "./app", "typescript") == []
    assert js(WEB, "web/src/app.ts", "./app.ts", "typescript") == []


# --------------------------------------------------------------------------- API edges


def test_resolve_rejects_an_unknown_language() -> None:
    with pytest.raises(ValidationError) as info:
        WEB.resolve("web/src/app.ts", "ruby", ImportRef("./x"))
    assert info.value.field == "language"


@pytest.mark.parametrize("bad", ["/etc/passwd", "../outside.py", "", ".", "a/../../b.py"])
def test_paths_must_be_workspace_relative(bad: str) -> None:
    with pytest.raises(ValidationError) as info:
        ModuleIndex(["ok.py", bad])
    assert info.value.field == "paths"
    with pytest.raises(ValidationError) as info:
        SRC_LAYOUT.resolve(bad, "python", ImportRef("app"))
    assert info.value.field == "importer"


def test_paths_are_normalized() -> None:
    index = ModuleIndex(["./src/app/../app/mod.py", "src//app/__init__.py"])
    assert index.paths == frozenset({"src/app/mod.py", "src/app/__init__.py"})
    assert py(index, "./other.py", "app.mod") == ["src/app/mod.py"]


def test_dependencies_from_parsed_source() -> None:
    index = ModuleIndex(["src/pkg/__init__.py", "src/pkg/a.py", "src/pkg/b.py", "src/pkg/c.py"])
    facts = parse_code(
        "python",
        "import os\nfrom . import b, c\nfrom .b import thing\nimport pkg.c\nfrom pkg import a\n",
    )
    assert index.dependencies("src/pkg/a.py", facts) == [
        ("src/pkg/b.py", ImportRef(".", ("b", "c"))),
        ("src/pkg/b.py", ImportRef(".b", ("thing",))),
        ("src/pkg/c.py", ImportRef(".", ("b", "c"))),
        ("src/pkg/c.py", ImportRef("pkg.c")),
        # `from pkg import a` in a.py is a self import, so nothing.
    ]


def test_dependencies_for_script_source() -> None:
    facts = parse_code(
        "tsx",
        'import { Button } from "./components/Button";\nimport React from "react";\n'
        'export * from "../shared/config";\nconst u = require("./util.js");\n',
    )
    assert WEB.dependencies("web/src/view.tsx", facts) == [
        ("web/shared/config.js", ImportRef("../shared/config")),
        ("web/src/components/Button.tsx", ImportRef("./components/Button", ("Button",))),
        ("web/src/util.ts", ImportRef("./util.js")),
    ]


def test_dependencies_of_facts_without_imports() -> None:
    assert WEB.dependencies("notes.md", CodeFacts("markdown")) == []


def test_this_repository_resolves_its_own_imports() -> None:
    paths = sorted(p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "src").rglob("*.py"))
    index = ModuleIndex(paths)
    importer = "src/statekeep/store/protocol.py"
    facts = parse_code("python", (REPO_ROOT / importer).read_text(encoding="utf-8"))
    assert facts.error is None
    targets = {target for target, _ in index.dependencies(importer, facts)}
    assert "src/statekeep/store/base.py" in targets
    assert all(target.startswith("src/statekeep/") for target in targets)
    assert importer not in targets


@settings(max_examples=200, deadline=None)
@given(
    specifier=st.text(alphabet="./abcindex-", max_size=30),
    language=st.sampled_from(["javascript", "typescript", "tsx", "python"]),
    names=st.lists(st.text(alphabet="abc.*/", max_size=4), max_size=3),
)
def test_resolution_only_ever_returns_other_indexed_files(
    specifier: str, language: str, names: list[str]
) -> None:
    importer = "web/src/app.ts"
    found = WEB.resolve(importer, language, ImportRef(specifier, tuple(names)))
    assert found == sorted(set(found))
    assert importer not in found
    assert set(found) <= WEB.paths


# --------------------------------------------------------------------------- call_links


def defs(*functions: str) -> CodeFacts:
    return CodeFacts("python", functions=tuple(sorted(functions)))


def calls(*names: str) -> CodeFacts:
    return CodeFacts("python", calls=tuple(sorted(names)))


def test_call_links_match_on_the_last_name_component() -> None:
    definers = {"store.py": defs("Store.save", "open_store"), "util.py": defs("slugify")}
    callers = {"app.py": calls("save", "slugify", "print"), "cli.py": calls("open_store")}
    assert call_links(definers, callers) == [
        ("app.py", "store.py", "save"),
        ("app.py", "util.py", "slugify"),
        ("cli.py", "store.py", "open_store"),
    ]


def test_call_links_never_link_to_self() -> None:
    definers = {"a.py": defs("helper"), "b.py": defs("helper")}
    callers = {"a.py": calls("helper")}
    assert call_links(definers, callers) == [("a.py", "b.py", "helper")]


def test_generic_names_defined_too_often_link_to_none() -> None:
    definers = {f"m{i}.py": defs("Thing.get", f"unique{i}") for i in range(4)}
    callers = {"app.py": calls("get", "unique2")}
    # "get" has 4 definers > max_definers=3: no links at all for it.
    assert call_links(definers, callers) == [("app.py", "m2.py", "unique2")]
    # Raise the bar and it links to all four.
    assert len(call_links(definers, callers, max_definers=4)) == 5
    # At exactly the limit it still links.
    three = {k: v for k, v in definers.items() if k != "m3.py"}
    assert [t for _, t, n in call_links(three, callers) if n == "get"] == [
        "m0.py", "m1.py", "m2.py"
    ]


def test_definer_count_includes_the_caller() -> None:
    # The caller's own definition counts towards the limit (the name is that common).
    definers = {"a.py": defs("run"), "b.py": defs("run"), "c.py": defs("run")}
    assert call_links(definers, {"a.py": calls("run")}, max_definers=2) == []
    assert call_links(definers, {"a.py": calls("run")}, max_definers=3) == [
        ("a.py", "b.py", "run"),
        ("a.py", "c.py", "run"),
    ]


def test_call_links_for_script_methods() -> None:
    definers = {"api.ts": parse_code("typescript", "export class Api { fetchAll() {} }")}
    callers = {"view.tsx": parse_code("tsx", "const V = () => <L items={api.fetchAll()} />;")}
    assert call_links(definers, callers) == [("view.tsx", "api.ts", "fetchAll")]


def test_max_definers_must_be_positive() -> None:
    with pytest.raises(ValidationError) as info:
        call_links({}, {}, max_definers=0)
    assert info.value.field == "max_definers"


def test_call_links_are_deterministic_regardless_of_mapping_order() -> None:
    definers = {"b.py": defs("f", "g"), "a.py": defs("h"), "c.py": defs("f")}
    callers = {"z.py": calls("f", "h"), "y.py": calls("g")}
    reordered_d = dict(reversed(list(definers.items())))
    reordered_c = dict(reversed(list(callers.items())))
    first = call_links(definers, callers)
    assert first == call_links(reordered_d, reordered_c)
    assert first == sorted(first)
    assert first == [
        ("y.py", "b.py", "g"),
        ("z.py", "a.py", "h"),
        ("z.py", "b.py", "f"),
        ("z.py", "c.py", "f"),
    ]
