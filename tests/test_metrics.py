"""The metrics service: Prometheus text on /metrics and /health, scraped from a real node."""

from __future__ import annotations

import re
import urllib.error
import urllib.request

import pytest

from mesh.testing import Mesh, free_port, wait_until
from work_helpers import mesh_cli, submitted_unit


def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def value(text: str, name: str, labels: str = "") -> float:
    pattern = rf'^{re.escape(name)}\{{node="a"{"," + re.escape(labels) if labels else ""}\}} (\S+)$'
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"{name} {labels} not in metrics"
    return float(match.group(1))


def test_metrics_and_health(mesh: Mesh) -> None:
    port = free_port()
    mesh.add("a", sections=[{"metrics": {"port": port}},
                            {"work-command": {"worktype": "cat", "command": "cat"}}])
    mesh.add("b")
    mesh.link("b", "a")
    mesh.start()
    mesh.wait_converged()
    assert scrape(port, "/health") == (200, "ok\n")
    a = mesh.nodes["a"]
    a.control('{"command":"ping","target":"b"}')
    text = wait_until(lambda: (t := scrape(port)[1]) and value(t, "mesh_links_up") == 1 and t,
                      timeout=30, what="one link in metrics")
    assert value(text, "mesh_routing_table_size") == 1
    assert value(text, "mesh_link_messages_in_total", 'peer="b"') > 0
    assert value(text, "mesh_link_bytes_out_total", 'peer="b"') > 0
    assert value(text, "mesh_units", 'state="Succeeded"') == 0
    assert "# TYPE mesh_routing_updates_received_total counter" in text
    assert scrape(port, "/nothing")[0] == 404


def test_units_and_streamed_results(mesh: Mesh) -> None:
    """A unit that ran counts under its state, and the results sent to the client are counted
    in mesh_stream_bytes_total."""
    port = free_port()
    mesh.add("a", sections=[{"metrics": {"port": port}},
                            {"work-command": {"worktype": "cat", "command": "cat"}}])
    mesh.start()
    payload = b"x" * 5000
    a = mesh.nodes["a"]
    unit_id = submitted_unit(mesh_cli(a, "work", "submit", "cat", "--node", "localhost",
                                      "--payload", "-", stdin=payload))
    assert mesh_cli(a, "work", "results", unit_id).stdout == payload
    text = scrape(port)[1]
    assert value(text, "mesh_units", 'state="Succeeded"') == 1
    assert value(text, "mesh_stream_bytes_total") >= len(payload)


LINKS = {
    "tcp": lambda port: ({"tcp-listener": {"port": port, "bindaddr": "127.0.0.1"}},
                         {"tcp-peer": {"address": f"127.0.0.1:{port}"}}),
    "udp": lambda port: ({"udp-listener": {"port": port, "bindaddr": "127.0.0.1"}},
                         {"udp-peer": {"address": f"127.0.0.1:{port}"}}),
    "ws": lambda port: ({"ws-listener": {"port": port, "bindaddr": "127.0.0.1"}},
                        {"ws-peer": {"address": f"ws://127.0.0.1:{port}/"}}),
}


@pytest.mark.parametrize("backend", sorted(LINKS))
def test_link_traffic_is_counted_on_every_backend(mesh: Mesh, backend: str) -> None:
    """Each builtin backend counts its link's messages and bytes both ways."""
    port = free_port()
    listener, peer = LINKS[backend](free_port())
    mesh.add("a", listen=False, sections=[{"metrics": {"port": port}}, listener])
    mesh.add("b", listen=False, sections=[peer])
    mesh.start()
    mesh.wait_converged()
    mesh.nodes["a"].control('{"command":"ping","target":"b"}')
    labels = 'peer="b"'
    text = wait_until(lambda: (t := scrape(port)[1])
                      and value(t, "mesh_link_messages_out_total", labels) > 0 and t,
                      timeout=30, what=f"traffic on the {backend} link in metrics")
    for name in ("messages_in", "messages_out", "bytes_in", "bytes_out"):
        assert value(text, f"mesh_link_{name}_total", labels) > 0, name
