"""Who may talk to the dashboard: a WSGI middleware that checks the ``Host`` header against
an allow-list and refuses cross-origin writes.

optuna-dashboard has no login, and its JSON API writes (``POST /api/studies`` creates a
study, ``DELETE /api/studies/N`` deletes one with its trials and artifacts). Listening on
127.0.0.1 keeps other machines out, but not a web page the user opens: by DNS rebinding
(its name re-pointed at 127.0.0.1) it reaches the port as a same-origin page and sends
``Host: attacker.example``. So a request is served only when its ``Host`` names this
server: an IP address (a rebinding page always has a name of its own), ``localhost``, the
``--host`` it listens on, this machine's name when it listens on every interface, or a name
given with ``--allow-host`` (the name a team's proxy forwards). A write (any method but
GET, HEAD, OPTIONS) from a browser must also come from the dashboard's own page: its
``Origin`` names the same host and port as its ``Host``, or an ``--allow-host`` name.
Clients that send no ``Origin`` (curl, scripts) are no cross-site threat and pass.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
WILDCARDS = frozenset({"", "0.0.0.0", "::"})
"""``--host`` values that listen on every interface."""

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def split_host(value: str) -> tuple[str, int | None]:
    """``(hostname, port)`` of a ``Host`` header value (``[::1]:8080``, ``name``), the
    name lowercased without a trailing dot; port None when absent or not a number."""
    value = value.strip().lower()
    if value.startswith("["):  # [IPv6]:port
        name, _, rest = value[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif value.count(":") == 1:
        name, _, port_text = value.partition(":")
    else:  # a bare IPv6 address or a bare name
        name, port_text = value, ""
    return name.rstrip("."), int(port_text) if port_text.isdigit() else None


def allowed_names(host: str, extra: Sequence[str] = ()) -> frozenset[str]:
    """The host names (besides IP addresses) a server listening on ``host`` answers to:
    ``localhost``, ``host`` itself, this machine's names when ``host`` is a wildcard, and
    ``extra`` (``--allow-host``)."""
    names = {"localhost", host.lower().strip("[]").rstrip(".")}
    if host in WILDCARDS:
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    names |= {n.lower().rstrip(".") for n in extra}
    return frozenset(n for n in names if n and not _is_ip(n))


class HostCheck:
    """WSGI middleware around optuna-dashboard's app: requests whose ``Host`` is not
    allowed, and browser writes from another origin, get 403 and never reach the app."""

    def __init__(self, app: WsgiApp, names: frozenset[str], trusted: Sequence[str] = ()):
        self.app = app
        self.names = names
        self.trusted = frozenset(n.lower().rstrip(".") for n in trusted)

    def _host_ok(self, name: str) -> bool:
        return _is_ip(name) or name in self.names or name.endswith(".localhost")

    def refusal(self, environ: dict[str, Any]) -> str | None:
        """Why ``environ``'s request is refused, or None when it may pass."""
        host_header = str(environ.get("HTTP_HOST") or environ.get("SERVER_NAME") or "")
        name, port = split_host(host_header)
        if not self._host_ok(name):
            return (
                f"Host {host_header!r} is not allowed: lrtune dashboard answers to its own "
                "address only; start it with --allow-host NAME to serve NAME (a proxy)"
            )
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        if method in _SAFE_METHODS:
            return None
        origin = environ.get("HTTP_ORIGIN")
        if origin is None:
            # No Origin: not a browser, or an old one; a browser's cross-site fetch still
            # says where it comes from in Sec-Fetch-Site.
            site = str(environ.get("HTTP_SEC_FETCH_SITE", "")).lower()
            return None if site in ("", "same-origin", "none") else f"cross-site {method}"
        parts = urlsplit(str(origin).strip().lower())
        oname = (parts.hostname or "").rstrip(".")
        try:
            oport = parts.port or _DEFAULT_PORTS.get(parts.scheme)
        except ValueError:  # a port that is not a number
            oport = None
        # A Host without a port came through a proxy on 80 or 443 (its scheme is unknown).
        same = oname == name and (oport == port or (port is None and oport in (80, 443)))
        if same or oname in self.trusted:
            return None
        return f"{method} from origin {origin!r} refused: writes come from the dashboard's page"

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        reason = self.refusal(environ)
        if reason is None:
            return self.app(environ, start_response)
        body = f"403 Forbidden: {reason}\n".encode()
        start_response(
            "403 Forbidden",
            [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
        )
        return _once(body)


def _once(body: bytes) -> Iterator[bytes]:
    yield body
