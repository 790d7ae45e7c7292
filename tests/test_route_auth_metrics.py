"""Route-auth drops counted by kind and reason, and exported as
``mesh_route_auth_dropped_total`` by the metrics service (a TLS ``require`` mesh and a member,
``mallory``, that sends unsigned and mis-signed messages; fixtures of tests/test_route_auth.py).
"""

from __future__ import annotations

import base64
import re
from dataclasses import replace
from pathlib import Path

from test_metrics import scrape
import test_route_auth
from test_route_auth import (MALLORY, Pki, TlsPeer, _authenticator, _update, adverts,
                             route_auth, tls_sections)

from mesh.net import messages as m
from mesh.testing import Mesh, NodeProcess, free_port, wait_until
from mesh_builtin import route_auth as ra

METRIC = "mesh_route_auth_dropped_total"
pki = test_route_auth.pki  # the CA and node certificates (a module-scoped fixture)
nodes = test_route_auth.nodes  # node processes stopped at the end of a test


def sample(text: str, node: str, kind: str, reason: str) -> float | None:
    """The value of ``METRIC`` for those labels in ``text``, or None if absent."""
    match = re.search(rf'^{METRIC}\{{node="{node}",kind="{kind}",reason="{reason}"\}} (\S+)$',
                      text, re.MULTILINE)
    return None if match is None else float(match.group(1))


def test_drops_are_counted_by_kind_and_reason(pki: Pki, tmp_path: Path) -> None:
    node4 = _authenticator(pki, "node4", "require")
    other_ca = _update("node2")
    _authenticator(Pki(tmp_path, ("node2",)), "node2", "require").sign_update(other_ca)
    mallory = _authenticator(pki, MALLORY, "require")
    honest = _update("node2")
    _authenticator(pki, "node2", "require").sign_update(honest)
    forged = _update("node2")
    mallory.sign_update(forged)
    ad = m.ServiceAdvertisement("node2", "x", 1, 1, {"type": "x"})
    cases = [
        (_update("node2"), "unsigned"),
        (replace(honest, certificate=None), "incomplete"),
        (replace(honest, connections={MALLORY: 1.0}), "bad_signature"),
        (forged, "wrong_node_id"),
        (other_ca, "untrusted_certificate"),
        (replace(honest, signature="not base64!"), "malformed"),
        (replace(honest, certificate=base64.b64encode(b"x" * 64).decode()), "malformed"),
        (honest, None),  # taken
    ]
    for update, reason in cases:
        assert node4.accept_update(update, MALLORY) is (reason is None), reason
    assert not node4.accept_advertisement(ad, MALLORY)
    by = node4.stats()["dropped_by"]
    assert set(by) == set(ra.KINDS) and all(set(r) == set(ra.REASONS) for r in by.values())
    assert {(kind, reason): n for kind, reasons in by.items() for reason, n in reasons.items()
            if n} == {("update", "unsigned"): 1, ("update", "incomplete"): 1,
                      ("update", "bad_signature"): 1, ("update", "wrong_node_id"): 1,
                      ("update", "untrusted_certificate"): 1, ("update", "malformed"): 2,
                      ("advertisement", "unsigned"): 1}
    assert node4.stats()["dropped"] == 8


def test_metrics_count_route_auth_drops(pki: Pki, mesh_dir: Path,
                                        nodes: dict[str, NodeProcess]) -> None:
    metrics_port, port = free_port(), free_port()
    node1 = NodeProcess("node1", mesh_dir / "node1", [
        *tls_sections(pki, "node1"), route_auth("require"),
        {"tcp-listener": {"port": port, "bindaddr": "127.0.0.1", "tls": "srv"}},
        {"metrics": {"port": metrics_port}}], node_extra={"maxnodes": 3000})
    nodes["node1"] = node1
    node2 = NodeProcess("node2", mesh_dir / "node2", [
        *tls_sections(pki, "node2"), route_auth("require"),
        {"tcp-peer": {"address": f"127.0.0.1:{port}", "tls": "cli"}}])
    nodes["node2"] = node2
    for node in (node1, node2):
        node.start()
    wait_until(lambda: "node2" in node1.routes(), timeout=60, what="node1's route to node2")
    # the certificate cache follows node1's maxnodes
    assert node1.log_events("route_auth_enabled", certificate_cache=3000), node1.log_tail()
    text = scrape(metrics_port)[1]
    assert f"# TYPE {METRIC} counter" in text
    assert sample(text, "node1", "update", "unsigned") == 0  # every label, from the start

    mallory = TlsPeer(pki, port)
    try:
        assert mallory.join() == "node1"
        node2_update = mallory.next_update(lambda u: u.node_id == "node2", timeout=60)
        mallory.send(mallory.update({}, signed=False))  # its own update, unsigned
        mallory.send(mallory.update({MALLORY: 1.0}, node_id="node2",  # signed, not its to sign
                                    epoch=node2_update.update_epoch,
                                    sequence=node2_update.update_sequence + 1000))
        mallory.send(mallory.advert("evil", node_id="node2", signed=False))
        mallory.send(mallory.advert("marker"))  # behind the others: once taken, they were seen
        wait_until(lambda: (MALLORY, "marker") in adverts(node1), timeout=30,
                   what="mallory's marker advert at node1")
        text = scrape(metrics_port)[1]
        assert (sample(text, "node1", "update", "unsigned") or 0) >= 1, text
        assert (sample(text, "node1", "update", "wrong_node_id") or 0) >= 1, text
        assert (sample(text, "node1", "advertisement", "unsigned") or 0) >= 1, text
        assert sample(text, "node1", "update", "bad_signature") == 0
        labels = re.findall(rf'^{METRIC}\{{node="node1",kind="(\w+)",reason="(\w+)"\}}', text,
                            re.MULTILINE)
        assert {kind for kind, _ in labels} == set(ra.KINDS)
        assert {reason for _, reason in labels} == set(ra.REASONS)
    finally:
        mallory.close()


def test_no_route_auth_samples_while_it_is_off(mesh: Mesh) -> None:
    port = free_port()
    mesh.add("a", sections=[{"metrics": {"port": port}}])
    mesh.start()
    text = wait_until(lambda: scrape(port)[1], timeout=30, what="metrics of node a")
    assert f"# TYPE {METRIC} counter" in text
    assert f"{METRIC}{{" not in text
