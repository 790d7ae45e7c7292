"""TLS on links, on the control service and on mesh services, with real node processes.

Certificates come from ``mesh_builtin.certs`` (the code behind ``mesh cert``): one CA, and
leaf certificates naming node IDs, ``localhost`` and ``127.0.0.1``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
from cryptography.hazmat.primitives import hashes, serialization

from mesh.testing import NodeProcess, free_port, wait_until
from mesh_builtin import certs

RECEPTORCTL = str(Path(sys.executable).with_name("receptorctl"))


# -- certificates --------------------------------------------------------------------------


@dataclass
class Pki:
    dir: Path
    ca: str

    def cert(self, name: str) -> str:
        return str(self.dir / f"{name}.crt")

    def key(self, name: str) -> str:
        return str(self.dir / f"{name}.key")

    def sha256(self, name: str) -> str:
        cert = certs.load_cert(self.cert(name))
        return cert.fingerprint(hashes.SHA256()).hex(":")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA and certificates for nodes alpha, beta, gamma and for an operator (no node ID)."""
    path = tmp_path_factory.mktemp("pki")
    ca_cert, ca_key = certs.make_ca("mesh test CA")
    certs.write_cert(path / "ca.crt", ca_cert)
    for name in ("alpha", "beta", "gamma"):
        key = certs.generate_key()
        req = certs.make_request(name, key, dns_names=["localhost"],
                                 ip_addresses=["127.0.0.1"], node_ids=[name])
        certs.write_key(path / f"{name}.key", key)
        certs.write_cert(path / f"{name}.crt", certs.sign_request(req, ca_cert, ca_key))
    key = certs.generate_key()
    req = certs.make_request("operator", key, dns_names=["operator.example"])
    certs.write_key(path / "operator.key", key)
    certs.write_cert(path / "operator.crt", certs.sign_request(req, ca_cert, ca_key))
    return Pki(path, str(path / "ca.crt"))


def tls_server(pki: Pki, owner: str, name: str = "srv", **extra: Any) -> dict[str, Any]:
    return {"tls-server": {"name": name, "cert": pki.cert(owner), "key": pki.key(owner),
                           "requireclientcert": True, "clientcas": pki.ca, **extra}}


def tls_client(pki: Pki, owner: str | None, name: str = "cli", **extra: Any) -> dict[str, Any]:
    section: dict[str, Any] = {"name": name, "rootcas": pki.ca, **extra}
    if owner:
        section.update(cert=pki.cert(owner), key=pki.key(owner))
    return {"tls-client": section}


# -- nodes ---------------------------------------------------------------------------------


@pytest.fixture
def nodes(mesh_dir: Path) -> Iterator[dict[str, NodeProcess]]:
    started: dict[str, NodeProcess] = {}
    yield started
    for node in started.values():
        node.stop()


def start(nodes: dict[str, NodeProcess], mesh_dir: Path, name: str,
          sections: list[dict[str, Any]], *, wait: bool = True) -> NodeProcess:
    node = NodeProcess(name, mesh_dir / name, sections)
    nodes[name] = node
    node.start(wait=wait)
    return node


def linked(a: NodeProcess, b: NodeProcess) -> bool:
    return b.name in {c["NodeID"] for c in a.status()["Connections"]}


def listener(port: int, tls: str = "srv") -> dict[str, Any]:
    return {"tcp-listener": {"port": port, "bindaddr": "127.0.0.1", "tls": tls}}


def peer(port: int, tls: str = "cli") -> dict[str, Any]:
    return {"tcp-peer": {"address": f"127.0.0.1:{port}", "tls": tls}}


def receptorctl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RECEPTORCTL, *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


# -- links ---------------------------------------------------------------------------------


def test_tls_link_comes_up_and_routes(pki: Pki, nodes: dict, mesh_dir: Path) -> None:
    port = free_port()
    alpha = start(nodes, mesh_dir, "alpha", [tls_server(pki, "alpha"), listener(port)])
    beta = start(nodes, mesh_dir, "beta", [tls_client(pki, "beta"), peer(port)])
    wait_until(lambda: linked(alpha, beta) and linked(beta, alpha), timeout=30,
               what="TLS link alpha-beta")
    wait_until(lambda: "alpha" in beta.routes(), what="route to alpha")
    reply = beta.control("ping alpha")
    assert reply["Success"] and reply["From"] == "alpha"
    assert not alpha.log_events("tls_node_id_mismatch")
    assert not beta.log_events("tls_node_id_mismatch")


def test_certificate_of_another_node_is_refused_on_both_sides(pki: Pki, nodes: dict,
                                                              mesh_dir: Path) -> None:
    # gamma dials alpha presenting beta's certificate (same CA, valid chain).
    port_alpha, port_delta = free_port(), free_port()
    alpha = start(nodes, mesh_dir, "alpha", [tls_server(pki, "alpha"), listener(port_alpha)])
    gamma = start(nodes, mesh_dir, "gamma", [
        tls_client(pki, "beta", skipreceptornamescheck=True), peer(port_alpha)])
    # delta listens with alpha's certificate; beta dials it.
    delta = start(nodes, mesh_dir, "delta", [
        tls_server(pki, "alpha", skipreceptornamescheck=True), listener(port_delta)])
    beta = start(nodes, mesh_dir, "beta", [tls_client(pki, "beta"), peer(port_delta)])

    listener_side = wait_until(lambda: alpha.log_events("tls_node_id_mismatch"), timeout=30,
                               what="alpha refusing gamma")[0]
    assert listener_side["peer"] == "gamma"
    assert listener_side["certificate_node_ids"] == ["beta"]
    assert "'gamma'" in listener_side["detail"] and "'beta'" in listener_side["detail"]
    dialer_side = wait_until(lambda: beta.log_events("tls_node_id_mismatch"), timeout=30,
                             what="beta refusing delta")[0]
    assert dialer_side["peer"] == "delta"
    assert dialer_side["certificate_node_ids"] == ["alpha"]
    assert not linked(alpha, gamma) and not linked(gamma, alpha)
    assert not linked(beta, delta) and not linked(delta, beta)


def test_listener_requiring_client_certs_refuses_a_dialer_without_one(
        pki: Pki, nodes: dict, mesh_dir: Path) -> None:
    port = free_port()
    alpha = start(nodes, mesh_dir, "alpha", [tls_server(pki, "alpha"), listener(port)])
    beta = start(nodes, mesh_dir, "beta", [tls_client(pki, None), peer(port)])

    def attempts() -> int:
        return len(beta.log_events("backend_dial_failed")) + \
            len(beta.log_events("backend_session_ended"))

    wait_until(lambda: attempts() >= 2, timeout=30, what="beta's refused dials")
    assert not linked(alpha, beta) and not linked(beta, alpha)
    assert not alpha.log_events("connection_established")


def test_pinned_server_certificate(pki: Pki, nodes: dict, mesh_dir: Path) -> None:
    port = free_port()
    alpha = start(nodes, mesh_dir, "alpha", [tls_server(pki, "alpha"), listener(port)])
    wrong = "ab:" * 31 + "ab"
    gamma = start(nodes, mesh_dir, "gamma", [
        tls_client(pki, "gamma", pinnedservercert=[wrong]), peer(port)])
    beta = start(nodes, mesh_dir, "beta", [
        tls_client(pki, "beta", pinnedservercert=[wrong, pki.sha256("alpha")]), peer(port)])
    wait_until(lambda: linked(alpha, beta), timeout=30, what="pinned link alpha-beta")
    mismatch = wait_until(lambda: gamma.log_events("tls_pinned_certificate_mismatch"),
                          timeout=30, what="gamma's pin mismatch")[0]
    assert mismatch["sha256"] == pki.sha256("alpha")
    assert not linked(alpha, gamma)


def test_startup_check_refuses_a_certificate_without_our_node_id(
        pki: Pki, nodes: dict, mesh_dir: Path) -> None:
    node = start(nodes, mesh_dir, "gamma", [tls_client(pki, "beta")], wait=False)
    assert node.proc is not None
    assert node.proc.wait(timeout=30) == 2
    text = node.log_path.read_text()
    assert "tls-client (item 4): key 'cert': nodeID=gamma not found in certificate" in text
    assert "beta" in text and "skipreceptornamescheck" in text


# -- control service -----------------------------------------------------------------------


def test_control_service_over_tls_with_receptorctl(pki: Pki, nodes: dict,
                                                  mesh_dir: Path) -> None:
    port = free_port()
    start(nodes, mesh_dir, "alpha", [
        {"local-only": None}, tls_server(pki, "alpha"),
        {"control-service": {"service": "", "tcplisten": f"127.0.0.1:{port}",
                             "tcptls": "srv"}}])
    url = f"tls://127.0.0.1:{port}"
    creds = ["--rootcas", pki.ca, "--cert", pki.cert("operator"), "--key", pki.key("operator")]

    def status() -> subprocess.CompletedProcess[str]:
        return receptorctl("--socket", url, *creds, "status", "--json")

    done = wait_until(lambda: (r := status()).returncode == 0 and r, timeout=30,
                      what="receptorctl status over TLS")
    assert json.loads(done.stdout)["NodeID"] == "alpha"
    # The hostname check applies to the host of the URL (a DNS SAN here).
    done = receptorctl("--socket", f"tls://localhost:{port}", *creds, "status", "--json")
    assert done.returncode == 0, done.stderr
    # No client certificate: the server refuses the handshake.
    refused = receptorctl("--socket", url, "--rootcas", pki.ca, "status")
    assert refused.returncode != 0
    assert "NodeID" not in refused.stdout


def test_control_service_pinned_client_certificate(pki: Pki, nodes: dict,
                                                  mesh_dir: Path) -> None:
    port = free_port()
    start(nodes, mesh_dir, "alpha", [
        {"local-only": None},
        tls_server(pki, "alpha", pinnedclientcert=[pki.sha256("operator")]),
        {"control-service": {"service": "", "tcplisten": f"127.0.0.1:{port}",
                             "tcptls": "srv"}}])
    url = f"tls://127.0.0.1:{port}"

    def as_user(user: str) -> subprocess.CompletedProcess[str]:
        return receptorctl("--socket", url, "--rootcas", pki.ca, "--cert", pki.cert(user),
                           "--key", pki.key(user), "status", "--json")

    wait_until(lambda: as_user("operator").returncode == 0, timeout=30,
               what="pinned operator over TLS")
    refused = as_user("beta")  # valid chain, not pinned
    assert refused.returncode != 0 and "NodeID" not in refused.stdout
    assert nodes["alpha"].log_events("control_client_refused")


# -- mesh services -------------------------------------------------------------------------


def _connect_greeting(node: NodeProcess, target: str, service: str, tls: str) -> str:
    """``connect`` through ``node``'s control socket; the remote control greeting or error."""
    from receptorctl.socket_interface import ReceptorControl

    control = ReceptorControl(str(node.socket))
    try:
        control.connect_to_service(target, service, tls)
        control._socket.settimeout(20)
        return control.readstr()
    finally:
        control.close()


def test_mesh_service_with_tls(pki: Pki, nodes: dict, mesh_dir: Path) -> None:
    """A control service advertised with ``tls`` (ConnType 2) requiring client certificates."""
    port = free_port()
    alpha = start(nodes, mesh_dir, "alpha", [
        tls_server(pki, "alpha"), tls_server(pki, "alpha", name="links"),
        listener(port, tls="links"),
        {"control-service": {"service": "secctl", "tls": "srv"}}])
    beta = start(nodes, mesh_dir, "beta", [
        tls_client(pki, "beta"), tls_client(pki, "beta", name="anon"), peer(port)])
    gamma = start(nodes, mesh_dir, "gamma", [
        tls_client(pki, "gamma"), tls_client(pki, "beta", name="stolen",
                                             skipreceptornamescheck=True),
        tls_client(pki, None, name="nocert"), peer(port)])
    wait_until(lambda: {"beta", "gamma"} <= {c["NodeID"] for c in alpha.status()["Connections"]},
               timeout=30, what="links to alpha")

    def advertised() -> bool:
        return any(ad["NodeID"] == "alpha" and ad["Service"] == "secctl"
                   and ad["ConnType"] == 2 for ad in beta.status()["Advertisements"])

    wait_until(advertised, timeout=30, what="secctl advertised as ConnType 2")
    wait_until(lambda: "alpha" in beta.routes() and "alpha" in gamma.routes(), timeout=30,
               what="routes to alpha on beta and gamma")
    assert _connect_greeting(beta, "alpha", "secctl", "cli") == "Receptor Control, node alpha"
    assert _connect_greeting(gamma, "alpha", "secctl", "cli") == \
        "Receptor Control, node alpha"
    # Without a tls-client the dialer expects Receptor's insecure certificate.
    with pytest.raises(RuntimeError, match="insecure connection to secure service"):
        _connect_greeting(beta, "alpha", "secctl", "")
    # The server checks that the client certificate names the dialing node.
    assert "Receptor Control" not in _safe_greeting(gamma, "stolen")
    assert "Receptor Control" not in _safe_greeting(gamma, "nocert")
    refusals = wait_until(lambda: alpha.log_events("stream.client_certificate_refused"),
                          timeout=10, what="alpha refusing gamma's client certificates")
    problems = " ".join(r["problem"] for r in refusals)
    assert "does not name node 'gamma'" in problems


def test_remote_work_through_a_tls_control_service(pki: Pki, nodes: dict,
                                                   mesh_dir: Path) -> None:
    """``--tls-client`` on submit: the controller dials the executor's TLS-only control
    service with that tls-client for submit, status, results and release."""
    port = free_port()
    alpha = NodeProcess("alpha", mesh_dir / "alpha", [
        tls_server(pki, "alpha"), {"tcp-listener": {"port": port, "bindaddr": "127.0.0.1"}},
        {"work-command": {"worktype": "cat", "command": "cat"}}],
        control_extra={"tls": "srv"})
    nodes["alpha"] = alpha.start()
    beta = start(nodes, mesh_dir, "beta", [
        tls_client(pki, "beta"), {"tcp-peer": {"address": f"127.0.0.1:{port}"}}])
    wait_until(lambda: linked(beta, alpha), timeout=30, what="beta linked to alpha")
    wait_until(lambda: any(ad["NodeID"] == "alpha" and ad["ConnType"] == 2
                           for ad in beta.status()["Advertisements"]),
               timeout=30, what="alpha's control service advertised as TLS")
    socket = ["--socket", str(beta.socket)]
    unknown = receptorctl(*socket, "work", "submit", "--node", "alpha", "--tls-client",
                          "nosuch", "--no-payload", "cat")
    assert unknown.returncode != 0
    assert "bad tlsclient: no tls-client named 'nosuch'" in unknown.stdout + unknown.stderr
    secret = "hunter2-" + "x" * 8
    done = receptorctl(*socket, "work", "submit", "--node", "alpha", "--tls-client", "cli",
                       "-a", f"secret_token={secret}", "--payload-literal", "over tls",
                       "--follow", "cat", timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("over tls\n"), done.stdout
    # the secret went to alpha for the submit; it is on neither node's disk afterwards
    for node in (alpha, beta):
        for status_file in node.datadir.glob("*/*/status"):
            assert secret not in status_file.read_text(), status_file
    (unit_id,) = beta.control("work list")
    assert receptorctl(*socket, "work", "release", unit_id).returncode == 0
    # the release reached alpha through the TLS session too
    wait_until(lambda: alpha.control("work list") == {} and beta.control("work list") == {},
               timeout=60, what="the unit released on alpha and beta")


def _safe_greeting(node: NodeProcess, tls: str) -> str:
    try:
        return _connect_greeting(node, "alpha", "secctl", tls)
    except (RuntimeError, OSError, ValueError) as exc:
        return f"error: {exc}"


def test_unknown_tls_name_is_a_clear_error(pki: Pki, nodes: dict, mesh_dir: Path) -> None:
    node = start(nodes, mesh_dir, "alpha", [listener(free_port(), tls="nosuch")], wait=False)
    proc = node.proc
    assert proc is not None
    wait_until(lambda: proc.poll() is not None, timeout=30, what="alpha to exit")
    assert proc.returncode != 0
    assert "no tls-server named 'nosuch'" in node.log_path.read_text()


def test_certificate_file_round_trip(pki: Pki) -> None:
    """The PEM files load as Receptor expects them: PKCS#1 keys, CA-signed leaves."""
    key_text = Path(pki.key("alpha")).read_text()
    assert key_text.startswith("-----BEGIN RSA PRIVATE KEY-----")
    leaf = certs.load_cert(pki.cert("alpha"))
    ca = certs.load_cert(pki.ca)
    leaf.verify_directly_issued_by(ca)
    assert leaf.public_bytes(serialization.Encoding.PEM).startswith(b"-----BEGIN CERTIFICATE")


# -- config checks (in process) ------------------------------------------------------------


def _load(text: str) -> Any:
    from mesh.config.loader import parse_config
    from mesh.plugins import make_plugin_manager

    return parse_config(text, make_plugin_manager().section_specs(), source="t.yml")


def _node(text: str, node_id: str = "alpha") -> Any:
    from types import SimpleNamespace

    return SimpleNamespace(config=_load(text), node_id=node_id, plugin_state={})


def test_section_validation_errors() -> None:
    from mesh.config.errors import ConfigError

    with pytest.raises(ConfigError, match="cert and key must be given together"):
        _load("- tls-client:\n    name: c\n    cert: x.crt\n")
    with pytest.raises(ConfigError, match=r"tls-server \(item 1\): key 'pinnedclientcert'.*"
                                          r"SHA-256"):
        _load("- tls-server:\n    name: s\n    cert: a\n    key: b\n"
              "    pinnedclientcert: ['ab:cd']\n")
    with pytest.raises(ConfigError, match="missing required key 'key'"):
        _load("- tls-server:\n    name: s\n    cert: a\n")


def test_startup_errors_name_file_section_and_key(pki: Pki, tmp_path: Path) -> None:
    from mesh.config.errors import ConfigError
    from mesh_builtin import tls

    cases = {
        f"- tls-server:\n    name: s\n    cert: {pki.cert('alpha')}\n    key: "
        f"{tmp_path / 'nope.key'}\n": "<config>: tls-server (item 1): key 'key': cannot read",
        f"- tls-server:\n    name: s\n    cert: {pki.cert('alpha')}\n    key: "
        f"{pki.key('beta')}\n": "key 'key': cannot load certificate",
        f"- tls-client:\n    name: c\n    rootcas: {tmp_path / 'nope.pem'}\n":
            "tls-client (item 1): key 'rootcas': cannot load CA certificates",
        f"- tls-client:\n    name: c\n    cert: {pki.cert('beta')}\n    key: "
        f"{pki.key('beta')}\n": "key 'cert': nodeID=alpha not found in certificate name(s)",
        "- tls-client:\n    name: c\n- tls-client:\n    name: c\n":
            "tls-client (item 2): key 'name': another tls-client is already named 'c'",
    }
    for text, message in cases.items():
        with pytest.raises(ConfigError) as info:
            tls.provider(_node(text))
        assert message in str(info.value)


def test_peer_node_ids_pins_and_insecure(pki: Pki) -> None:
    from mesh_builtin import tls

    der = certs.load_cert(pki.cert("alpha")).public_bytes(serialization.Encoding.DER)
    sha512 = tls.fingerprints(der)[1]
    node = _node(
        f"- tls-client:\n    name: pinned\n    rootcas: {pki.ca}\n"
        f"    pinnedservercert: ['{sha512}']\n"
        f"- tls-client:\n    name: other\n    rootcas: {pki.ca}\n"
        f"    pinnedservercert: ['{'00' * 32}']\n"
        f"- tls-client:\n    name: blind\n    insecureskipverify: true\n"
        f"    pinnedservercert: ['{'00' * 32}']\n", node_id="beta")
    assert tls.mesh_tls_config(node, "client", "pinned").peer_node_ids(der) == ["alpha"]
    with pytest.raises(tls.PinnedCertificateMismatch):
        tls.mesh_tls_config(node, "client", "other").peer_node_ids(der)
    blind = tls.mesh_tls_config(node, "client", "blind")
    assert blind.peer_node_ids(der) is None  # no verification at all, as in Receptor
    assert blind.ssl_context().verify_mode.name == "CERT_NONE"
    assert tls.mesh_tls_config(node, "server", "pinned") is None
    quic = tls.mesh_tls_config(node, "client", "pinned").quic_options()
    assert quic.cafile == pki.ca and quic.pinned_fingerprints == (bytes.fromhex(
        sha512.replace(":", "")),)
