"""Secrets in URLs and text: :func:`mask_url`, the one masking every output, log line,
exception line, file and study attr goes through.

A storage URL can carry a secret in three places, all read by libpq (and SQLAlchemy):
the user info (``postgresql://user:PASSWORD@host/db``), the query
(``postgresql://host/db?user=u&password=PASSWORD``, also ``passfile``, ``sslpassword``,
``oauth_client_secret``...; keys may be percent-encoded, ``pass%77ord``), and libpq's
``key=value`` connection strings that messages may quote (``password='a b'``). Masking
errs on the side of hiding: a query parameter is shown only when its key is one lrtune
knows is harmless (``sslmode``, ``connect_timeout``...).

Pure Python (no torch, no Optuna, no SQLAlchemy), so any error path may import it.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

MASK = "***"

_SCHEME = re.compile(r"[a-zA-Z][a-zA-Z0-9+.\-]*://")

#: Query keys whose values are shown: connection settings that hold no secret (libpq's,
#: and SQLite's URI options). Every other key's value is masked.
SAFE_QUERY_KEYS = frozenset(
    {
        # libpq
        "application_name",
        "channel_binding",
        "client_encoding",
        "connect_timeout",
        "fallback_application_name",
        "gssencmode",
        "host",
        "hostaddr",
        "keepalives",
        "keepalives_count",
        "keepalives_idle",
        "keepalives_interval",
        "load_balance_hosts",
        "port",
        "replication",
        "require_auth",
        "ssl_max_protocol_version",
        "ssl_min_protocol_version",
        "sslcompression",
        "sslmode",
        "sslnegotiation",
        "sslsni",
        "target_session_attrs",
        "tcp_user_timeout",
        "user",
        # SQLite URI options, SQLAlchemy's own
        "cache",
        "check_same_thread",
        "immutable",
        "mode",
        "nolock",
        "timeout",
        "uri",
        "charset",
    }
)

# ``key=value`` outside a URL query whose key names a secret: libpq connection strings
# (``host=db password=x``, ``sslpassword='a b'``), environment lines (``PGPASSWORD=x``).
_SECRET_PAIR = re.compile(
    r"(?i)(?<![\w%?&])([\w%]*(?:pass|pwd|secret|token|credential)[\w%]*)(\s*=\s*)"
    r"('(?:[^'\\]|\\.)*'?|\"(?:[^\"\\]|\\.)*\"?|[^\s&'\"]+)"
)

_CLOSERS = {"'": "'", '"': '"', "(": ")", "<": ">", "[": "]", "{": "}"}


def _userinfo(token: str) -> tuple[int, int] | None:
    """Where the password of ``[scheme://]user:password@host`` lies in ``token``: from the
    first ":" of the user info to the LAST "@", so a raw "@" in it is hidden too."""
    scheme = _SCHEME.search(token)
    start = scheme.end() if scheme else len(token) - len(token.lstrip("'\"([{<=,;"))
    at = token.rfind("@")
    if at <= start or token[start] == "/":
        return None
    colon = token.find(":", start, at)
    return None if colon < 0 else (colon + 1, at)


def _query_start(token: str) -> int | None:
    """The "?" that starts ``token``'s query: the first one after the last "@" (the user
    info), else the first one; None when what follows holds no ``key=value``."""
    mark = token.find("?", token.rfind("@") + 1)
    if mark < 0:
        mark = token.find("?")
    if mark < 0 or "=" not in token[mark:]:
        return None
    return mark


def _suffix(token: str, tail: str) -> str:
    """The closing quote or bracket (and punctuation after it) that ends a quoted
    ``token``: kept, so that masking ``'URL'`` keeps the quotes."""
    closer = _CLOSERS.get(token.lstrip("=,;")[:1])
    if closer is None:
        return ""
    end = tail.rfind(closer)
    if end < 0 or not all(c in ",.;:)]}>'\"" for c in tail[end:]):
        return ""
    return tail[end:]


def _mask_query(query: str) -> str:
    # Each "&"-separated parameter keeps its value only when its (percent-decoded) key is
    # in SAFE_QUERY_KEYS; a part with no "=" (after a raw "&" in a value) is masked whole.
    parts = []
    for part in query.split("&"):
        key, eq, _ = part.partition("=")
        if not part or (eq and unquote(key).strip().lower() in SAFE_QUERY_KEYS):
            parts.append(part)
        else:
            parts.append(f"{key}={MASK}" if eq else MASK)
    return "&".join(parts)


def _mask_token(token: str) -> str:
    info = _userinfo(token)
    mark = _query_start(token)
    if info is not None and mark is not None and info[0] <= mark < info[1]:
        # A "?" inside what may be the password (or an "@" inside the query): which is
        # which cannot be told, so everything after the user name is hidden.
        return token[: info[0]] + MASK + _suffix(token, token[info[0] :])
    head, query = (token, "") if mark is None else (token[: mark + 1], token[mark + 1 :])
    if info is not None:
        head = f"{head[: info[0]]}{MASK}{head[info[1] :]}"
    if not query:
        return head
    suffix = _suffix(token, query)
    query = query[: len(query) - len(suffix)]
    return head + _mask_query(query) + suffix


def mask_url(text: str) -> str:
    """``text`` with every secret of a URL or connection string replaced by ``***``.

    Masks the password of every ``[scheme://]user:password@host`` (a URL without a scheme
    and a raw ``@`` in the password too), the value of every query parameter whose key is
    not a known-harmless setting (:data:`SAFE_QUERY_KEYS`; ``password``, ``passfile``,
    ``sslpassword``... and percent-encoded keys all masked), and every ``key=value`` whose
    key names a password, secret or token (libpq's ``password='a b'``, ``PGPASSWORD=x``).
    Works on a bare URL and on messages that quote one.
    """
    text = re.sub(r"\S+", lambda m: _mask_token(m[0]), text)
    return _SECRET_PAIR.sub(lambda m: f"{m[1]}{m[2]}{MASK}", text)
