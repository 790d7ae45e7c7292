"""Authenticated routing (``route-auth``): signed routing updates and adverts.

Unit tests check the canonical signed bytes, the certificate checks and the mode decisions;
process tests run TLS meshes with ``mode: require`` and ``mode: prefer`` and a malicious peer
that holds a valid certificate for its own node ID (``mallory``) and forges updates and adverts
for other nodes, and a duplicate-node-ID accusation.
"""

from __future__ import annotations

import base64
import queue
import random
import select
import socket
import ssl
import struct
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from cryptography.hazmat.primitives import serialization

from mesh.net import messages as m
from mesh.net.framing import FrameDecoder
from mesh.testing import NodeProcess, free_port, wait_until
from mesh_builtin import certs
from mesh_builtin import route_auth as ra
from raw_peer import Inbox

NODES = ("node1", "node2", "node3", "node4")
MALLORY = "mallory"


# -- certificates --------------------------------------------------------------------------


class Pki:
    """A CA (as ``mesh cert init`` makes it) and node-ID certificates signed by it."""

    def __init__(self, path: Path, names: tuple[str, ...]) -> None:
        self.dir = path
        self.ca_cert, self.ca_key = certs.make_ca("route-auth test CA")
        self.ca = str(path / "ca.crt")
        certs.write_cert(self.ca, self.ca_cert)
        for name in names:
            self.issue(name)

    def issue(self, name: str) -> None:
        key = certs.generate_key()
        req = certs.make_request(name, key, dns_names=["localhost"],
                                 ip_addresses=["127.0.0.1"], node_ids=[name])
        certs.write_key(self.key(name), key)
        certs.write_cert(self.cert(name), certs.sign_request(req, self.ca_cert, self.ca_key))

    def cert(self, name: str) -> str:
        return str(self.dir / f"{name}.crt")

    def key(self, name: str) -> str:
        return str(self.dir / f"{name}.key")

    def signer(self, name: str) -> ra.Signer:
        der = certs.load_cert(self.cert(name)).public_bytes(serialization.Encoding.DER)
        return ra.Signer(certs.load_key(self.key(name)), der)

    def checker(self) -> ra.CertificateChecker:
        return ra.CertificateChecker([self.ca_cert])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"), (*NODES, MALLORY))


# -- unit tests: signed bytes, certificates, modes -------------------------------------------


def _update(node: str = "node1", **extra: Any) -> m.RoutingUpdate:
    fields: dict[str, Any] = dict(node_id=node, update_id="AbCd1234", update_epoch=7 << 24,
                                  update_sequence=3, connections={"node2": 1.0, "b": 2.5},
                                  forwarding_node=node, max_datagram=60000, keepalive_ms=1200)
    fields.update(extra)
    return m.RoutingUpdate(**fields)


def _authenticator(pki: Pki, node: str, mode: str, clock: list[float] | None = None,
                   ) -> ra.RouteAuthenticator:
    now = clock if clock is not None else [0.0]
    return ra.RouteAuthenticator(node, mode, pki.signer(node), pki.checker(),
                                 ra.DropLog(node, clock=lambda: now[0]))


def _relayed(msg: bytes, via: str) -> bytes:
    """``msg`` as mesh relay ``via`` forwards it."""
    sender = m.decode_routing_update(msg[1:]).forwarding_node
    return m.reforward_routing_update(msg, sender, via)


def test_signed_bytes_leave_out_forwarding_node_and_signature_fields() -> None:
    signed = m.routing_update_signed_bytes(_update(signature="x", certificate="y"))
    assert signed.startswith(m.SIGNED_PREFIX + b"\x01{")
    assert b'"ForwardingNode":""' in signed and b"Mesh" + b"Sig" not in signed
    assert b'"Connections":{"b":2.5,"node2":1}' in signed  # sorted, Go number forms
    assert signed == m.routing_update_signed_bytes(_update(forwarding_node="relay"))
    assert signed != m.routing_update_signed_bytes(_update(update_sequence=4))
    assert signed != m.routing_update_signed_bytes(_update(suspected_duplicate=1))
    assert signed != m.routing_update_signed_bytes(_update(keepalive_ms=None))


def test_signature_fields_travel_through_encoding_and_mesh_relays(pki: Pki) -> None:
    auth = _authenticator(pki, "node1", "require")
    update = _update()
    auth.sign_update(update)
    msg = m.encode_routing_update(update)
    assert msg.endswith(b'"MeshCert":"' + update.certificate.encode() + b'"}')
    received = m.decode_routing_update(_relayed(_relayed(msg, "node2"), "node3")[1:])
    assert (received.signature, received.certificate) == (update.signature, update.certificate)
    verifier = _authenticator(pki, "node4", "require")
    assert verifier.accept_update(received, "node3")
    # a relay that decodes and re-encodes (ForwardingNode not in the usual form) keeps them too
    odd = msg.replace(b'"ForwardingNode":"node1"', b'"forwardingnode":"node1"')
    assert verifier.accept_update(m.decode_routing_update(_relayed(odd, "node2")[1:]), "node2")


def test_forgeries_and_tampering_are_refused(pki: Pki) -> None:
    node4 = _authenticator(pki, "node4", "require")
    mallory = _authenticator(pki, MALLORY, "require")
    honest = _update("node2")
    _authenticator(pki, "node2", "require").sign_update(honest)
    tampered = replace(honest, connections={MALLORY: 1.0})
    forged = _update("node2", connections={MALLORY: 1.0})
    mallory.sign_update(forged)
    accusation = _update("node3", suspected_duplicate=5 << 24)
    mallory.sign_update(accusation)
    garbage = replace(honest, certificate="not base64!")
    reasons = {}
    for name, update in (("tampered", tampered), ("forged", forged),
                         ("accusation", accusation), ("garbage", garbage)):
        with pytest.raises(ra.AuthFailure) as exc:
            node4.verify(update.node_id, update.signature, update.certificate,
                         m.routing_update_signed_bytes(update))
        reasons[name] = str(exc.value)
        assert not node4.accept_update(update, MALLORY)
    assert "does not verify" in reasons["tampered"]
    assert "for node ID(s) mallory, not node2" in reasons["forged"]
    assert "not node3" in reasons["accusation"]
    assert "base64" in reasons["garbage"]


def test_certificates_not_issued_by_the_ca_are_refused(pki: Pki, tmp_path: Path) -> None:
    other = Pki(tmp_path, ("node2",))
    update = _update("node2")
    ra.RouteAuthenticator("node2", "require", other.signer("node2"), other.checker()) \
        .sign_update(update)
    with pytest.raises(ra.AuthFailure, match="does not chain to the configured CA"):
        pki.checker().check(update.certificate or "")
    # a node's own (valid) key cannot act as a CA for another node ID
    key = certs.generate_key()
    req = certs.make_request("node3", key, node_ids=["node3"])
    leaf = certs.sign_request(req, certs.load_cert(pki.cert(MALLORY)),
                              certs.load_key(pki.key(MALLORY)))
    der = base64.b64encode(leaf.public_bytes(serialization.Encoding.DER)).decode()
    with pytest.raises(ra.AuthFailure, match="does not chain"):
        pki.checker().check(der)
    with pytest.raises(ra.AuthFailure, match="not valid now"):
        pki.checker().check(pki.signer("node1").certificate, now=time.time() + 400 * 86400)


def test_a_certificate_not_yet_valid_is_checked_again_later(pki: Pki) -> None:
    checker = pki.checker()
    cert = pki.signer("node1").certificate
    with pytest.raises(ra.NotValidNow):
        checker.check(cert, now=time.time() - 400 * 86400)  # a clock far behind the issuer's
    assert "node1" in checker.check(cert).node_ids  # not remembered as refused


def test_a_signed_advert_does_not_make_unsigned_updates_suspect(pki: Pki) -> None:
    """A Go relay passes adverts on as they are but re-encodes updates without signatures: in
    prefer, a node's signed advert must not make its (unsigned, relayed) updates refused."""
    prefer = _authenticator(pki, "node1", "prefer")
    ad = m.ServiceAdvertisement("node2", "control", time.time_ns(), 1, {"type": "x"}, None)
    _authenticator(pki, "node2", "prefer").sign_advertisement(ad)
    assert prefer.accept_advertisement(ad, "gorelay")
    assert prefer.accept_update(_update("node2"), "gorelay")


def test_a_message_that_cannot_be_encoded_again_is_dropped(pki: Pki) -> None:
    """Go time that decodes but is out of range in UTC: dropped, never an exception (which
    would end the link)."""
    raw = (b'{"NodeID":"node2","Service":"x","Time":"0000-01-01T00:00:00+01:00","ConnType":1,'
           b'"Tags":null,"WorkCommands":null,"MeshSig":"eA==","MeshCert":"eA=="}')
    ad = m.decode_service_advertisement(raw)
    assert not _authenticator(pki, "node1", "require").accept_advertisement(ad, "node3")


def test_adverts_are_signed_and_checked(pki: Pki) -> None:
    ad = m.ServiceAdvertisement("node2", "control", time.time_ns(), 1, {"type": "x"},
                                [m.WorkCommand("cat")])
    _authenticator(pki, "node2", "require").sign_advertisement(ad)
    received = m.decode_service_advertisement(m.encode_service_advertisement(ad)[1:])
    node4 = _authenticator(pki, "node4", "require")
    assert node4.accept_advertisement(received, "node3")
    assert not node4.accept_advertisement(replace(received, service="evil"), "node3")
    # an advert's signature does not pass for a routing update's
    update = _update("node2", signature=ad.signature, certificate=ad.certificate)
    assert not node4.accept_update(update, "node3")


def test_modes_and_rate_limited_drop_log(pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    clock = [100.0]
    prefer = _authenticator(pki, "node1", "prefer", clock)
    unsigned_go = _update("gonode")
    assert prefer.accept_update(unsigned_go, "gonode")  # never seen signing: accepted
    signed = _update("node2")
    _authenticator(pki, "node2", "prefer").sign_update(signed)
    # what a Go relay makes of it: re-encoded without the fields it does not know
    via_go = replace(m.decode_routing_update(m.encode_routing_update(signed)[1:]),
                     signature=None, certificate=None, max_datagram=None, keepalive_ms=None)
    assert prefer.accept_update(via_go, "gorelay")  # node2 not seen signing yet
    assert prefer.accept_update(signed, "node2")
    assert not prefer.accept_update(replace(via_go, update_id="later"), "gorelay")
    assert not prefer.accept_update(_update("node1"), "gorelay")  # unsigned copy of us
    require = _authenticator(pki, "node1", "require", clock)
    assert not require.accept_update(unsigned_go, "gonode")
    assert require.accept_update(signed, "node2")
    # one line per neighbour and interval; count says how many drops it stands for
    drops = ra.DropLog("node1", interval=10.0, clock=lambda: clock[0])
    assert drops.drop("p", "routing update", "x", "unsigned")
    assert not drops.drop("p", "routing update", "x", "unsigned")
    assert drops.drop("q", "routing update", "x", "unsigned")
    clock[0] += 10.0
    assert drops.drop("p", "advertisement", "y", "unsigned")
    assert drops.dropped == 4


# -- processes: a TLS mesh and a malicious peer ----------------------------------------------


def tls_sections(pki: Pki, name: str) -> list[dict[str, Any]]:
    return [{"tls-server": {"name": "srv", "cert": pki.cert(name), "key": pki.key(name),
                            "requireclientcert": True, "clientcas": pki.ca}},
            {"tls-client": {"name": "cli", "cert": pki.cert(name), "key": pki.key(name),
                            "rootcas": pki.ca}}]


def route_auth(mode: str, tls: str = "srv") -> dict[str, Any]:
    return {"route-auth": {"mode": mode, "tls": tls}}


@pytest.fixture
def nodes() -> Iterator[dict[str, NodeProcess]]:
    started: dict[str, NodeProcess] = {}
    yield started
    for node in started.values():
        node.signal(15)
    for node in started.values():
        node.stop()


def start_mesh(pki: Pki, mesh_dir: Path, nodes: dict[str, NodeProcess],
               modes: dict[str, str], links: list[tuple[str, str]]) -> dict[str, int]:
    """Start TLS nodes (``modes``: node → route-auth mode); ``links``: (dialer, listener)."""
    ports = {name: free_port() for name in modes}
    for name, mode in modes.items():
        sections = [*tls_sections(pki, name), route_auth(mode),
                    {"tcp-listener": {"port": ports[name], "bindaddr": "127.0.0.1",
                                      "tls": "srv"}}]
        sections += [{"tcp-peer": {"address": f"127.0.0.1:{ports[listener]}", "tls": "cli"}}
                     for dialer, listener in links if dialer == name]
        nodes[name] = NodeProcess(name, mesh_dir / name, sections)
        nodes[name].start(wait=False)
    for node in nodes.values():
        node.wait_ready()
    return ports


def routes_everywhere(nodes: dict[str, NodeProcess], names: set[str]) -> bool:
    return all(set(node.routes()) >= names - {node.name} for node in nodes.values())


class TlsPeer(Inbox):
    """A fake node on a TLS link to a tcp-listener, holding ``pki``'s certificate for
    ``node_id`` (valid for that ID, and only that one)."""

    def __init__(self, pki: Pki, port: int, node_id: str = MALLORY) -> None:
        super().__init__()
        self.node_id = node_id
        self.signer = pki.signer(node_id)
        self.epoch = int(time.time() * (1 << 24))
        self.sequence = 0
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(pki.ca)
        ctx.load_cert_chain(pki.cert(node_id), pki.key(node_id))
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = ctx.wrap_socket(raw)
        self.sock.settimeout(None)
        self.outbox: queue.Queue[bytes] = queue.Queue()
        self.hello = b""
        self._threads = [threading.Thread(target=self._io, daemon=True),
                         threading.Thread(target=self._refresh, daemon=True)]
        for thread in self._threads:
            thread.start()

    def _io(self) -> None:
        """All reads and writes of the TLS socket, in this one thread: an SSL object must
        not be read and written by two threads at once."""
        decoder = FrameDecoder()
        try:
            while not self.eof.is_set():
                while not self.outbox.empty():
                    self.sock.sendall(self.outbox.get_nowait())
                if not self.sock.pending() and \
                        not select.select([self.sock], [], [], 0.05)[0]:
                    continue
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                for message in decoder.feed(chunk):
                    self.messages.put(message)
        except (OSError, ValueError):  # ValueError: the socket was closed under us
            pass
        self.eof.set()

    def _refresh(self) -> None:
        """Go-style liveness: our update again every few seconds (the link idles out at 21)."""
        while not self.eof.wait(4.0):
            if self.hello:
                try:
                    self.send(self.hello)
                except OSError:
                    return

    def send(self, message: bytes) -> None:
        if self.eof.is_set():
            raise ConnectionError("the link is closed")
        self.outbox.put(struct.pack("<H", len(message)) + message)

    def update(self, connections: dict[str, float], *, node_id: str | None = None,
               epoch: int | None = None, sequence: int | None = None,
               suspected_duplicate: int = 0, signed: bool = True) -> bytes:
        self.sequence += 1
        update = m.RoutingUpdate(
            node_id=node_id or self.node_id, update_id=f"{random.getrandbits(40):010x}"[:8],
            update_epoch=self.epoch if epoch is None else epoch,
            update_sequence=self.sequence if sequence is None else sequence,
            connections=connections, forwarding_node=self.node_id,
            suspected_duplicate=suspected_duplicate)
        if signed:
            update.certificate = self.signer.certificate
            update.signature = self.signer.signature(m.routing_update_signed_bytes(update))
        return m.encode_routing_update(update)

    def advert(self, service: str, *, node_id: str | None = None, signed: bool = True) -> bytes:
        ad = m.ServiceAdvertisement(node_id or self.node_id, service, time.time_ns(), 1,
                                    {"type": "probe"})
        if signed:
            ad.certificate = self.signer.certificate
            ad.signature = self.signer.signature(m.advertisement_signed_bytes(ad))
        return m.encode_service_advertisement(ad)

    def next_update(self, predicate: Callable[[m.RoutingUpdate], bool],
                    timeout: float = 30.0) -> m.RoutingUpdate:
        """The first routing update received (and not taken yet) matching ``predicate``,
        within ``timeout`` s."""
        def matching(message: bytes) -> bool:
            return message[:1] == b"\x01" and predicate(m.decode_routing_update(message[1:]))

        return m.decode_routing_update(self.next_message(matching, timeout,
                                                         "such routing update")[1:])

    def join(self, timeout: float = 30.0) -> str:
        """The link handshake: our signed update, then one listing the target."""
        self.send(self.update({}))
        target = self.next_update(lambda u: u.node_id == u.forwarding_node and
                                  self.node_id in u.connections, timeout)
        self.hello = self.update({target.node_id: target.connections[self.node_id]})
        self.send(self.hello)
        return target.node_id

    def close(self) -> None:
        self.hello = b""
        self.eof.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self.sock.close()


def snapshot(nodes: dict[str, NodeProcess]) -> dict[str, Any]:
    """What each node believes about the mesh (routes and every node's links)."""
    out = {}
    for name, node in nodes.items():
        status = node.status()
        out[name] = {"routes": status["RoutingTable"],
                     "known": status["KnownConnectionCosts"]}
    return out


#: How long what the nodes know must stay the same before a test takes it as settled: a
#: change is followed by a route recomputation within 0.1 s (more on a loaded machine).
QUIET = 1.0


def settled(nodes: dict[str, NodeProcess],
            links: list[tuple[str, str]]) -> Callable[[], dict[str, Any] | None]:
    """A condition for ``wait_until``: the :func:`snapshot` once every node knows the same
    links of every node, the configured ``links`` (dialer, listener) among them, and nothing
    changed for :data:`QUIET` seconds (routes recomputed after the last change), else None."""
    last: dict[str, Any] = {"shot": None, "since": 0.0}

    def check() -> dict[str, Any] | None:
        shot = snapshot(nodes)
        known = [view["known"] for view in shot.values()]
        graph = known[0]
        if not all(other == graph for other in known) or not all(
                b in graph.get(a, {}) and a in graph.get(b, {}) for a, b in links):
            last["shot"] = None
            return None
        if shot != last["shot"]:
            last["shot"], last["since"] = shot, time.monotonic()
            return None
        return shot if time.monotonic() - last["since"] >= QUIET else None

    return check


def adverts(node: NodeProcess) -> set[tuple[str, str]]:
    return {(ad["NodeID"], ad["Service"]) for ad in node.status()["Advertisements"]}


def duplicate_events(node: NodeProcess) -> list[dict[str, Any]]:
    return [e for e in node.log_events() if str(e.get("event", "")).startswith("duplicate_node")]


def test_require_mesh_drops_a_valid_peers_forgeries(pki: Pki, mesh_dir: Path,
                                                    nodes: dict[str, NodeProcess]) -> None:
    links = [("node2", "node1"), ("node3", "node2"), ("node4", "node3"), ("node4", "node1")]
    ports = start_mesh(pki, mesh_dir, nodes, {name: "require" for name in NODES}, links)
    wait_until(lambda: routes_everywhere(nodes, set(NODES)), timeout=60,
               what="4 TLS nodes converged")
    assert all(node.log_events("route_auth_enabled", mode="require") for node in nodes.values())

    mallory = TlsPeer(pki, ports["node1"])
    try:
        assert mallory.join() == "node1"
        # mallory's own, validly signed update is taken: it is a node like any other
        wait_until(lambda: MALLORY in nodes["node3"].routes(), timeout=30,
                   what="node3's route to mallory")
        mallory.send(mallory.advert("hello"))
        wait_until(lambda: all((MALLORY, "hello") in adverts(n) for n in nodes.values()),
                   timeout=30, what="mallory's advert everywhere")
        before = wait_until(settled(nodes, links), timeout=30,
                            what="the mesh settled (the same links everywhere, unchanged for QUIET s)")
        node2 = mallory.next_update(lambda u: u.node_id == "node2")
        node3 = mallory.next_update(lambda u: u.node_id == "node3")
        assert node2.signature and node2.certificate  # node1 relays what node2 signed

        far_future = node2.update_sequence + 1000
        for signed in (True, False):
            # node2 "has no links but one to mallory", signed by mallory or not at all
            mallory.send(mallory.update({MALLORY: 1.0}, node_id="node2", epoch=node2.update_epoch,
                                        sequence=far_future, signed=signed))
            # node3 is accused of being a duplicate (its own update stops the newer one)
            mallory.send(mallory.update({}, node_id="node3", epoch=node3.update_epoch + 1,
                                        suspected_duplicate=node3.update_epoch, signed=signed))
            mallory.send(mallory.advert("evil", node_id="node2", signed=signed))
        # node2's genuine update, tampered with
        tampered = replace(node2, update_id="tamper01", connections={MALLORY: 1.0},
                           update_sequence=far_future, forwarding_node=MALLORY)
        mallory.send(m.encode_routing_update(tampered))
        # a marker behind the forgeries: once every node has it, they had theirs
        mallory.send(mallory.advert("marker"))
        wait_until(lambda: all((MALLORY, "marker") in adverts(n) for n in nodes.values()),
                   timeout=30, what="mallory's marker advert everywhere")

        assert snapshot(nodes) == before
        assert all(("node2", "evil") not in adverts(n) for n in nodes.values())
        drops = nodes["node1"].log_events("route_auth_dropped", peer=MALLORY)
        assert drops, nodes["node1"].log_tail()
        assert drops[0]["origin"] in ("node2", "node3") and drops[0]["count"] >= 1
        assert "mallory" in drops[0]["reason"] or "verify" in drops[0]["reason"]
        for name in ("node2", "node3", "node4"):  # nothing forged got past node1
            assert not nodes[name].log_events("route_auth_dropped"), name
        assert all(node.alive for node in nodes.values())
        assert not any(duplicate_events(node) for node in nodes.values())
    finally:
        mallory.close()


def test_prefer_takes_unsigned_nodes_but_not_unsigned_copies_of_signing_ones(
        pki: Pki, mesh_dir: Path, nodes: dict[str, NodeProcess]) -> None:
    # node3 does not sign (mode off: like a Go node, or a node not yet switched on)
    links = [("node2", "node1"), ("node3", "node1")]
    ports = start_mesh(pki, mesh_dir, nodes,
                       {"node1": "prefer", "node2": "prefer", "node3": "off"}, links)
    wait_until(lambda: routes_everywhere(nodes, {"node1", "node2", "node3"}), timeout=60,
               what="mixed prefer/off mesh converged")
    mallory = TlsPeer(pki, ports["node1"])
    try:
        assert mallory.join() == "node1"
        wait_until(lambda: MALLORY in nodes["node2"].routes(), timeout=30,
                   what="node2's route to mallory")
        before = wait_until(settled(nodes, links), timeout=30,
                            what="the mesh settled (the same links everywhere, unchanged for QUIET s)")
        node2 = mallory.next_update(lambda u: u.node_id == "node2")
        mallory.send(mallory.update({MALLORY: 1.0}, node_id="node2", epoch=node2.update_epoch,
                                    sequence=node2.update_sequence + 1000, signed=False))
        mallory.send(mallory.advert("marker"))
        wait_until(lambda: all((MALLORY, "marker") in adverts(n) for n in nodes.values()),
                   timeout=30, what="mallory's marker advert everywhere")
        assert snapshot(nodes) == before
        drop = wait_until(lambda: nodes["node1"].log_events("route_auth_dropped",
                                                             peer=MALLORY), timeout=10)[0]
        assert drop["origin"] == "node2" and "node that signs" in drop["reason"]
    finally:
        mallory.close()


@pytest.mark.parametrize("section, extra, expected", [
    ({"mode": "require", "tls": "nope"}, [],
     "route-auth (item 6): key 'tls': no tls-server or tls-client section is named 'nope'"),
    ({"mode": "require"}, [], "key 'tls': mode require needs tls"),
    ({"mode": "maybe", "tls": "srv"}, [], "key 'mode': 'maybe' is not a mode"),
    ({"mode": "prefer", "tls": "bare"}, [{"tls-client": {"name": "bare"}}],
     "tls-client 'bare' has no cert and key"),
])
def test_config_errors_name_the_key_and_the_fix(pki: Pki, mesh_dir: Path,
                                               nodes: dict[str, NodeProcess],
                                               section: dict[str, Any], extra: list[Any],
                                               expected: str) -> None:
    node = NodeProcess("node1", mesh_dir / "node1",
                       [*tls_sections(pki, "node1"), *extra, {"route-auth": section}])
    nodes["node1"] = node
    node.start(wait=False)
    assert node.proc is not None and node.proc.wait(timeout=30) == 2
    text = node.log_path.read_text()
    assert expected in text, text
    assert str(node.config_path) in text


# -- certificate caches sized by maxnodes ----------------------------------------------------


def _node_certs(pki: Pki, count: int, prefix: str = "n") -> list[str]:
    """``count`` node-ID certificates from ``pki``'s CA (base64 DER, one shared key: fast)."""
    key = certs.generate_key()
    return [base64.b64encode(certs.sign_request(
                certs.make_request(f"{prefix}{i}", key, node_ids=[f"{prefix}{i}"]),
                pki.ca_cert, pki.ca_key).public_bytes(serialization.Encoding.DER)).decode()
            for i in range(count)]


def test_certificate_caches_hold_one_certificate_per_allowed_node(
        pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    # the default node (maxnodes 10000) keeps every node's certificate of a mesh at its cap
    assert ra.CertificateChecker([pki.ca_cert]).limit == 10000
    assert ra.cache_size(50000) == 50000 and ra.cache_size(3) == ra.MIN_CACHE
    monkeypatch.setattr(ra, "MIN_CACHE", 1)  # small caches, to see them fill
    checker = ra.CertificateChecker([pki.ca_cert], max_nodes=4)
    cached = _node_certs(pki, 5)
    for cert in cached[:4] * 3:  # four signing nodes, each heard again and again
        checker.check(cert)
    assert checker.stats() == {"trusted": 4, "refused": 0, "limit": 4, "chain_checks": 4}
    checker.check(cached[4])  # a fifth evicts the least recently used
    checker.check(cached[0])
    assert checker.stats()["trusted"] == 4 and checker.stats()["chain_checks"] == 6
    # refusals are bounded alike, whatever a peer sends (each a cheap digest and reason)
    for junk in range(10):
        with pytest.raises(ra.AuthFailure) as exc:
            checker.check(base64.b64encode(b"junk %d" % junk * 500).decode())
        assert exc.value.reason == "malformed"
    assert checker.stats()["refused"] == 4
    with pytest.raises(ra.AuthFailure, match="not a base64 DER"):
        checker.check(base64.b64encode(b"junk 9" * 500).decode())  # remembered: no check
    assert checker.stats()["chain_checks"] == 6 + 10
