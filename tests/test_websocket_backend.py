"""The websocket backend between real node processes on loopback.

near (ws-listener, path /mesh) ← mid (ws-peer with an extraheader; ws-listener on /) ← far
(ws-peer, work-command ``cat``): routes, ping, remote work and a 5 MB result stream over two
WebSocket links; what the listener refuses (other paths, foreign Origins, text frames); the
upgrade request a ws-peer sends; a killed end.
"""

from __future__ import annotations

import json
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.frames import CloseCode
from websockets.sync.client import connect
from websockets.sync.server import serve
from websockets.typing import Origin

from mesh.config.errors import SectionValueError
from backend_helpers import (CAT, check_5mib_round_trip, connected, receptorctl, submit_follow,
                             unexpected_errors)
from mesh.testing import Mesh, free_port, wait_until
from mesh_builtin.websocket import WsListenerConfig, WsPeerConfig, path_matches, \
    split_extraheader


def healthy(mesh: Mesh) -> None:
    """near still has its routes and reaches far."""
    near = mesh.nodes["near"]
    assert all(node.alive for node in mesh.nodes.values())
    assert near.routes() == {"mid": "mid", "far": "mid"}
    assert "Reply from far in" in receptorctl(near, "ping", "far", "--count", "1").decode()


@pytest.fixture(scope="module")
def line() -> Iterator[Mesh]:
    cluster = Mesh(Path(tempfile.mkdtemp(prefix="mesh-ws-")))
    near_port, mid_port = free_port(), free_port()
    cluster.ports.update(near=near_port, mid=mid_port)
    cluster.add("near", listen=False, sections=[
        {"ws-listener": {"port": near_port, "bindaddr": "127.0.0.1", "path": "/mesh"}}])
    cluster.add("mid", listen=False, sections=[
        {"ws-listener": {"port": mid_port, "bindaddr": "127.0.0.1"}},
        {"ws-peer": {"address": f"ws://127.0.0.1:{near_port}/mesh",
                     "extraheader": "X-Mesh-Token:abc:def"}}])
    cluster.add("far", listen=False, sections=[
        CAT, {"ws-peer": {"address": f"ws://127.0.0.1:{mid_port}/any/path"}}])
    try:
        cluster.start()
        cluster.wait_converged()
        cluster.wait_until_work_types("near", "far", ["cat"])
        yield cluster
        assert not unexpected_errors(cluster)
    finally:
        cluster.cleanup()


def test_routes_converge_and_ping_crosses_two_ws_links(line: Mesh) -> None:
    near = line.nodes["near"]
    assert near.routes() == {"mid": "mid", "far": "mid"}
    out = receptorctl(near, "ping", "far", "--count", "3", "--delay", "0.1").decode()
    assert out.count("Reply from far in") == 3


def test_remote_work_over_websocket(line: Mesh) -> None:
    assert submit_follow(line.nodes["near"], "far", "--payload-literal", "hi") == b"hi\n"


def test_5mb_result_stream_is_byte_exact(line: Mesh, tmp_path: Path) -> None:
    check_5mib_round_trip(line, tmp_path, "2 ws hops")


def test_listener_path_refuses_other_paths(line: Mesh) -> None:
    port = line.ports["near"]
    for path in ("/", "/other", "/mesh/", "/mesh/sub", "/meshy"):
        with pytest.raises(InvalidStatus) as info:
            connect(f"ws://127.0.0.1:{port}{path}", open_timeout=10)
        assert info.value.response.status_code == 404, path
    # The query string is not part of the path.  (mid's "/" is a subtree pattern: far's
    # link to it dials /any/path.)
    with connect(f"ws://127.0.0.1:{port}/mesh?x=1", open_timeout=10) as ws:
        assert ws.protocol.state.name == "OPEN"
    healthy(line)


def test_foreign_origin_is_refused(line: Mesh) -> None:
    port = line.ports["near"]
    with pytest.raises(InvalidStatus) as info:
        connect(f"ws://127.0.0.1:{port}/mesh", origin=Origin("http://evil.example"),
                open_timeout=10)
    assert info.value.response.status_code == 403
    with connect(f"ws://127.0.0.1:{port}/mesh", origin=Origin(f"http://127.0.0.1:{port}"),
                 open_timeout=10):
        pass
    healthy(line)


def test_text_frame_is_rejected_without_harm(line: Mesh) -> None:
    port = line.ports["near"]
    with connect(f"ws://127.0.0.1:{port}/mesh", open_timeout=10) as ws:
        ws.send("hello, I am text")
        received: list[str | bytes] = []  # the node's handshake may arrive before the close

        def closed() -> ConnectionClosed | None:
            try:
                received.append(ws.recv(timeout=1))
            except ConnectionClosed as exc:
                return exc
            except TimeoutError:
                pass
            return None

        close = wait_until(closed, timeout=15, interval=0, what="the node to close the link")
        assert all(isinstance(message, bytes) for message in received)
        assert close.rcvd is not None
        assert close.rcvd.code == CloseCode.UNSUPPORTED_DATA
    healthy(line)


def test_ws_peer_sends_origin_and_extraheader(mesh: Mesh) -> None:
    """A raw websockets server in the test sees the upgrade request of a real ws-peer."""
    requests: list[Any] = []
    seen = threading.Event()

    def process_request(connection: Any, request: Any) -> Any:
        requests.append(request)
        seen.set()
        return connection.respond(403, "no thanks\n")

    with serve(lambda ws: None, "127.0.0.1", 0, process_request=process_request) as server:
        port = server.socket.getsockname()[1]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        mesh.add("solo", listen=False, sections=[{"ws-peer": {
            "address": f"ws://127.0.0.1:{port}/some/path",
            "extraheader": "X-Mesh-Token:secret:with:colons"}}])
        mesh.start()
        assert seen.wait(30), "the ws-peer never dialled"
        server.shutdown()
        thread.join(10)
    request = requests[0]
    assert request.path == "/some/path"
    assert request.headers["X-Mesh-Token"] == "secret:with:colons"
    assert request.headers["Origin"] == f"http://127.0.0.1:{port}"
    assert request.headers["Host"] == f"127.0.0.1:{port}"
    assert mesh.nodes["solo"].alive  # a refused upgrade is a dial failure, not a crash
    assert not unexpected_errors(mesh)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_killed_end_drops_the_link_and_restart_relinks(mesh: Mesh, host: str) -> None:
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.create_server((host, 0), family=family) as probe:
            port = probe.getsockname()[1]
    except OSError as exc:
        pytest.skip(f"no {host}: {exc}")
    url_host = f"[{host}]" if ":" in host else host
    mesh.add("lis", listen=False, sections=[{"ws-listener": {"port": port, "bindaddr": host}}])
    mesh.add("dia", listen=False, sections=[{"ws-peer": {"address": f"ws://{url_host}:{port}"}}])
    mesh.start()
    mesh.wait_converged(timeout=30)
    lis, dia = mesh.nodes["lis"], mesh.nodes["dia"]
    dia.kill()
    wait_until(lambda: not connected(lis, "dia"), timeout=15, what="lis to drop dia")
    dia.start()
    mesh.wait_converged(timeout=60)
    lis.kill()
    wait_until(lambda: not connected(dia, "lis"), timeout=15, what="dia to drop lis")
    lis.start()
    mesh.wait_converged(timeout=60)
    assert "Reply from dia in" in receptorctl(lis, "ping", "dia", "--count", "1").decode()
    assert not unexpected_errors(mesh)


def make_pki(path: Path, names: tuple[str, ...]) -> Path:
    """A CA (``ca.crt``) and ``NAME.crt``/``NAME.key`` for each node ID, valid for 127.0.0.1."""
    from mesh_builtin import certs

    ca_cert, ca_key = certs.make_ca("ws test CA")
    certs.write_cert(path / "ca.crt", ca_cert)
    for name in names:
        key = certs.generate_key()
        req = certs.make_request(name, key, ip_addresses=["127.0.0.1"], node_ids=[name])
        certs.write_key(path / f"{name}.key", key)
        certs.write_cert(path / f"{name}.crt", certs.sign_request(req, ca_cert, ca_key))
    return path


def test_wss_link_with_tls_sections(mesh: Mesh) -> None:
    """wss:// between tls-server/tls-client sections; the certificate must name the peer."""
    pki = make_pki(mesh.workdir, ("secure", "client", "other"))
    port = free_port()

    def tls_client(name: str, owner: str, **extra: Any) -> dict[str, Any]:
        return {"tls-client": {"name": name, "cert": str(pki / f"{owner}.crt"),
                               "key": str(pki / f"{owner}.key"),
                               "rootcas": str(pki / "ca.crt"), **extra}}

    mesh.add("secure", listen=False, sections=[
        {"tls-server": {"name": "srv", "cert": str(pki / "secure.crt"),
                        "key": str(pki / "secure.key"), "requireclientcert": True,
                        "clientcas": str(pki / "ca.crt")}},
        {"ws-listener": {"port": port, "bindaddr": "127.0.0.1", "path": "/mesh", "tls": "srv"}}])
    mesh.add("client", listen=False, sections=[
        tls_client("cli", "client"),
        {"ws-peer": {"address": f"wss://127.0.0.1:{port}/mesh", "tls": "cli"}}])
    # "impostor" presents the certificate of "other": a valid chain, but not its node ID.
    mesh.add("impostor", listen=False, sections=[
        tls_client("cli", "other", skipreceptornamescheck=True),
        {"ws-peer": {"address": f"wss://127.0.0.1:{port}/mesh", "tls": "cli"}}])
    mesh.start()
    secure, client = mesh.nodes["secure"], mesh.nodes["client"]
    wait_until(lambda: connected(secure, "client") and connected(client, "secure"), timeout=30,
               what="wss link secure-client")
    wait_until(lambda: "client" in secure.routes(), timeout=30, what="route to client")
    assert "Reply from client in" in receptorctl(secure, "ping", "client", "--count",
                                                 "1").decode()
    # Plain ws:// to a wss listener fails the HTTP upgrade, harmlessly.
    with pytest.raises((WebSocketException, OSError)):
        connect(f"ws://127.0.0.1:{port}/mesh", open_timeout=5)

    def mismatches() -> list[dict[str, Any]]:
        found = []
        for line in secure.log_path.read_text(errors="replace").splitlines():
            if '"tls_node_id_mismatch"' in line:
                found.append(json.loads(line))
        return found

    refused = wait_until(mismatches, timeout=30, what="secure refusing the impostor")[0]
    assert refused["peer"] == "impostor" and refused["certificate_node_ids"] == ["other"]
    assert not connected(secure, "impostor")
    assert not unexpected_errors(mesh)


def test_config_validation() -> None:
    assert split_extraheader("Key:Value") == ("Key", "Value")
    assert split_extraheader("Key: spaced:x") == ("Key", " spaced:x")
    for bad in ("NoColon", ":value"):
        with pytest.raises(ValueError):
            split_extraheader(bad)
    assert path_matches("/", "/anything/below")
    assert path_matches("/a/", "/a/b") and not path_matches("/a/", "/a")
    assert path_matches("/a", "/a?q=1") and not path_matches("/a", "/a/b")
    WsPeerConfig("wss://example.com/mesh").validate()
    for address in ("http://example.com/", "example.com:80", "ws://"):
        with pytest.raises(SectionValueError):
            WsPeerConfig(address).validate()
    with pytest.raises(SectionValueError):
        WsPeerConfig("ws://h:1/", extraheader="novalue").validate()
    with pytest.raises(SectionValueError):
        WsListenerConfig(8080, path="mesh").validate()
