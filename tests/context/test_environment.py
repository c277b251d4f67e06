"""Environment capture and secret redaction, with property tests for the leaks that matter."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import sys

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from statekeep.context.environment import (
    REDACTED,
    capture_environment,
    is_secret_name,
    redact_env,
    redact_value,
)

# -- capture ------------------------------------------------------------------------


def test_capture_environment() -> None:
    env = {"PATH": "/usr/bin:/bin", "GITHUB_TOKEN": "ghp_" + "a1B2" * 9, "LANG": "C.UTF-8"}
    el = capture_environment(environ=env, cwd="/some/dir")
    assert (el.type, el.identifier, el.content) == ("environment", "env", None)
    attrs = el.attributes
    assert attrs["cwd"] == "/some/dir"
    assert attrs["python_version"] == sys.version
    assert attrs["python_implementation"] == platform.python_implementation()
    assert attrs["executable"] == sys.executable
    assert attrs["platform"] == platform.platform()
    assert attrs["env_vars"] == {
        "GITHUB_TOKEN": REDACTED, "LANG": "C.UTF-8", "PATH": "/usr/bin:/bin",
    }
    assert list(attrs["env_vars"]) == sorted(attrs["env_vars"])
    json.dumps(attrs)


def test_packages_are_normalised_and_sorted() -> None:
    packages = capture_environment(environ={}).attributes["packages"]
    assert packages["pathspec"] == importlib.metadata.version("pathspec")
    assert packages["tree-sitter"] == importlib.metadata.version("tree_sitter")
    assert list(packages) == sorted(packages)
    assert all(name == name.lower() and "_" not in name for name in packages)


def test_defaults_come_from_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATEKEEP_PROBE_SECRET", "hunter2-hunter2")
    monkeypatch.setenv("STATEKEEP_PROBE_PLAIN", "visible")
    attrs = capture_environment().attributes
    assert attrs["cwd"] == os.getcwd()
    assert attrs["env_vars"]["STATEKEEP_PROBE_SECRET"] == REDACTED
    assert attrs["env_vars"]["STATEKEEP_PROBE_PLAIN"] == "visible"
    assert "hunter2" not in json.dumps(attrs)


# -- names ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", [
    "GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "DB_PASSWORD", "MYSQL_PWD", "PGPASSWORD",
    "apiKey", "OpenAIApiKey", "stripe-api-key", "app.secret", "SENTRY_DSN", "SESSION_COOKIE",
    "GOOGLE_APPLICATION_CREDENTIALS", "PRIVATE_KEY", "DATABASE_URL", "CONNECTION_STRING",
    "HTTP_AUTH", "CLIENT_CERT", "REQUEST_SIGNATURE", "SMTP_PASS", "NPM_TOKEN", "ghToken",
])
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", [
    "PATH", "HOME", "LANG", "TERM", "PWD", "OLDPWD", "KEYBOARD", "MONKEY", "BYPASS_CACHE",
    "SHELL", "USER", "EDITOR", "LC_ALL", "VIRTUAL_ENV", "XDG_SESSION_TYPE", "PYTHONPATH",
    "KEYMAP", "PASSENGER_ENV", "TOKENIZERS_PARALLELISM",
])
def test_ordinary_names(name: str) -> None:
    assert not is_secret_name(name)


# -- values ---------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    ("postgres://app:s3cr3t@db.internal:5432/prod", f"postgres://app:{REDACTED}@db.internal:5432/prod"),
    ("redis://:pw@cache:6379/0", f"redis://:{REDACTED}@cache:6379/0"),
    ("amqp://u:p@ss:w0rd@mq/vhost", f"amqp://u:{REDACTED}@mq/vhost"),
    ("a https://x:one@h1 and ftp://y:two@h2", f"a https://x:{REDACTED}@h1 and ftp://y:{REDACTED}@h2"),
    ("https://example.com:8443/path?q=1", "https://example.com:8443/path?q=1"),
    ("https://user@example.com/", "https://user@example.com/"),
])
def test_url_passwords(value: str, expected: str) -> None:
    assert redact_value(value) == expected


@pytest.mark.parametrize("value", [
    "host=db port=5432 user=app password=hunter2 dbname=x",
    "Server=tcp:x.example;Database=d;User Id=u;Password=hunter2;",
    "https://acct.blob.example/c?sv=2021&sig=abc%2Bdef",
    "--db-password=hunter2",
    "--token abcdef",
    "Authorization: Bearer abc.def.ghi",
    "bearer xyz",
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
    "-----END OPENSSH PRIVATE KEY-----",
    "-----BEGIN RSA PRIVATE KEY-----",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl",
    "ghp_" + "A1b2C3d4" * 4 + "xyzw",
    "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
    "sk-proj-abcdefghijklmnopqrstuvwxyz123456",
    "xoxb-123456789012-1234567890123-abcdefghijklmnop",
    "AKIAIOSFODNN7EXAMPLE",
    "AIzaSyA1234567890abcdefghijklmnopqrstu",
    "glpat-abcdefghij0123456789",
    "opts: -v --key=Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWo=",
    "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWo",
    "/Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWo",  # base64 starting with a slash
    "4f9a1c0e7b2d8a6f3e5c9b1d0a7f2e8c",  # 32 hex digits
])
def test_secret_values(value: str) -> None:
    assert redact_value(value) == REDACTED


@pytest.mark.parametrize("value", [
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "/home/someone/miniconda3/envs/myproject/bin:/home/someone/.local/bin",
    "/nix/store/0c6dvjx2k7wq4zv4c3rsa7xbbmn8jqkr-python3-3.11.6/bin",
    "en_US.UTF-8", "C.UTF-8", "xterm-256color", "sk-SK", "/bin/bash", "vim", "1", "",
    "https://pypi.org/simple", "sort_key=name", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "this is a perfectly ordinary sentence about passwords and tokens",
    "src/statekeep/context/workspace.py",
])
def test_ordinary_values(value: str) -> None:
    assert redact_value(value) == value


# -- properties -------------------------------------------------------------------------

URL_SAFE = st.characters(codec="ascii", categories=("L", "N", "P", "S"))
TOKEN_BODY = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-",
    min_size=16, max_size=60,
)
PREFIXES = ["ghp_", "gho_", "github_pat_", "sk-", "xoxa-", "xoxb-", "xoxp-", "xoxr-", "AKIA",
            "AIza", "glpat-"]
SECRET_WORDS = ["TOKEN", "SECRET", "PASSWORD", "PASSWD", "PASS", "PWD", "KEY", "APIKEY",
                "CREDENTIAL", "CREDENTIALS", "AUTH", "COOKIE", "SESSION", "DSN", "PRIVATE",
                "SIGNATURE", "CERT"]


@given(password=st.text(alphabet=URL_SAFE, min_size=6, max_size=40),
       scheme=st.sampled_from(["postgres", "postgresql+psycopg", "mysql", "redis", "https",
                               "amqp", "mongodb+srv"]))
def test_url_password_never_survives(password: str, scheme: str) -> None:
    url = f"{scheme}://alice:{password}@db.internal:5432/app"
    shown = redact_value(url)
    assume(password not in f"{scheme}://alice:{REDACTED}@db.internal:5432/app")
    assert password not in shown
    assert redact_env({"UPSTREAM": url})["UPSTREAM"] == shown


@given(prefix=st.sampled_from(PREFIXES), body=TOKEN_BODY,
       before=st.sampled_from(["", "x ", "--flag=", "a,", "export T="]),
       after=st.sampled_from(["", " trailing", ";", "\n"]))
def test_prefixed_token_never_survives(prefix: str, body: str, before: str, after: str) -> None:
    token = prefix + body
    value = before + token + after
    assert token not in redact_value(value)
    assert token not in json.dumps(redact_env({"HARMLESS_NAME": value}))


@given(
    head=st.from_regex(r"[A-Z][A-Z0-9]{0,7}", fullmatch=True),
    word=st.sampled_from(SECRET_WORDS),
    tail=st.sampled_from(["", "_ID", "_FILE", "_2"]),
    value=st.text(min_size=3, max_size=80),
    lower=st.booleans(),
)
def test_value_under_secret_name_never_survives(
    head: str, word: str, tail: str, value: str, lower: bool
) -> None:
    name = f"{head}_{word}{tail}"
    name = name.lower() if lower else name
    assume(name.upper() not in {"PWD", "OLDPWD", "DESKTOP_SESSION"})  # documented exemptions
    assume(value not in REDACTED)
    out = redact_env({name: value, "HOME": "/home/u"})
    assert out == {name: REDACTED, "HOME": "/home/u"}


PATH_SEGMENT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1,
                       max_size=15)
ABSOLUTE_DIR = st.lists(PATH_SEGMENT, min_size=1, max_size=6).map(lambda s: "/" + "/".join(s))


@given(
    path=st.lists(ABSOLUTE_DIR, min_size=1, max_size=10).map(":".join),
    home=ABSOLUTE_DIR,
    lang=st.sampled_from(["C", "C.UTF-8", "POSIX", "en_US.UTF-8", "de_DE.UTF-8",
                          "sk_SK.UTF-8", "pt_BR.ISO-8859-1"]),
    term=st.sampled_from(["xterm", "xterm-256color", "screen-256color", "tmux-256color",
                          "dumb", "vt100", "linux", "alacritty"]),
)
def test_ordinary_values_survive(path: str, home: str, lang: str, term: str) -> None:
    env = {"PATH": path, "HOME": home, "LANG": lang, "TERM": term,
           "PWD": home, "OLDPWD": "/"}
    assert redact_env(env) == dict(sorted(env.items()))
