"""The runtime an agent worked in -- interpreter, platform, packages, environment variables.

Environment variables are the riskiest thing statekeep stores: they are where
deployments put credentials, and whatever is captured ends up in the store, in
archives and in resume briefs shown to a model. Every variable therefore goes
through :func:`redact_env`, which errs on the side of hiding. Two independent
kinds of rule apply, because neither is enough alone:

**By name** (:func:`is_secret_name`) -- the whole value is replaced.

* The name is split into parts on ``_``, ``-``, ``.`` and case boundaries
  (``apiKey`` -> ``API``, ``KEY``), and a part such as ``TOKEN``, ``SECRET``,
  ``PASSWORD``, ``KEY``, ``AUTH``, ``COOKIE``, ``SESSION``, ``DSN``, ``CERT``
  marks it secret. Matching whole parts rather than substrings is what keeps
  ``KEYBOARD``, ``MONKEY`` or ``BYPASS_CACHE`` readable.
* A part *ending* in a long, unambiguous word (``PGPASSWORD``, ``GHTOKEN``,
  ``MYAPIKEY``) is secret too: such names are written without separators.
* Some names hold credentials without saying so (``DATABASE_URL``,
  ``CONNECTION_STRING``, broker URLs); they are listed.
* ``PWD`` and ``OLDPWD`` are the shell's working directories, and the XDG
  session descriptors (``XDG_SESSION_TYPE=wayland``) are not credentials:
  they are exempt, because hiding them removes context and protects nothing.

**By value** (:func:`redact_value`) -- for secrets under innocent names
(``OPTS="--token ghp_..."``, a URL in ``UPSTREAM``).

* URLs with a password (``scheme://user:pass@host``): only the password is
  replaced, because which host and user the agent talked to is useful context.
* ``key=value`` connection strings with ``password=``, ``pwd=``, ``token=``,
  ``secret=``, ``api_key=``, ``sig=`` ... (libpq, ODBC, SAS URLs), and
  command-line options such as ``--password x`` kept in ``*_OPTS`` variables.
* ``Bearer ...`` authorisation headers; PEM private keys; JWTs (``eyJ...``,
  three base64url parts).
* Vendor token prefixes, which exist precisely so that scanners can spot them:
  ``ghp_``, ``gho_``, ``github_pat_`` (GitHub), ``sk-`` (OpenAI, Stripe),
  ``xox[abpr]-`` (Slack), ``AKIA``/``ASIA`` (AWS), ``AIza`` (Google),
  ``glpat-`` (GitLab) -- followed by at least 16 token characters, so that
  ``sk-SK`` (a locale) is not a key.
* Long random-looking strings: a run of at least 32 base64/hex characters
  whose Shannon entropy is above 3.5 bits per character and which mixes upper
  case, lower case and digits -- or is pure hex above 3.0 bits (hex cannot
  exceed 4). Requiring mixed classes keeps long words and identifiers
  readable. A run that starts with ``/`` is a path: each path component is
  judged on its own, so ``PATH`` entries survive while a base64 secret that
  happens to start with ``/`` is still caught. The cost, accepted: a 40-hex
  commit id in a variable is hidden too.

A redacted value becomes ``[redacted]``, or the URL with only its password
replaced.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import re
import sys
from collections import Counter
from collections.abc import Mapping
from typing import Any

from statekeep.context.elements import ContextElement

__all__ = [
    "REDACTED",
    "capture_environment",
    "installed_packages",
    "is_secret_name",
    "redact_env",
    "redact_value",
]

REDACTED = "[redacted]"

_SECRET_PARTS = frozenset({
    "TOKEN", "TOKENS", "SECRET", "SECRETS", "PASSWORD", "PASSWORDS", "PASSWD", "PASS",
    "PASSPHRASE", "PWD", "KEY", "KEYS", "APIKEY", "CREDENTIAL", "CREDENTIALS", "CREDS",
    "AUTH", "COOKIE", "COOKIES", "SESSION", "DSN", "PRIVATE", "SIGNATURE", "CERT",
})
_SECRET_SUFFIXES = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "APIKEY", "CREDENTIALS")
_SECRET_NAMES = frozenset({
    "DATABASE_URL", "DATABASE_URI", "DB_URL", "DB_URI", "CONNECTION_STRING",
    "CONN_STRING", "CONNSTR", "REDIS_URL", "MONGO_URL", "MONGO_URI", "MONGODB_URL",
    "MONGODB_URI", "AMQP_URL", "BROKER_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND",
    "SQLALCHEMY_DATABASE_URI",
})
_NOT_SECRET_NAMES = frozenset({
    "PWD", "OLDPWD", "XDG_SESSION_TYPE", "XDG_SESSION_CLASS", "XDG_SESSION_DESKTOP",
    "DESKTOP_SESSION",
})

_NAME_SPLIT_RE = re.compile(r"[_\-.]+")
# An all-caps run not followed by lower case (API in APIKey), a capitalised or
# lower-case word, or digits.
_NAME_PART_RE = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")

# scheme://user:password@host -- the password runs to the last "@" of the
# whitespace-delimited token, since people paste unencoded "@" into passwords.
_URL_PASSWORD_RE = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s]*):(?P<password>\S+)@(?P<tail>[^@\s]*)"
)
_SECRET_VALUE_RES = (
    re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY"),
    re.compile(r"(?i)\bbearer\s+\S+"),
    re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"),
    re.compile(
        r"(?<![A-Za-z0-9])(?:ghp_|gho_|ghu_|ghs_|ghr_|github_pat_|sk-|xox[abpr]-|AKIA|ASIA"
        r"|AIza|glpat-)[A-Za-z0-9_\-]{16,}"
    ),
    re.compile(
        r"(?i)(?:^|[\s;,&?:/'\"\-])(?:[a-z0-9]+[_.\-])*"
        r"(?:password|passwd|pwd|pass|secret|token|api[_\-]?key|access[_\-]?key|auth|sig"
        r"|signature)\s*=\s*[^\s;,&]+"
    ),
    re.compile(r"(?i)(?:^|\s)--?(?:password|passwd|token|secret|api-?key)[\s=]+\S+"),
)
_RUN_RE = re.compile(r"[A-Za-z0-9+/=_\-]{32,}")
_HEX_RE = re.compile(r"[0-9A-Fa-f]+")
_MIN_RANDOM_LENGTH = 32
_MIN_ENTROPY = 3.5
_MIN_HEX_ENTROPY = 3.0


def capture_environment(
    *, environ: Mapping[str, str] | None = None, cwd: str | None = None
) -> ContextElement:
    """The interpreter, platform, installed packages and (redacted) variables.

    This is what "it worked yesterday" questions need when a session resumes
    in a different virtualenv or on a different machine.
    """
    attrs: dict[str, Any] = {
        "cwd": cwd if cwd is not None else _current_dir(),
        "python_version": sys.version,
        "python_implementation": platform.python_implementation(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "packages": installed_packages(),
        "env_vars": redact_env(os.environ if environ is None else environ),
    }
    return ContextElement(type="environment", identifier="env", attributes=attrs)


def installed_packages() -> dict[str, str]:
    """``{normalised name: version}`` of the distributions Python would import.

    Names are PEP 503-normalised (lower case, ``-`` for runs of ``-_.``) so the
    same package is one key whatever its metadata spelling. When a name is
    installed twice, the first on ``sys.path`` wins -- it is the one imported.
    """
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if not name:
            continue  # broken metadata: nothing trustworthy to report
        key = re.sub(r"[-_.]+", "-", str(name)).lower()
        found.setdefault(key, str(dist.version))
    return dict(sorted(found.items()))


def redact_env(environ: Mapping[str, str]) -> dict[str, str]:
    """A sorted copy of ``environ`` that is safe to store."""
    return {
        name: REDACTED if is_secret_name(name) else redact_value(value)
        for name, value in sorted(environ.items())
    }


def is_secret_name(name: str) -> bool:
    """Whether a variable's name says that its value is a credential."""
    upper = name.upper()
    if upper in _NOT_SECRET_NAMES:
        return False
    if upper in _SECRET_NAMES:
        return True
    return any(
        part in _SECRET_PARTS or part.endswith(_SECRET_SUFFIXES) for part in _name_parts(name)
    )


def _name_parts(name: str) -> list[str]:
    return [
        part.upper()
        for chunk in _NAME_SPLIT_RE.split(name)
        for part in _NAME_PART_RE.findall(chunk)
    ]


def redact_value(value: str) -> str:
    """``value`` with credentials hidden, or unchanged when none is recognised."""
    masked = _URL_PASSWORD_RE.sub(rf"\g<head>:{REDACTED}@\g<tail>", value)
    if any(rule.search(masked) for rule in _SECRET_VALUE_RES):
        return REDACTED
    if any(_looks_random(run.group()) for run in _RUN_RE.finditer(masked)):
        return REDACTED
    return masked


def _looks_random(run: str) -> bool:
    """Whether a run of base64/hex characters is likely a key rather than a word or path."""
    if run.startswith("/"):
        return any(_looks_random(part) for part in run.split("/") if part)
    core = run.strip("=")
    if len(core) < _MIN_RANDOM_LENGTH:
        return False
    if _HEX_RE.fullmatch(core):
        return _shannon_entropy(core) > _MIN_HEX_ENTROPY
    mixed = (any(c.islower() for c in core) and any(c.isupper() for c in core)
             and any(c.isdigit() for c in core))
    return mixed and _shannon_entropy(core) > _MIN_ENTROPY


def _shannon_entropy(text: str) -> float:
    """Bits per character of ``text``'s own character distribution."""
    if not text:
        return 0.0
    total = len(text)
    return -sum(n / total * math.log2(n / total) for n in Counter(text).values())


def _current_dir() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # the directory was deleted under us
        return None
