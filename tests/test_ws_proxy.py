"""ws-peer links through a real HTTP proxy: tinyproxy, started by the tests, CONNECT with TLS
(wss://) to the ws-listener through the tunnel.

The proxy comes from the ws-peer's ``proxy`` key (with basic auth) or, as in Receptor, from
``HTTPS_PROXY``/``NO_PROXY`` in the dialing node's environment.  Go never sends loopback
destinations to the environment's proxy, so the environment tests dial the host's own
non-loopback address.  The proxy's log (CONNECT level) shows which dials went through it.
The rules that pick the proxy are checked as pure functions at the end.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from websockets.uri import parse_uri

from backend_helpers import connected, receptorctl, unexpected_errors
from mesh.config.errors import SectionValueError
from mesh.testing import MESH_BIN, Mesh, NodeProcess, free_port, wait_until
from mesh_builtin.websocket import WsPeerConfig
from mesh_builtin.ws_proxy import check_proxy_url, choose_proxy, no_proxy_matches, redact_proxy

USER, PASSWORD = "meshuser", "S3cret-pw"


def tinyproxy_missing() -> str | None:
    """Why the proxy tests cannot run here, or None."""
    if shutil.which("tinyproxy") is None:
        return "tinyproxy not installed (apt-get install -y tinyproxy)"
    return None


# -- the proxy ---------------------------------------------------------------------------------


class Tinyproxy:
    """A tinyproxy in the foreground with its own config and log in ``workdir``."""

    def __init__(self, workdir: Path, *, connect_port: int, auth: bool) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.log_path = workdir / "tinyproxy.log"
        workdir.mkdir(parents=True, exist_ok=True)
        # ConnectPort: CONNECT only to the listener's port (without the line, any port).
        lines = [f"Port {self.port}", "Listen 127.0.0.1", "Timeout 60", "MaxClients 20",
                 "Allow 127.0.0.1", f'LogFile "{self.log_path}"', "LogLevel Connect",
                 f"ConnectPort {connect_port}"]
        if auth:
            lines.append(f"BasicAuth {USER} {PASSWORD}")
        self.config_path = workdir / "tinyproxy.conf"
        self.config_path.write_text("\n".join(lines) + "\n")
        with open(workdir / "tinyproxy.out", "ab") as out:
            self.proc = subprocess.Popen(["tinyproxy", "-d", "-c", str(self.config_path)],
                                         stdout=out, stderr=out, start_new_session=True)
        wait_until(self._accepting, timeout=15, what="tinyproxy to listen")

    def _accepting(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"tinyproxy exited with {self.proc.returncode}: "
                               f"{(self.workdir / 'tinyproxy.out').read_text(errors='replace')}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def connects(self) -> list[str]:
        """The ``host:port`` of every CONNECT request the proxy logged."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return [line.split("CONNECT ", 2)[2].split()[0] for line in text.splitlines()
                if line.count("CONNECT ") >= 2]  # "CONNECT ... Request (fd N): CONNECT h:p"

    def url(self, password: str | None = PASSWORD) -> str:
        userinfo = f"{USER}:{password}@" if password is not None else ""
        return f"http://{userinfo}127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)


@pytest.fixture
def start_proxy(mesh: Mesh) -> Iterator[Callable[..., Tinyproxy]]:
    """Start a tinyproxy (killed by pid at the end of the test)."""
    reason = tinyproxy_missing()
    if reason:
        pytest.skip(reason)
    started: list[Tinyproxy] = []

    def start(*, connect_port: int, auth: bool = False) -> Tinyproxy:
        proxy = Tinyproxy(mesh.workdir / f"proxy{len(started)}", connect_port=connect_port,
                          auth=auth)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


def host_address() -> str | None:
    """An IPv4 address of this host that is not loopback (None if it has none)."""
    siocgifaddr = 0x8915
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(probe.fileno(), siocgifaddr,
                                     struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue
            address = ipaddress.ip_address(packed[20:24])
            if not address.is_loopback:
                return str(address)
    return None


# -- the mesh: hub (wss ws-listener) ← spoke (ws-peer) -----------------------------------------


def make_pki(path: Path, address: str) -> Path:
    """A CA and certificates for hub and spoke, valid for ``address``."""
    from mesh_builtin import certs

    ca_cert, ca_key = certs.make_ca("ws proxy test CA")
    certs.write_cert(path / "ca.crt", ca_cert)
    for name in ("hub", "spoke"):
        key = certs.generate_key()
        req = certs.make_request(name, key, ip_addresses=[address], node_ids=[name])
        certs.write_key(path / f"{name}.key", key)
        certs.write_cert(path / f"{name}.crt", certs.sign_request(req, ca_cert, ca_key))
    return path


def add_hub(mesh: Mesh, address: str, port: int) -> NodeProcess:
    pki = make_pki(mesh.workdir, address)
    return mesh.add("hub", listen=False, sections=[
        {"tls-server": {"name": "srv", "cert": str(pki / "hub.crt"),
                        "key": str(pki / "hub.key"), "requireclientcert": True,
                        "clientcas": str(pki / "ca.crt")}},
        {"ws-listener": {"port": port, "bindaddr": address, "path": "/mesh", "tls": "srv"}}])


def add_spoke(mesh: Mesh, peers: list[dict[str, Any]],
              env: dict[str, str] | None = None) -> NodeProcess:
    pki = mesh.workdir
    return mesh.add("spoke", listen=False, env=env, sections=[
        {"tls-client": {"name": "cli", "cert": str(pki / "spoke.crt"),
                        "key": str(pki / "spoke.key"), "rootcas": str(pki / "ca.crt")}},
        *({"ws-peer": {"tls": "cli", **peer}} for peer in peers)])


def proxy_env(**variables: str) -> dict[str, str]:
    """The dialing node's proxy variables: these, and any other one this process has made
    empty (a node process inherits the test's environment)."""
    names = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy")
    return {**{name: "" for name in names if name in os.environ}, **variables}


def link_up_and_ping(mesh: Mesh) -> None:
    hub, spoke = mesh.nodes["hub"], mesh.nodes["spoke"]
    wait_until(lambda: connected(hub, "spoke") and connected(spoke, "hub"), timeout=60,
               what="the wss link hub-spoke")
    wait_until(lambda: "spoke" in hub.routes(), timeout=30, what="hub's route to spoke")
    assert "Reply from spoke in" in receptorctl(hub, "ping", "spoke", "--count", "1").decode()


def non_loopback() -> str:
    address = host_address()
    if address is None:
        pytest.skip("this host has no non-loopback IPv4 address (Go, and so ws-peer, never "
                    "sends loopback destinations to the environment's proxy)")
    return address


# -- through the proxy -------------------------------------------------------------------


def test_wss_through_the_proxy_key_with_basic_auth(mesh: Mesh, start_proxy: Callable) -> None:
    port = free_port()
    proxy = start_proxy(connect_port=port, auth=True)
    add_hub(mesh, "127.0.0.1", port)
    spoke = add_spoke(mesh, [{"address": f"wss://127.0.0.1:{port}/mesh", "proxy": proxy.url()}])
    mesh.start()
    link_up_and_ping(mesh)
    assert f"127.0.0.1:{port}" in proxy.connects()
    shown = f"http://{USER}:***@127.0.0.1:{proxy.port}"
    assert spoke.log_events("ws_peer_proxy", proxy=shown, source="proxy key")
    # The password is in no log and in no status reply.
    for node in mesh.nodes.values():
        assert PASSWORD not in node.log_path.read_text(errors="replace")
        assert PASSWORD not in json.dumps(node.status())
    assert not unexpected_errors(mesh)


def test_https_proxy_from_the_environment(mesh: Mesh, start_proxy: Callable) -> None:
    address, port = non_loopback(), free_port()
    proxy = start_proxy(connect_port=port)
    add_hub(mesh, address, port)
    # host:port without a scheme means http:// (Go's rule).
    spoke = add_spoke(mesh, [{"address": f"wss://{address}:{port}/mesh"}],
                      env=proxy_env(HTTPS_PROXY=f"127.0.0.1:{proxy.port}",
                                    NO_PROXY="example.invalid"))
    mesh.start()
    link_up_and_ping(mesh)
    assert f"{address}:{port}" in proxy.connects()
    assert spoke.log_events("ws_peer_proxy", proxy=f"http://127.0.0.1:{proxy.port}",
                            source="HTTPS_PROXY")
    assert not unexpected_errors(mesh)


def test_no_proxy_bypasses_the_environment_proxy(mesh: Mesh, start_proxy: Callable) -> None:
    address, port = non_loopback(), free_port()
    proxy = start_proxy(connect_port=port)
    add_hub(mesh, address, port)
    block = ipaddress.ip_network(f"{address}/24", strict=False)  # a CIDR entry, as Go allows
    env = proxy_env(HTTPS_PROXY=proxy.url(None), NO_PROXY=f"example.invalid,{block}")
    spoke = add_spoke(mesh, [{"address": f"wss://{address}:{port}/mesh"}], env=env)
    mesh.start()
    link_up_and_ping(mesh)
    assert proxy.connects() == []
    assert proxy.proc.poll() is None  # the proxy was there to be used
    assert spoke.log_events("ws_peer_direct", reason="NO_PROXY")
    assert not spoke.log_events("ws_peer_proxy")
    assert not unexpected_errors(mesh)


def test_proxy_failures_are_clear_and_the_peer_keeps_dialing(mesh: Mesh,
                                                              start_proxy: Callable) -> None:
    """A wrong password, a port the proxy does not CONNECT to and a proxy that is down: each
    dial fails with an error naming the proxy (not its password), and is tried again."""
    port, closed_port, dead_proxy_port = free_port(), free_port(), free_port()
    proxy = start_proxy(connect_port=port, auth=True)
    add_hub(mesh, "127.0.0.1", port)
    wrong = proxy.url("wrong-pw")
    spoke = add_spoke(mesh, [
        {"address": f"wss://127.0.0.1:{port}/mesh", "proxy": wrong},
        {"address": f"wss://127.0.0.1:{closed_port}/mesh", "proxy": proxy.url()},
        {"address": f"wss://127.0.0.1:{port}/other", "proxy": f"http://{USER}:pw2@127.0.0.1:"
                                                                f"{dead_proxy_port}"}])
    mesh.start()

    def failures(address: str) -> list[str]:
        return [event["error"] for event in spoke.log_events("backend_dial_failed", peer=address)]

    shown = f"proxy http://{USER}:***@127.0.0.1:{proxy.port}"
    wait_until(lambda: len(failures(f"wss://127.0.0.1:{port}/mesh")) >= 2, timeout=60,
               what="two failed dials with the wrong password")
    refused = failures(f"wss://127.0.0.1:{port}/mesh")
    # tinyproxy answers wrong credentials with 401 (no credentials: 407)
    assert all(error.startswith(f"{shown} refused CONNECT 127.0.0.1:{port}: HTTP 40")
               and "check the user and password" in error for error in refused), refused
    forbidden = wait_until(lambda: failures(f"wss://127.0.0.1:{closed_port}/mesh"), timeout=60,
                           what="a CONNECT the proxy forbids")
    assert f"{shown} refused CONNECT 127.0.0.1:{closed_port}: HTTP 403" in forbidden[0]
    down = wait_until(lambda: failures(f"wss://127.0.0.1:{port}/other"), timeout=60,
                      what="a dial to a proxy that is down")
    assert down[0] == (f"cannot reach proxy http://{USER}:***@127.0.0.1:{dead_proxy_port}: "
                       f"connection refused")
    assert spoke.alive and not connected(spoke, "hub") and not connected(mesh.nodes["hub"],
                                                                         "spoke")
    text = spoke.log_path.read_text(errors="replace")
    assert "wrong-pw" not in text and PASSWORD not in text and ":pw2@" not in text
    assert f"127.0.0.1:{port}" in proxy.connects()  # the dials did go to the proxy
    assert not unexpected_errors(mesh)


def test_a_bad_proxy_url_is_refused_at_config_load(tmp_path: Path) -> None:
    for good in ("direct", "http://proxy:3128", "https://u:p%40ss@proxy", "http://[::1]:3128/"):
        WsPeerConfig("wss://h:1/", proxy=good).validate()
    bad = {"socks5://proxy:1080": "not an http:// or https:// proxy URL",
           "proxy:3128": "not an http:// or https:// proxy URL",
           "DIRECT": "not an http:// or https:// proxy URL",
           "http://:3128": "names no proxy host",
           "http://proxy:99999": "bad port", "http://proxy:0": "bad port",
           "http://proxy:port": "bad port",
           "http://proxy:3128/path": "has a path",
           "http://user@proxy:3128": "a user without a password",
           "http://user:%ff@proxy:3128": "percent-encode"}
    for value, problem in bad.items():
        with pytest.raises(SectionValueError) as info:
            WsPeerConfig("wss://h:1/", proxy=value).validate()
        assert info.value.key == "proxy" and problem in info.value.message, value
        assert "http://user:password@host:port" in info.value.message
    # A node refuses such a config at start: file, section, key and the fix, no password.
    config = tmp_path / "bad.yml"
    config.write_text("- node:\n    id: bad\n- ws-peer:\n    address: wss://127.0.0.1:1/\n"
                      "    proxy: ftp://user:hunter2@proxy:21\n")
    result = subprocess.run([*MESH_BIN, "node", "-c", str(config)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0
    assert "ws-peer (item 2): key 'proxy': 'ftp://user:***@proxy:21' is not an http:// or " \
           "https:// proxy URL" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


# -- the rules that pick the proxy (pure) ------------------------------------------------


def test_environment_proxy_follows_go() -> None:
    wss, ws = parse_uri("wss://10.1.2.3:8443/"), parse_uri("ws://10.1.2.3:8080/")
    env = {"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:1",
           "http_proxy": "plain:3128"}
    assert choose_proxy("", wss, env).url == "http://upper:1"  # upper case first
    assert choose_proxy("", wss, {"https_proxy": "http://lower:1"}).url == "http://lower:1"
    # ws:// uses HTTP_PROXY only (never HTTPS_PROXY); host:port means http://
    assert choose_proxy("", ws, env).url == "http://plain:3128"
    assert choose_proxy("", ws, {"HTTPS_PROXY": "http://upper:1"}).url is None
    assert choose_proxy("", wss, {"HTTP_PROXY": "http://p:1"}).url is None
    # loopback and localhost are never proxied from the environment
    for host in ("127.0.0.1", "127.9.9.9", "[::1]", "localhost"):
        choice = choose_proxy("", parse_uri(f"wss://{host}:1/"), env)
        assert (choice.url, choice.source) == (None, "loopback"), host
    # NO_PROXY (upper case first), and the proxy key wins over everything
    assert choose_proxy("", wss, {**env, "NO_PROXY": "10.0.0.0/8"}).source == "NO_PROXY"
    assert choose_proxy("", wss, {**env, "no_proxy": "10.1.2.3"}).source == "no_proxy"
    assert choose_proxy("", wss, {**env, "NO_PROXY": "other", "no_proxy": "*"}).url
    explicit = choose_proxy("http://u:p@key:1", parse_uri("wss://127.0.0.1:1/"),
                            {"NO_PROXY": "*"})
    assert (explicit.url, explicit.source, explicit.shown) == \
        ("http://u:p@key:1", "proxy key", "http://u:***@key:1")
    assert "p@key" not in repr(explicit)
    assert choose_proxy("direct", wss, env).url is None


@pytest.mark.parametrize("entries, host, port, expected", [
    ("*", "any.host", 443, True),
    ("example.com", "example.com", 443, True),
    ("example.com", "a.b.example.com", 443, True),
    ("example.com", "notexample.com", 443, False),
    (".example.com", "example.com", 443, False),
    (".example.com", "a.example.com", 443, True),
    ("*.example.com", "a.example.com", 443, True),
    ("example.com:443", "example.com", 443, True),
    ("example.com:80", "example.com", 443, False),
    ("10.1.2.3", "10.1.2.3", 443, True),
    ("10.1.2.3:80", "10.1.2.3", 443, False),
    ("10.0.0.0/8", "10.200.0.1", 443, True),
    ("10.0.0.0/8", "11.0.0.1", 443, False),
    ("2001:db8::1", "2001:db8::1", 443, True),
    ("[2001:db8::1]:443", "[2001:db8::1]", 443, True),
    ("2001:db8::/32", "2001:db8:1::5", 443, True),
    (" Example.COM , other", "www.example.com", 443, True),
    ("", "example.com", 443, False),
])
def test_no_proxy_rules(entries: str, host: str, port: int, expected: bool) -> None:
    assert no_proxy_matches(entries, host, port) is expected


def test_redaction_and_url_checks() -> None:
    assert redact_proxy("http://u:p@ss@h:1") == "http://u:***@h:1"
    assert redact_proxy("http://h:1") == "http://h:1"
    assert redact_proxy("u:secret@h:1") == "u:***@h:1"
    assert redact_proxy("http://TOKEN@h:1") == "http://***@h:1"  # a user alone may be a token
    with pytest.raises(ValueError) as info:
        check_proxy_url("http://u:secret@h:1/x")
    assert "secret" not in str(info.value)
