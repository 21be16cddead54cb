"""PostgreSQL URLs as every payband process reads them from its environment.

A database setting is a ``postgresql://`` or ``postgres://`` URL, with or without a SQLAlchemy
driver (``postgresql+psycopg://``), or a libpq ``key=value`` string. libpq (psycopg) reads the
plain URL or key=value (``conninfo``); SQLAlchemy (Alembic, MLflow, Optuna) a URL naming the
psycopg 3 driver (``sqlalchemy_url``); a message neither password (``redact``, ``describe``).
Only the standard library: whether a URL's host or options are valid is libpq's to say.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, unquote, urlsplit

__all__ = ["DatabaseUrlError", "conninfo", "describe", "redact", "sqlalchemy_url"]

_POSTGRES_SCHEMES = ("postgresql", "postgres")
_EXPECTED = "expected postgresql://user@host:port/dbname or key=value pairs"
# A URL's scheme, SQLAlchemy's driver after a "+" included.
_SCHEME = re.compile(r"^(?P<dialect>[A-Za-z][A-Za-z0-9.-]*)(?:\+(?P<driver>[A-Za-z0-9_.-]+))?://")
# A key=value string starts with a libpq keyword and "=" (a directory or file name does not).
_KEYWORD_START = re.compile(r"^\s*[A-Za-z_][A-Za-z0-9_]*\s*=")
# user:password@ of a URL anywhere in a text. The password runs to the last "@" before
# whitespace, so one holding "@", "/", ":" or "#" unencoded is hidden whole; in a text that
# begins with the URL (a setting), to the text's last "@", spaces included.
_URL_PASSWORD = re.compile(r"(?P<head>(?:[A-Za-z][A-Za-z0-9+.-]*)?://[^\s:/@]*):\S*@")
_ONE_URL_PASSWORD = re.compile(r"^(?P<head>\s*[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*):.*@", re.DOTALL)
# password=... (sslpassword, PGPASSWORD too) as a URL query parameter: it ends at "&" or "#".
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]\w*password=)[^&#\s]*", re.IGNORECASE)
# ... and as a key=value pair: a quoted value (with \' and \\ escapes), or one up to
# unescaped whitespace, as libpq reads it.
_KEYWORD_PASSWORD = re.compile(
    r"(?P<head>(?<![\w?&])\w*password\s*=\s*)(?:'(?:[^'\\]|\\.)*'?|(?:\\.|[^\s\\])+\\?)",
    re.IGNORECASE,
)


class DatabaseUrlError(ValueError):
    """Not a PostgreSQL URL or key=value string; the message shows it without its password."""

    @classmethod
    def unreadable(cls, url: str) -> DatabaseUrlError:
        """The error for a URL libpq cannot read: its own message would quote the URL, and
        a fragment of a password with it."""
        return cls(f"invalid database URL '{redact(url.strip())}' ({_EXPECTED})")


def redact(text: str) -> str:
    """``text`` with every password in it replaced by ``***``: of a URL (``user:***@``), of a
    URL query (``?password=***``) and of key=value pairs (``password=***``)."""
    text = _ONE_URL_PASSWORD.sub(r"\g<head>:***@", text, count=1)
    text = _URL_PASSWORD.sub(r"\g<head>:***@", text)
    text = _QUERY_PASSWORD.sub(r"\g<head>***", text)
    return _KEYWORD_PASSWORD.sub(r"\g<head>***", text)


def conninfo(url: str) -> str:
    """The connection string libpq reads: a URL without SQLAlchemy's driver
    (``postgresql+psycopg://`` becomes ``postgresql://``), a key=value string as given.

    DatabaseUrlError for another scheme and for text that is neither form.
    """
    text = url.strip()
    scheme = _SCHEME.match(text)
    if scheme:
        if scheme["dialect"].lower() not in _POSTGRES_SCHEMES:
            raise DatabaseUrlError(
                f"database URL '{redact(text)}' is not a PostgreSQL URL ({_EXPECTED})"
            )
        return "postgresql://" + text[scheme.end() :]
    if text and not _KEYWORD_START.match(text):
        raise DatabaseUrlError.unreadable(text)
    _keywords(text)
    return text


def sqlalchemy_url(url: str) -> str:
    """The URL SQLAlchemy reads with the psycopg 3 driver: ``postgresql://`` and ``postgres://``
    become ``postgresql+psycopg://``, a key=value string ``postgresql+psycopg:///?key=value``.

    A driver named is kept, and other URLs (``sqlite:///``, a directory, ``http://`` for
    MLflow) come back unchanged: MLflow and Optuna accept them too.
    """
    text = url.strip()
    scheme = _SCHEME.match(text)
    if scheme:
        if scheme["dialect"].lower() not in _POSTGRES_SCHEMES:
            return text
        return f"postgresql+{scheme['driver'] or 'psycopg'}://" + text[scheme.end() :]
    if not _KEYWORD_START.match(text):
        return text
    # SQLAlchemy hands the query of a URL without host on to libpq as keywords.
    query = "&".join(
        f"{quote(key, safe='')}={quote(value, safe='')}" for key, value in _keywords(text).items()
    )
    return f"postgresql+psycopg:///?{query}"


def describe(url: str) -> str:
    """Where a database URL points, ``host:port/dbname``, for messages: neither user nor
    password, libpq's defaults (localhost, 5432) where the URL names none. The redacted URL
    when it cannot be read."""
    try:
        # Read once the password is gone: a URL whose password holds "/" is read wrongly by
        # urlsplit, and then no part of that password can stand in the answer.
        params = _params(redact(conninfo(url)))
    except ValueError:
        return redact(url.strip())
    hosts = (params.get("host") or "localhost").split(",")
    ports = (params.get("port") or "5432").split(",")
    if len(ports) == 1:  # one port for every host, as libpq reads it
        ports *= len(hosts)
    where = ",".join(
        f"{_bracketed(host or 'localhost')}:{port or '5432'}"
        for host, port in zip(hosts, ports, strict=False)
    )
    dbname = params.get("dbname")
    return f"{where}/{dbname}" if dbname else where


def _bracketed(host: str) -> str:
    """An IPv6 address in brackets, so that the port after it stays readable."""
    return f"[{host}]" if ":" in host and not host.startswith("/") else host


def _params(text: str) -> dict[str, str]:
    """host, port, dbname (and any other keyword) of a libpq connection string."""
    if not text.startswith("postgresql://"):
        return _keywords(text)
    parts = urlsplit(text)
    params: dict[str, str] = {}
    hostspec = parts.netloc.rpartition("@")[2]
    hosts, ports = [], []
    for spec in hostspec.split(","):
        if spec.startswith("["):
            host, _, rest = spec[1:].partition("]")
            port = rest.removeprefix(":")
        else:
            host, _, port = spec.partition(":")
        hosts.append(unquote(host))
        ports.append(unquote(port))
    if any(hosts):
        params["host"] = ",".join(hosts)
    if any(ports):
        params["port"] = ",".join(ports)
    if parts.path.strip("/"):
        params["dbname"] = unquote(parts.path[1:])
    params.update(parse_qsl(parts.query, keep_blank_values=True))
    return params


def _keywords(text: str) -> dict[str, str]:
    """The pairs of a key=value string, read as libpq reads them; DatabaseUrlError (the
    password never in it) when it is not one."""
    params: dict[str, str] = {}
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i == n:
            return params
        start = i
        while i < n and text[i] != "=" and not text[i].isspace():
            i += 1
        key = text[start:i]
        while i < n and text[i].isspace():
            i += 1
        if not key or i == n or text[i] != "=":
            raise DatabaseUrlError.unreadable(text)
        i += 1
        while i < n and text[i].isspace():
            i += 1
        value: list[str] = []
        quoted = i < n and text[i] == "'"
        if quoted:
            i += 1
        while i < n and (text[i] != "'" if quoted else not text[i].isspace()):
            if text[i] == "\\" and i + 1 < n:
                i += 1
            value.append(text[i])
            i += 1
        if quoted:
            if i == n:
                raise DatabaseUrlError(
                    f"invalid database URL '{redact(text)}': a quoted value is not closed"
                )
            i += 1
        params[key] = "".join(value)
