"""Elements from the seed's non-file sources: code snippets and tasks.

A snippet is small text an agent was looking at (a function, a diff hunk).
Its text is kept inline in the value -- it is what full-text search should
find -- and parsed like a file for functions, classes, imports and calls.
A snippet that does not parse is still captured, with ``parse_error`` set.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from statekeep.context.elements import ContextElement
from statekeep.context.languages import PARSED_LANGUAGES
from statekeep.errors import NotFoundError, ValidationError
from statekeep.ids import validate_id, validate_key
from statekeep.store.protocol import Store

__all__ = ["MAX_SNIPPET_CHARS", "snippet_element", "task_element"]

#: Snippets live inline in the context value; a whole file belongs in ``files``.
MAX_SNIPPET_CHARS = 256 * 1024


def _opt_str(raw: Mapping[str, Any], name: str, where: str) -> str | None:
    value = raw.get(name)
    if value is not None and not isinstance(value, str):
        raise ValidationError(f"{where}.{name} must be a string", field=name)
    return value


def snippet_element(raw: object, index: int) -> ContextElement:
    """One ``code_snippets`` entry as a ``code`` element."""
    from statekeep.context.code import parse_code

    where = f"code_snippets[{index}]"
    if not isinstance(raw, Mapping):
        raise ValidationError(f"{where} must be a mapping", field="code_snippets")
    language = raw.get("language")
    if not isinstance(language, str) or not language:
        raise ValidationError(f"{where}.language is required", field="language")
    text = _opt_str(raw, "code", where) or _opt_str(raw, "source", where)
    if text is not None and len(text) > MAX_SNIPPET_CHARS:
        raise ValidationError(f"{where}.code is longer than {MAX_SNIPPET_CHARS} characters;"
                              " capture the file instead", field="code")
    function = _opt_str(raw, "function_name", where)
    cls = _opt_str(raw, "class_name", where)
    path = _opt_str(raw, "path", where)
    given_imports = raw.get("imports") or []
    if not isinstance(given_imports, list) or not all(isinstance(i, str)
                                                      for i in given_imports):
        raise ValidationError(f"{where}.imports must be a list of strings", field="imports")
    identifier = raw.get("id")
    if identifier is None:
        basis = "\x1f".join(x or "" for x in (path, cls, function, text))
        identifier = "snippet-" + hashlib.sha256(basis.encode()).hexdigest()[:16]
    validate_key(identifier, f"{where}.id")
    attrs: dict[str, Any] = {
        "language": language, "function": function, "class": cls, "path": path,
        "code": text, "imports": [[i, []] for i in given_imports],
    }
    if text is not None and language in PARSED_LANGUAGES:
        facts = parse_code(language, text).to_json()
        parsed = {i[0] for i in facts["imports"]}
        facts["imports"] += [i for i in attrs["imports"] if i[0] not in parsed]
        attrs.update(facts)
    return ContextElement("code", str(identifier), attrs)


def task_element(store: Store, raw: object) -> ContextElement:
    """The ``task`` source: a task id, or the seed's dict (id, description,
    status, dependencies). A task that exists in the store is described from
    the store -- its status there is the truth."""
    if isinstance(raw, str):
        raw = {"id": raw}
    if not isinstance(raw, Mapping):
        raise ValidationError("task must be a task id or a mapping", field="task")
    task_id = raw.get("id")
    validate_id(task_id, "task.id")
    assert isinstance(task_id, str)
    deps = raw.get("dependencies") or []
    files = raw.get("files") or []
    for name, value in (("dependencies", deps), ("files", files)):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValidationError(f"task.{name} must be a list of strings", field=name)
    attrs: dict[str, Any] = {
        "id": task_id,
        "description": _opt_str(raw, "description", "task"),
        "status": _opt_str(raw, "status", "task"),
        "dependencies": deps,
        "files": files,
    }
    try:
        task = store.get_task(task_id)
    except NotFoundError:
        if attrs["description"] is None:
            raise
    else:
        attrs.update(description=task.description, status=task.status.value, type=task.type,
                     parameters=task.parameters, parent_task_id=task.parent_task_id)
    return ContextElement("task", task_id, attrs)
