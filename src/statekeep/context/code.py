"""Source text -> :class:`CodeFacts`: what a file defines, imports and calls.

The facts feed two kinds of relationship -- a file depends on the files it
imports, and calls a file that defines a name it calls -- so the extraction is
tuned for that, not for a complete symbol table:

* Only names another file could refer to are recorded as definitions.
  Functions and classes nested inside a *function* are locals, invisible from
  outside, so they are skipped (in both Python and JavaScript). Definitions
  nested in classes are kept and qualified by the class chain
  (``"Outer.Inner.method"``).
* Calls keep only the last name (``obj.save()`` -> ``"save"``), because that
  is all a definition can be matched on without type information.
* Every tuple is deduplicated and sorted, so the same text always gives equal
  facts and re-capturing an unchanged file changes nothing in the store.

Python is parsed with :mod:`ast`: exact, but it gives nothing when the text
does not parse. JavaScript, TypeScript and TSX use the tree-sitter grammars
shipped as wheels; tree-sitter recovers from errors, so broken files still
yield what could be read, with :attr:`CodeFacts.error` saying where it broke.
"""

from __future__ import annotations

import ast
import threading
from collections.abc import Iterable

import tree_sitter_javascript
import tree_sitter_typescript
from tree_sitter import Language, Node, Parser, Query, QueryCursor

from statekeep.context.elements import CodeFacts, ImportRef
from statekeep.errors import ValidationError

__all__ = ["SUPPORTED_LANGUAGES", "parse_code"]

#: Languages :func:`parse_code` accepts (the same set as ``PARSED_LANGUAGES``).
SUPPORTED_LANGUAGES: tuple[str, ...] = ("javascript", "python", "tsx", "typescript")

_TOO_DEEP = "too deeply nested to parse"

#: AST nodes that can hold nothing of interest; skipping them makes the walk
#: about a quarter cheaper (every Name carries a Load/Store context node).
_LEAVES = (ast.expr_context, ast.Constant, ast.operator, ast.cmpop, ast.unaryop, ast.boolop)


def parse_code(language: str, text: str) -> CodeFacts:
    """Parse ``text`` as ``language``; never raises for bad source, only for a bad language.

    Broken source is normal input (a file mid-edit), so it is reported in
    ``CodeFacts.error`` rather than raised: the caller still stores the file,
    and an agent reading the facts sees why they are thin.
    """
    if not isinstance(text, str):
        raise ValidationError(
            f"source text must be str, not {type(text).__name__}", field="text"
        )
    if language == "python":
        return _parse_python(text)
    if language in _GRAMMARS:
        return _parse_with_tree_sitter(language, text)
    raise ValidationError(
        f"cannot parse language {language!r}; supported: {', '.join(SUPPORTED_LANGUAGES)}",
        field="language",
    )


def _facts(
    language: str,
    functions: Iterable[str] = (),
    classes: Iterable[str] = (),
    imports: Iterable[ImportRef] = (),
    calls: Iterable[str] = (),
    error: str | None = None,
) -> CodeFacts:
    """Build facts in canonical form: deterministic output is what makes re-capture idempotent."""
    return CodeFacts(
        language=language,
        functions=tuple(sorted(set(functions))),
        classes=tuple(sorted(set(classes))),
        imports=tuple(sorted(set(imports), key=lambda ref: (ref.module, ref.names))),
        calls=tuple(sorted(set(calls))),
        error=error,
    )


def _import_ref(module: str, names: Iterable[str] = ()) -> ImportRef:
    return ImportRef(module, tuple(sorted(set(names))))


# --------------------------------------------------------------------------- Python


def _parse_python(text: str) -> CodeFacts:
    """Parse with :mod:`ast`, turning every way the parser can refuse into ``error``.

    Besides ``SyntaxError`` the parser raises ``MemoryError`` (its own stack
    overflowing on very deep expressions), ``RecursionError`` (deep trees while
    building the AST) and ``ValueError`` (null bytes on some versions, lone
    surrogates that cannot be encoded). None of these mean the process is in
    trouble, so all of them become an error on the facts.
    """
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        return _facts("python", error=_python_error(exc, text))
    except (RecursionError, MemoryError):
        return _facts("python", error=_TOO_DEEP)
    except ValueError as exc:
        return _facts("python", error=f"line {_bad_char_line(exc, text)}: {exc}")
    try:
        return _python_facts(tree)
    except RecursionError:  # pragma: no cover - the walk is iterative; belt and braces
        return _facts("python", error=_TOO_DEEP)


def _python_error(exc: SyntaxError, text: str) -> str:
    """``"line N: message"``; the null-byte error carries no line, so find it."""
    line = exc.lineno if exc.lineno is not None else _bad_char_line(exc, text)
    return f"line {line}: {exc.msg}"


def _bad_char_line(exc: Exception, text: str) -> int:
    """The line of the character the parser refused (a null byte or a lone surrogate)."""
    if isinstance(exc, UnicodeEncodeError):
        return text.count("\n", 0, exc.start) + 1
    nul = text.find("\0")
    return text.count("\n", 0, nul) + 1 if nul >= 0 else 1


def _python_facts(tree: ast.Module) -> CodeFacts:
    """Walk the whole tree iteratively: deep but valid code must not hit the recursion limit.

    Each stack entry carries the class chain it sits in and whether it is
    inside a function, which is all that decides a definition's name or that
    it is a local to skip.
    """
    functions: list[str] = []
    classes: list[str] = []
    imports: list[ImportRef] = []
    calls: list[str] = []
    stack: list[tuple[ast.AST, tuple[str, ...], bool]] = [(tree, (), False)]
    while stack:
        node, scope, local = stack.pop()
        child_scope, child_local = scope, local
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if not local:
                functions.append(".".join((*scope, node.name)))
            child_local = True
        elif isinstance(node, ast.ClassDef):
            if not local:
                classes.append(".".join((*scope, node.name)))
            child_scope = (*scope, node.name)
        elif isinstance(node, ast.Import):
            imports.extend(ImportRef(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imports.append(_python_from_import(node))
        elif isinstance(node, ast.Call):
            name = _called_name(node.func)
            if name:
                calls.append(name)
        stack.extend(
            (child, child_scope, child_local)
            for child in ast.iter_child_nodes(node)
            if not isinstance(child, _LEAVES)
        )
    return _facts("python", functions, classes, imports, calls)


def _python_from_import(node: ast.ImportFrom) -> ImportRef:
    """``from ..p import q`` -> ``ImportRef("..p", ("q",))``; a star import names nothing.

    ``*`` is dropped rather than kept as a name so that resolution never looks
    for a submodule called ``*``.
    """
    module = "." * node.level + (node.module or "")
    return _import_ref(module, (alias.name for alias in node.names if alias.name != "*"))


def _called_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


# --------------------------------------------------------------------------- tree-sitter

#: Grammars are loaded once: ``Language`` objects are immutable and shareable.
_GRAMMARS: dict[str, Language] = {
    "javascript": Language(tree_sitter_javascript.language()),
    "typescript": Language(tree_sitter_typescript.language_typescript()),
    "tsx": Language(tree_sitter_typescript.language_tsx()),
}

_FUNCTION_VALUE = "[(arrow_function) (function_expression) (generator_function)]"
_MEMBER_NAME = "[(property_identifier) (private_property_identifier)]"

_COMMON_PATTERNS = f"""
(function_declaration name: (identifier) @function)
(generator_function_declaration name: (identifier) @function)
(variable_declarator name: (identifier) @function value: {_FUNCTION_VALUE})
(method_definition name: {_MEMBER_NAME} @method)
(class_declaration) @class
(class) @class
(call_expression function: (identifier) @call)
(call_expression function: (member_expression property: (_) @call))
(call_expression function: (import) arguments: (arguments . (string) @dynamic_import))
(import_statement source: (string) @import)
(export_statement source: (string) @import)
"""

_JS_PATTERNS = f"""
(field_definition property: {_MEMBER_NAME} @method value: {_FUNCTION_VALUE})
"""

_TS_PATTERNS = f"""
(public_field_definition name: {_MEMBER_NAME} @method value: {_FUNCTION_VALUE})
(abstract_class_declaration) @class
(import_require_clause source: (string) @require_clause)
"""

_QUERY_SOURCES: dict[str, str] = {
    "javascript": _COMMON_PATTERNS + _JS_PATTERNS,
    "typescript": _COMMON_PATTERNS + _TS_PATTERNS,
    "tsx": _COMMON_PATTERNS + _TS_PATTERNS,
}

#: Nodes whose body is a function scope when they have a name of their own.
_NAMED_FUNCTIONS = frozenset(
    {"function_declaration", "generator_function_declaration", "method_definition"}
)
_FUNCTION_EXPRESSIONS = frozenset({"arrow_function", "function_expression", "generator_function"})
#: Parents that give a function expression a name (``const f = () => ...``).
_NAMING_PARENTS = frozenset({"variable_declarator", "field_definition", "public_field_definition"})
_CLASS_NODES = frozenset({"class_declaration", "abstract_class_declaration", "class"})
#: See :func:`_degenerate_error`: about a run of 4,000 bare tokens, 10-20 ms of querying.
_QUERY_COST_BUDGET = 4096 * 4096 // 2


class _ThreadQueries(threading.local):
    """Compiled queries, one set per thread.

    A query takes milliseconds to compile, so it is compiled once per thread
    and language; a ``Parser`` costs well under a microsecond, so each call
    makes its own. Nothing mutable is shared between threads.
    """

    def __init__(self) -> None:
        self.by_language: dict[str, Query] = {}

    def get(self, language: str) -> Query:
        query = self.by_language.get(language)
        if query is None:
            query = Query(_GRAMMARS[language], _QUERY_SOURCES[language])
            self.by_language[language] = query
        return query


_QUERIES = _ThreadQueries()


def _parse_with_tree_sitter(language: str, text: str) -> CodeFacts:
    # surrogatepass: text decoded with errors="surrogateescape" (or fuzzed
    # text) must still parse; tree-sitter copes with the invalid bytes.
    source = text.encode("utf-8", "surrogatepass")
    root = Parser(_GRAMMARS[language]).parse(source).root_node
    if root.has_error and _degenerate_error(root):
        line = _first_error_line(root)
        return _facts(language, error=f"syntax error near line {line}; too broken to read")
    captures = QueryCursor(_QUERIES.get(language)).captures(root)

    def captured(name: str) -> list[Node]:
        return captures.get(name, [])

    functions = _qualified_names(captured("function"), captured("method"))
    classes = _class_names(captured("class"))
    imports = [_statement_import(node) for node in captured("import")]
    imports += [_import_ref(_string_value(node)) for node in captured("dynamic_import")]
    imports += [_import_ref(_string_value(node)) for node in captured("require_clause")]
    calls: list[str] = []
    for node in captured("call"):
        calls.append(_text(node))
        required = _required_module(node)
        if required is not None:
            imports.append(_import_ref(required))
    error = f"syntax error near line {_first_error_line(root)}" if root.has_error else None
    return _facts(
        language,
        functions,
        classes,
        (ref for ref in imports if ref.module),
        (name for name in calls if name),
        error,
    )


def _text(node: Node) -> str:
    return (node.text or b"").decode("utf-8", "replace")


def _string_value(node: Node) -> str:
    """The contents of a string literal node, without its quotes (escapes left as written)."""
    return _text(node)[1:-1]


def _qualified_names(*groups: list[Node]) -> list[str]:
    """Name every captured definition, dropping locals (see :func:`_class_chain`)."""
    names: list[str] = []
    for group in groups:
        for name_node in group:
            definition = name_node.parent
            if definition is None:
                continue
            chain = _class_chain(definition)
            if chain is not None:
                names.append(".".join((*chain, _text(name_node))))
    return names


def _class_names(class_nodes: list[Node]) -> list[str]:
    names: list[str] = []
    for class_node in class_nodes:
        name = _class_name(class_node)
        chain = _class_chain(class_node)
        if name and chain is not None:
            names.append(".".join((*chain, name)))
    return names


def _class_chain(definition: Node) -> list[str] | None:
    """The enclosing class names, outermost first; None when the definition is a local.

    Only a *named* function makes a local scope. Anonymous function
    expressions -- an IIFE module wrapper, an AMD ``define`` callback, a test's
    ``describe(() => ...)`` -- are transparent, because in older JavaScript
    that is how a module's public functions are written. Anonymous classes
    add no qualifier.
    """
    chain: list[str] = []
    node = definition.parent
    while node is not None:
        kind = node.type
        if kind in _NAMED_FUNCTIONS:
            return None
        parent = node.parent
        if kind in _FUNCTION_EXPRESSIONS and parent is not None and parent.type in _NAMING_PARENTS:
            return None
        if kind == "class_body" and parent is not None and parent.type in _CLASS_NODES:
            class_name = _class_name(parent)
            if class_name:
                chain.append(class_name)
        node = parent
    chain.reverse()
    return chain


def _class_name(class_node: Node) -> str | None:
    """The name other code uses for a class; None for an anonymous one.

    ``const Api = class Impl {}`` is known outside as ``Api`` -- ``Impl`` is
    visible only inside the class -- so a variable binding wins.
    """
    parent = class_node.parent
    name = None
    if class_node.type == "class" and parent is not None and parent.type == "variable_declarator":
        name = parent.child_by_field_name("name")
    if name is None:
        name = class_node.child_by_field_name("name")
    return _text(name) if name is not None else None


def _statement_import(source: Node) -> ImportRef:
    """An ``import``/``export ... from`` statement, with the names it takes.

    Names are the exported names, not local aliases (``{b as c}`` takes
    ``"b"``); a default import takes ``"default"``; namespace imports and
    ``export *`` take everything, recorded as no names.
    """
    names: list[str] = []
    statement = source.parent
    for child in statement.named_children if statement is not None else ():
        if child.type == "import_clause":
            names.extend(_import_clause_names(child))
        elif child.type == "export_clause":
            names.extend(_specifier_names(child, "export_specifier"))
    return _import_ref(_string_value(source), names)


def _import_clause_names(clause: Node) -> list[str]:
    names: list[str] = []
    for child in clause.named_children:
        if child.type == "identifier":
            names.append("default")
        elif child.type == "named_imports":
            names.extend(_specifier_names(child, "import_specifier"))
    return names


def _specifier_names(container: Node, kind: str) -> list[str]:
    names: list[str] = []
    for specifier in container.named_children:
        name = specifier.child_by_field_name("name") if specifier.type == kind else None
        if name is not None:
            names.append(_string_value(name) if name.type == "string" else _text(name))
    return names


def _required_module(callee_name: Node) -> str | None:
    """``require("m")`` -> ``"m"``: only a bare ``require`` with a single plain string."""
    call = callee_name.parent
    if call is None or call.type != "call_expression" or _text(callee_name) != "require":
        return None
    if call.child_by_field_name("function") != callee_name:
        return None
    arguments = call.child_by_field_name("arguments")
    if arguments is None or arguments.named_child_count != 1:
        return None
    argument = arguments.named_children[0]
    return _string_value(argument) if argument.type == "string" else None


def _degenerate_error(root: Node) -> bool:
    """Whether error recovery left long runs of bare tokens (``[[[[...``) in the tree.

    tree-sitter's query cursor costs about the square of each such run of
    unnamed siblings -- 50,000 unclosed brackets take seconds, a megabyte of
    them minutes -- so a file like that yields no facts rather than stalling
    a capture. The same square is summed here and compared with a budget of
    tens of milliseconds, which real code never comes close to. Only parts of
    the tree flagged ``has_error`` are looked at, so the check itself takes
    milliseconds.
    """
    cost = 0
    stack = [root]
    while stack:
        node = stack.pop()
        run = 0
        for child in node.children:
            run = 0 if child.is_named else run + 1
            cost += run
            if cost > _QUERY_COST_BUDGET:
                return True
            if child.has_error and child.child_count:
                stack.append(child)
    return False


def _first_error_line(root: Node) -> int:
    """The 1-based line of the first ERROR or MISSING node in document order.

    Descends only into children flagged ``has_error``, so the cost is one path
    down the tree, not a full walk.
    """
    node = root
    while not (node.is_error or node.is_missing):
        for child in node.children:
            if child.is_error or child.is_missing or child.has_error:
                node = child
                break
        else:
            break
    return node.start_point.row + 1
