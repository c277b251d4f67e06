"""parse_code: what each language yields, how broken input is reported, and that it never raises."""

from __future__ import annotations

import threading
import time
from textwrap import dedent

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statekeep.context.code import SUPPORTED_LANGUAGES, parse_code
from statekeep.context.elements import CodeFacts, ImportRef
from statekeep.context.languages import PARSED_LANGUAGES
from statekeep.errors import ValidationError

SCRIPT_LANGUAGES = ("javascript", "typescript", "tsx")


def test_supported_languages_are_the_parsed_languages() -> None:
    assert set(SUPPORTED_LANGUAGES) == PARSED_LANGUAGES


@pytest.mark.parametrize("language", ["ruby", "Python", "", "markdown"])
def test_unknown_language_is_a_validation_error_naming_the_supported_ones(language: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_code(language, "x = 1")
    assert info.value.field == "language"
    for supported in SUPPORTED_LANGUAGES:
        assert supported in str(info.value)


def test_bytes_are_refused() -> None:
    with pytest.raises(ValidationError) as info:
        parse_code("python", b"x = 1")  # type: ignore[arg-type]
    assert info.value.field == "text"


# --------------------------------------------------------------------------- Python

PYTHON_SOURCE = dedent(
    '''
    """A module."""
    import os
    import a.b as c
    import x.y, z
    from a.b import y, x
    from . import sibling
    from ..p import q
    from ... import top
    from .mod import *

    def f(arg=default_factory()):
        def inner():
            helper()
        class Local:
            def hidden(self): ...
        return obj.method(inner)

    async def fetch():
        import lazy_dep
        await client.get()

    class Outer(Base):
        attr = compute()

        def method(self):
            super().__init__()

        async def amethod(self):
            pass

        class Inner:
            def m(self):
                (lambda: 0)()
                factories[0]()
                make()()

    @decorator(arg)
    def decorated():
        pass

    if TYPE_CHECKING:
        from typing_only import T

        def conditional():
            pass
    '''
)


def test_python_functions_are_qualified_and_locals_are_skipped() -> None:
    facts = parse_code("python", PYTHON_SOURCE)
    assert facts.error is None
    assert facts.language == "python"
    assert facts.functions == (
        "Outer.Inner.m",
        "Outer.amethod",
        "Outer.method",
        "conditional",
        "decorated",
        "f",
        "fetch",
    )
    assert facts.classes == ("Outer", "Outer.Inner")


def test_python_imports() -> None:
    imports = parse_code("python", PYTHON_SOURCE).imports
    assert imports == (
        ImportRef(".", ("sibling",)),
        ImportRef("...", ("top",)),
        ImportRef("..p", ("q",)),
        ImportRef(".mod", ()),  # a star import names nothing
        ImportRef("a.b", ()),  # `import a.b as c` records the module, not the alias
        ImportRef("a.b", ("x", "y")),  # names sorted
        ImportRef("lazy_dep", ()),  # imports inside functions count
        ImportRef("os", ()),
        ImportRef("typing_only", ("T",)),
        ImportRef("x.y", ()),
        ImportRef("z", ()),
    )


def test_python_calls_are_last_names_deduplicated_and_sorted() -> None:
    facts = parse_code("python", PYTHON_SOURCE)
    # (lambda: 0)(), factories[0]() and the outer call of make()() have no name.
    assert facts.calls == (
        "__init__",
        "compute",
        "decorator",
        "default_factory",
        "get",
        "helper",
        "make",
        "method",
        "super",
    )


def test_python_relative_import_forms() -> None:
    facts = parse_code("python", "from . import x\nfrom ..p import q\nfrom .a.b import c, d\n")
    assert facts.imports == (
        ImportRef(".", ("x",)),
        ImportRef("..p", ("q",)),
        ImportRef(".a.b", ("c", "d")),
    )


def test_python_syntax_error_gives_line_and_no_facts() -> None:
    facts = parse_code("python", "import os\n\ndef f(:\n    pass\n")
    assert facts == CodeFacts("python", error=facts.error)
    assert facts.error is not None
    assert facts.error.startswith("line 3: ")


def test_python_indentation_error() -> None:
    facts = parse_code("python", "def f():\nreturn 1\n")
    assert facts.error is not None
    assert facts.error.startswith("line 2: ")
    assert facts.functions == ()


def test_python_null_byte_is_an_error_on_its_line() -> None:
    facts = parse_code("python", "import os\nx = 1\ny = '\0'\n")
    assert facts.error is not None
    assert facts.error.startswith("line 3: ")
    assert facts.imports == ()


def test_python_lone_surrogate_is_an_error_not_a_crash() -> None:
    facts = parse_code("python", "import os\nx = '\ud800'\n")
    assert facts.error is not None
    assert facts.error.startswith("line 2: ")


@pytest.mark.parametrize(
    "text",
    [
        "x = " + "+".join(["1"] * 200_000),  # RecursionError while building the AST
        "x = a" + ".b" * 100_000,
        "x = f" + "()" * 100_000,
        "x = " + "-" * 100_000 + "1",  # the parser's own stack (MemoryError on 3.11)
        "x = " + "lambda: " * 50_000 + "1",
        "(" * 1_000 + ")" * 1_000,  # too many nested parentheses (SyntaxError)
        "".join("    " * i + "if x:\n" for i in range(150)) + "    " * 150 + "pass\n",
    ],
    ids=["sum", "attributes", "calls", "unary", "lambdas", "parens", "indent"],
)
def test_python_pathologically_deep_code_sets_error_without_crashing(text: str) -> None:
    facts = parse_code("python", text)
    assert facts.error is not None
    assert facts.functions == facts.calls == ()


def test_python_deep_but_valid_code_is_walked_without_recursion() -> None:
    # 90 levels of nested lists parse fine; the walk must not depend on the
    # recursion limit either (a recursive visitor would be near its limit
    # with a lowered one).
    text = "x = " + "[" * 90 + "f()" + "]" * 90 + "\n"
    facts = parse_code("python", text)
    assert facts.error is None
    assert facts.calls == ("f",)


def test_python_empty_text() -> None:
    assert parse_code("python", "") == CodeFacts("python")


# --------------------------------------------------------------------------- JavaScript family

JS_SOURCE = dedent(
    """
    import x from "m-default";
    import {a, b as c} from "m-named";
    import * as ns from "m-namespace";
    import "m-side-effect";
    import d, {e} from "m-mixed";
    export {y} from "m-reexport";
    export * from "m-star";
    export * as q from "m-star-as";
    const r = require("m-require");
    const notModule = require(someVariable);
    const z = await import("m-dynamic");

    function f() {
      g();
      obj.h();
      new NotACall();
      function inner() {}
    }
    function* gen() { yield 1; }
    const arrow = async () => 1;
    let expr = function () {};
    const notAFunction = 42;

    class C extends Base {
      constructor() { super(); }
      m() { super.m(); this.#priv(); }
      static s() {}
      get p() { return 1; }
      #priv() {}
      onClick = () => { handler(); };
    }
    export default class { anon() {} }
    const Api = class Impl { call() {} };
    (function () { function wrapped() {} })();
    a?.b?.();
    """
)


@pytest.mark.parametrize("language", SCRIPT_LANGUAGES)
def test_script_functions(language: str) -> None:
    facts = parse_code(language, JS_SOURCE)
    assert facts.error is None
    assert facts.language == language
    assert facts.functions == (
        "Api.call",  # a class expression is known by the variable bound to it
        "C.#priv",
        "C.constructor",
        "C.m",
        "C.onClick",  # class field holding a function
        "C.p",
        "C.s",
        "anon",  # anonymous class: no qualifier
        "arrow",
        "expr",
        "f",
        "gen",
        "wrapped",  # anonymous wrappers are transparent; `inner` (in f) is a local
    )
    assert facts.classes == ("Api", "C")


@pytest.mark.parametrize("language", SCRIPT_LANGUAGES)
def test_script_imports(language: str) -> None:
    assert parse_code(language, JS_SOURCE).imports == (
        ImportRef("m-default", ("default",)),
        ImportRef("m-dynamic", ()),
        ImportRef("m-mixed", ("default", "e")),
        ImportRef("m-named", ("a", "b")),  # exported names, not the local alias
        ImportRef("m-namespace", ()),
        ImportRef("m-reexport", ("y",)),
        ImportRef("m-require", ()),
        ImportRef("m-side-effect", ()),
        ImportRef("m-star", ()),
        ImportRef("m-star-as", ()),
    )


@pytest.mark.parametrize("language", SCRIPT_LANGUAGES)
def test_script_calls(language: str) -> None:
    # `new NotACall()` is not a call; `super()` has no name; import() is an import.
    assert parse_code(language, JS_SOURCE).calls == (
        "#priv",
        "b",
        "g",
        "h",
        "handler",
        "m",
        "require",
    )


def test_require_needs_a_single_string_literal() -> None:
    facts = parse_code(
        "javascript",
        'require(name); require("a", "b"); require(`t`); lib.require("x"); require("ok");',
    )
    assert facts.imports == (ImportRef("ok"),)


def test_typescript_specific_forms() -> None:
    source = dedent(
        """
        import type { T } from "./types";
        import legacy = require("./legacy");
        interface Shape { area(): number }
        abstract class Base<T> implements Shape {
          abstract area(): number;
          private helper = (n: number): number => n * 2;
          describe(x: number): string { return format<T>(x); }
        }
        declare function ambient(): void;
        export const generic = <T>(x: T): T => identity<T>(x);
        enum Color { Red }
        """
    )
    facts = parse_code("typescript", source)
    assert facts.error is None
    # Interfaces, abstract signatures and ambient declarations define nothing.
    assert facts.functions == ("Base.describe", "Base.helper", "generic")
    assert facts.classes == ("Base",)
    assert facts.imports == (ImportRef("./legacy"), ImportRef("./types", ("T",)))
    assert facts.calls == ("format", "identity")


def test_tsx_with_jsx_elements() -> None:
    source = dedent(
        """
        import React, { useState } from "react";
        import { Button } from "./Button";

        export function Counter({ start }: { start: number }): JSX.Element {
          const [n, setN] = useState(start);
          return (
            <div className="counter">
              <Button onClick={() => setN(n + 1)} label={format(n)} />
              <span>{items.map((i) => <Item key={i} />)}</span>
            </div>
          );
        }

        export const Panel = (props: Props) => <section>{props.children}</section>;

        class Widget extends React.Component<Props> {
          render() { return <Counter start={1} />; }
        }
        """
    )
    facts = parse_code("tsx", source)
    assert facts.error is None
    assert facts.functions == ("Counter", "Panel", "Widget.render")
    assert facts.classes == ("Widget",)
    assert facts.imports == (
        ImportRef("./Button", ("Button",)),
        ImportRef("react", ("default", "useState")),
    )
    # JSX elements are not calls; the calls inside their expressions are.
    assert facts.calls == ("format", "map", "setN", "useState")


def test_jsx_in_plain_javascript() -> None:
    facts = parse_code("javascript", "const App = () => <Page title={t('home')} />;\n")
    assert facts.error is None
    assert facts.functions == ("App",)
    assert facts.calls == ("t",)


def test_typescript_rejects_jsx_that_tsx_accepts() -> None:
    source = "const App = () => <Page title={t('x')} />;\n"
    assert parse_code("tsx", source).error is None
    assert parse_code("typescript", source).error is not None


@pytest.mark.parametrize("language", SCRIPT_LANGUAGES)
def test_script_syntax_error_keeps_recovered_facts(language: str) -> None:
    source = dedent(
        """
        import { keep } from "./kept";
        function good() { used(); }

        function broken( {
          return 1;

        class Later { method() { other(); } }
        """
    )
    facts = parse_code(language, source)
    assert facts.error is not None
    assert facts.error.startswith("syntax error near line ")
    line = int(facts.error.rsplit(" ", 1)[1])
    assert 5 <= line <= 9
    assert ImportRef("./kept", ("keep",)) in facts.imports
    assert "good" in facts.functions
    assert "used" in facts.calls


@pytest.mark.parametrize("language", SCRIPT_LANGUAGES)
def test_script_missing_token_is_reported_on_its_line(language: str) -> None:
    facts = parse_code(language, "const a = 1;\nconst b = 2;\nif (a) { run()\n")
    assert facts.error == "syntax error near line 3"
    assert facts.calls == ("run",)


@pytest.mark.parametrize("language", SCRIPT_LANGUAGES)
def test_script_null_bytes_and_surrogates(language: str) -> None:
    facts = parse_code(language, "function ok() { go(); }\n\0\0\nconst s = '\ud800';\n")
    assert facts.error == "syntax error near line 2"
    assert facts.functions == ("ok",)
    assert facts.calls == ("go",)


@pytest.mark.parametrize("language", SCRIPT_LANGUAGES)
def test_script_deep_nesting_does_not_crash(language: str) -> None:
    facts = parse_code(language, "x = " + "(" * 20_000 + "f()" + ")" * 20_000 + ";")
    assert facts.calls == ("f",)


@pytest.mark.parametrize("language", SCRIPT_LANGUAGES)
@pytest.mark.parametrize("unit", ["[", "(", "`${", "[ \n"])
def test_script_degenerate_error_trees_are_refused_quickly(language: str, unit: str) -> None:
    # Unclosed openers leave one error node with a huge run of bare tokens;
    # querying it would be quadratic (a megabyte of "[" took minutes).
    text = "import x from './x';\n" + unit * 300_000
    started = time.perf_counter()
    facts = parse_code(language, text)
    assert time.perf_counter() - started < 5
    assert facts.error is not None
    assert facts.error.startswith("syntax error near line ")
    assert facts.error.endswith("too broken to read")
    assert facts.imports == ()
    assert facts.functions == facts.calls == ()


@pytest.mark.parametrize("language", SCRIPT_LANGUAGES)
def test_script_moderate_error_runs_still_yield_facts(language: str) -> None:
    facts = parse_code(language, "[" * 2_000 + "\nfunction f() { g(); }\n")
    assert facts.error == "syntax error near line 1"
    assert facts.calls == ("g",)


@pytest.mark.parametrize("language", SUPPORTED_LANGUAGES)
def test_empty_text(language: str) -> None:
    assert parse_code(language, "") == CodeFacts(language)


def test_threads_get_identical_results() -> None:
    expected = {lang: parse_code(lang, JS_SOURCE) for lang in SCRIPT_LANGUAGES}
    expected["python"] = parse_code("python", PYTHON_SOURCE)
    failures: list[str] = []

    def work() -> None:
        for _ in range(20):
            for lang, facts in expected.items():
                text = PYTHON_SOURCE if lang == "python" else JS_SOURCE
                if parse_code(lang, text) != facts:
                    failures.append(lang)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


# --------------------------------------------------------------------------- properties

_FRAGMENTS = [
    "import x from 'm';", "from a import b\n", "import os\n", "def f():\n", "    pass\n",
    "class C:\n", "function g() {", "}", "{", "(", ")", "=>", "const h = () => 1;", "f();",
    "obj.m();", "<div>", "</div>", "\n", "  ", "'", '"', "`", "\\", "\0", "async ", "@dec\n",
    "export * from './x';", "require('y')", "class K { m() {} }", "é", "\ud800", ";", ":",
]
_ANY_TEXT = st.one_of(
    st.text(alphabet=st.characters(codec=None), max_size=300),
    st.lists(st.sampled_from(_FRAGMENTS), max_size=40).map("".join),
)


def _canonical(facts: CodeFacts) -> bool:
    def ordered(items: tuple[str, ...]) -> bool:
        return list(items) == sorted(set(items))

    refs = [(ref.module, ref.names) for ref in facts.imports]
    return (
        ordered(facts.functions)
        and ordered(facts.classes)
        and ordered(facts.calls)
        and refs == sorted(set(refs))
        and all(ordered(ref.names) for ref in facts.imports)
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(language=st.sampled_from(SUPPORTED_LANGUAGES), text=_ANY_TEXT)
def test_parse_never_raises_is_deterministic_and_canonical(language: str, text: str) -> None:
    first = parse_code(language, text)
    assert first == parse_code(language, text)
    assert first.language == language
    assert _canonical(first)
    if language == "python" and first.error is not None:
        assert (first.functions, first.classes, first.imports, first.calls) == ((), (), (), ())


@settings(max_examples=60, deadline=None)
@given(names=st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True), max_size=8))
def test_python_defined_functions_round_trip(names: list[str]) -> None:
    keywords = {"if", "in", "is", "or", "as", "def", "for", "and", "not", "try", "del", "else",
                "from", "with", "pass", "elif", "while", "class", "break", "yield", "raise",
                "async", "await", "global", "lambda", "import", "return", "assert", "except",
                "finally", "continue", "nonlocal"}
    names = [n for n in names if n not in keywords]
    text = "".join(f"def {n}():\n    {n}()\n" for n in names)
    facts = parse_code("python", text)
    assert facts.functions == tuple(sorted(set(names)))
    assert facts.calls == tuple(sorted(set(names)))
