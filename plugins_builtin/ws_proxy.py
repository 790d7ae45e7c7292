"""How a ``ws-peer`` reaches its listener through an HTTP proxy (CONNECT).

The proxy comes from the peer's ``proxy`` key or, like Receptor (Go's
``http.ProxyFromEnvironment``), from ``HTTPS_PROXY``/``HTTP_PROXY`` and ``NO_PROXY``
(:func:`choose_proxy`); ``websockets`` then dials through it.  Pure functions, apart from
the dial errors they describe: passwords never reach a log or an error text.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import urlsplit

from websockets.exceptions import (InvalidProxy, InvalidProxyStatus, ProxyError,
                                   WebSocketException)
from websockets.proxy import parse_proxy
from websockets.uri import WebSocketURI

from mesh.net.backend import os_error_reason

#: ``proxy`` value for "never a proxy", even when the environment names one.
DIRECT = "direct"
#: Variables naming the proxy for ws:// and wss:// in Go's order (upper case wins).
_PROXY_VARIABLES = {False: ("HTTP_PROXY", "http_proxy"), True: ("HTTPS_PROXY", "https_proxy")}
_NO_PROXY_VARIABLES = ("NO_PROXY", "no_proxy")
#: Why a proxy answered CONNECT with an error status, and what to check.
_PROXY_STATUS_HINTS = {
    401: "the proxy refused the credentials: check the user and password of the proxy URL",
    407: "the proxy wants credentials: check the user and password of the proxy URL",
    403: "the proxy forbids this destination: check its ACL and the ports it allows CONNECT to",
}


def redact_proxy(url: str) -> str:
    """``url`` with the password of its user information shown as ``***`` (logs, errors); a
    user without a password (it may be a token) is hidden whole."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    userinfo, at, hostport = rest.rpartition("@")  # the last "@": a password may hold one
    if not at:
        return url
    if ":" not in userinfo:  # a user alone may be a token
        return f"{scheme}{sep}***@{hostport}"
    return f"{scheme}{sep}{userinfo.partition(':')[0]}:***@{hostport}"


def check_proxy_url(url: str) -> None:
    """Raise :class:`ValueError` unless ``url`` is ``http(s)://[user:password@]host[:port]``;
    the message shows the URL without its password."""
    shown = repr(redact_proxy(url))
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{shown} is not an http:// or https:// proxy URL")
    if not parts.hostname:
        raise ValueError(f"{shown} names no proxy host")
    try:
        port = parts.port  # None when absent: the scheme's default
    except ValueError:  # not a number, or above 65535
        port = 0
    if port == 0:
        raise ValueError(f"{shown} has a bad port (1-65535)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{shown} has a path, query or fragment; a proxy URL has none")
    if parts.username is not None and parts.password is None:
        raise ValueError(f"{shown} has a user without a password (basic auth needs both)")
    try:
        parse_proxy(url)  # what the dial will do with it
    except (InvalidProxy, ValueError):  # e.g. %-escapes in the password that are not UTF-8
        raise ValueError(f"{shown} is not a valid proxy URL (percent-encode the special "
                         f"characters of the user and password)") from None


@dataclass(frozen=True)
class ProxyChoice:
    """How a ws-peer reaches its listener: through the proxy at ``url``, or directly (None).

    ``source`` says why: ``proxy key``, the variable that named the proxy (``HTTPS_PROXY``),
    or, for a direct dial, what bypassed the environment's proxy (``NO_PROXY``, ``loopback``,
    ``proxy: direct``); empty when nothing named a proxy.
    """

    url: str | None = field(default=None, repr=False)  # may hold a password
    source: str = ""

    @property
    def shown(self) -> str:
        """The proxy URL without its password, for logs and errors."""
        return redact_proxy(self.url) if self.url else DIRECT


def choose_proxy(setting: str, uri: WebSocketURI, environ: Mapping[str, str]) -> ProxyChoice:
    """The proxy for a ws-peer dialing ``uri`` with ``proxy: setting``.

    An explicit URL is always used; ``direct`` never uses one.  Empty ``setting``: the
    environment as Receptor reads it (Go's ``http.ProxyFromEnvironment``): ``HTTPS_PROXY`` for
    wss://, ``HTTP_PROXY`` for ws:// (upper case before lower case; ``host:port`` means
    ``http://host:port``), except for ``localhost``, loopback addresses and hosts that
    ``NO_PROXY`` lists (:func:`no_proxy_matches`).
    """
    if setting == DIRECT:
        return ProxyChoice(None, "proxy: direct")
    if setting:
        return ProxyChoice(setting, "proxy key")
    name, value = _first_set(environ, _PROXY_VARIABLES[uri.secure])
    if not value:
        return ProxyChoice()
    if _is_loopback(uri.host):
        return ProxyChoice(None, "loopback")
    no_proxy_name, no_proxy = _first_set(environ, _NO_PROXY_VARIABLES)
    if no_proxy_matches(no_proxy, uri.host, uri.port):
        return ProxyChoice(None, no_proxy_name)
    return ProxyChoice(value if "://" in value else f"http://{value}", name)


def _first_set(environ: Mapping[str, str], names: tuple[str, ...]) -> tuple[str, str]:
    for name in names:
        if environ.get(name):
            return name, environ[name]
    return "", ""


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _is_loopback(host: str) -> bool:
    ip = _ip(host)
    return host.lower() == "localhost" or (ip is not None and ip.is_loopback)


def no_proxy_matches(no_proxy: str, host: str, port: int) -> bool:
    """True if the ``NO_PROXY`` list covers ``host:port``, by Go's rules: comma-separated
    ``*`` (everything), IP addresses, CIDR blocks (``10.0.0.0/8``) and domain names, the last
    two optionally with ``:port``; ``example.com`` also covers its subdomains, ``.example.com``
    (or ``*.example.com``) only them."""
    host = host.lower().strip("[]")
    ip = _ip(host)
    for entry in no_proxy.lower().split(","):
        entry = entry.strip()
        if entry == "*":
            return True
        if "/" in entry:
            try:
                if ip is not None and ip in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        name, entry_port = _split_no_proxy_entry(entry)
        if not name or entry_port not in ("", str(port)):
            continue
        if _ip(name) is not None:
            if ip is not None and ip == _ip(name):
                return True
            continue
        if name.startswith("*."):
            name = name[1:]
        if host.endswith(name if name.startswith(".") else f".{name}") or host == name:
            return True
    return False


def _split_no_proxy_entry(entry: str) -> tuple[str, str]:
    """``host[:port]`` or ``[v6][:port]`` → (host, port or "")."""
    if entry.startswith("["):
        name, _, rest = entry[1:].partition("]")
        return name, rest[1:] if rest.startswith(":") else ""
    if entry.count(":") == 1:
        name, _, port = entry.partition(":")
        return name, port
    return entry, ""


def proxy_failure(exc: WebSocketException | OSError, choice: ProxyChoice, target: str,
                  open_timeout: float) -> str:
    """Why a dial to ``target`` through the proxy of ``choice`` failed, naming the proxy
    (never its password)."""
    proxy = f"proxy {choice.shown}"
    if isinstance(exc, InvalidProxyStatus):
        status = exc.response.status_code
        hint = _PROXY_STATUS_HINTS.get(status) or (
            f"the proxy could not reach {target}: is the ws-listener up and reachable "
            f"from the proxy?" if status >= 500 else "")
        return (f"{proxy} refused CONNECT {target}: HTTP {status} "
                f"{exc.response.reason_phrase}" + (f" ({hint})" if hint else ""))
    if isinstance(exc, InvalidProxy):  # its text would show the password
        return f"{proxy} is not usable: {exc.msg}"
    if isinstance(exc, ProxyError):
        return f"{proxy} did not answer CONNECT {target} with a valid HTTP response"
    if isinstance(exc, ssl.SSLError):
        return f"TLS with {target} through {proxy} failed: {exc}"
    if isinstance(exc, TimeoutError):
        return f"no connection to {target} through {proxy} within {open_timeout:g} s"
    if isinstance(exc, (ConnectionRefusedError, socket.gaierror)):
        # only the proxy is dialed: the proxy dials the listener
        return f"cannot reach {proxy}: {os_error_reason(exc)}"
    if isinstance(exc, OSError):
        return f"dialing {target} through {proxy}: {os_error_reason(exc)}"
    return f"{type(exc).__name__}: {exc} (through {proxy})"
