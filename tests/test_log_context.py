"""Every log event a user needs to debug a failure carries its context.

The rule (see docs/cli.md, "Log event keys"): in a node process every event carries ``node_id``;
an event about a link, session, handshake, stream or route carries ``peer``; an event about a
work unit carries ``unit_id``.  The mesh test starts real nodes logging JSON at debug level,
makes them fail in the ways a user would have to debug (a refused link, a dial to nothing, a
broken handshake, a remote unit that fails, a cancelled unit, a relay killed with SIGKILL) and
then checks every line of every node's log against the rule.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from mesh.testing import Mesh, NodeProcess, free_port, wait_until
from work_helpers import cleanup, receptorctl, remote_id, status, submitted_unit, wait_state

# -- the rule ----------------------------------------------------------------------------------

#: Words that make an event name one about a link, session, handshake, stream or route.
PEER_WORDS = re.compile(r"link|handshake|connection|session|stream|peer|dial|route|remote_|"
                        r"proxy_|ws_|udp_")
#: Peer events whose names have none of those words.
PEER_EVENTS = frozenset({
    "bad_advertisement", "bad_routing_update", "unknown_message_type", "data_too_short",
    "duplicate_node_id", "duplicate_node_id_detected", "node_expired",
    "tls_node_id_mismatch", "tls_pinned_certificate_mismatch", "control_command_crashed",
    "control_client_refused",
})
#: Events with a peer word that are about the node as a whole (a listener, the sweep of the
#: pooled control sessions), where no single peer applies.
NOT_ABOUT_A_PEER = frozenset({
    "stream.listener_closed", "udp_listener_error", "ws_tls_ignored",
    "control_session_sweep_failed",
})

#: Words that make an event name one about a work unit.
UNIT_WORDS = re.compile(r"unit_|runner_|remote_|container_")
UNIT_EVENTS = frozenset({"private_data_dir_removed"})
#: Events about all units at once (the retention sweep) or about a background task of the
#: work manager, which may belong to a node's pooled sessions rather than to a unit.
NOT_ABOUT_A_UNIT = frozenset({"unit_lifecycle_failed", "work_task_failed"})


def needs_peer(event: str) -> bool:
    return event not in NOT_ABOUT_A_PEER and (event in PEER_EVENTS or bool(
        PEER_WORDS.search(event)))


def needs_unit(event: str) -> bool:
    return event not in NOT_ABOUT_A_UNIT and (event in UNIT_EVENTS or bool(
        UNIT_WORDS.search(event)))


def context_problems(node_id: str, line: str) -> list[str]:
    """What ``line`` of ``node_id``'s log lacks under the rule (empty when it complies)."""
    try:
        event = json.loads(line)
    except ValueError:
        return [f"not a JSON event: {line!r}"]
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        return [f"not a structlog event: {line!r}"]
    name = event["event"]
    problems = []
    if event.get("node_id") != node_id:
        problems.append(f"{name}: node_id is {event.get('node_id')!r}, not {node_id!r}")
    if "logger" in event:  # a record of another library's ``logging``: only node_id is ours
        return problems
    for key, needed in (("peer", needs_peer(name)), ("unit_id", needs_unit(name))):
        value = event.get(key)
        if needed and not (isinstance(value, str) and value):
            problems.append(f"{name}: no {key} (got {value!r})")
    return problems


def log_problems(node: NodeProcess) -> list[str]:
    # complete lines only: a node killed with SIGKILL may have been cut mid-line
    lines = node.log_path.read_text(errors="replace").split("\n")[:-1]
    return [f"{node.name}: {problem}" for line in lines if line.strip()
            for problem in context_problems(node.name, line)]


def test_the_rule_catches_missing_keys() -> None:
    """The checker itself: each missing key is reported (so the mesh test can fail)."""
    ok = {"event": "connection_lost", "node_id": "a", "peer": "b", "reason": "closed"}
    assert context_problems("a", json.dumps(ok)) == []
    assert context_problems("a", json.dumps({**ok, "peer": None}))
    assert context_problems("a", json.dumps({k: v for k, v in ok.items() if k != "node_id"}))
    assert context_problems("b", json.dumps(ok))
    assert context_problems("a", "Task exception was never retrieved")
    for name in ("backend_dial_failed", "stream.ended", "handshake_failed", "link_rejected",
                 "remote_work_started", "bad_routing_update", "udp_session_closed"):
        assert needs_peer(name), name
    for name in ("unit_state_changed", "runner_started", "remote_work_finished",
                 "container_removed", "unit_killed"):
        assert needs_unit(name), name
    assert context_problems("a", json.dumps({"event": "unit_state_changed", "node_id": "a"}))
    assert not needs_peer("routing_table_recalculated") and not needs_unit("node_started")


# -- a mesh that fails in the ways a user debugs -------------------------------------------------

WORK = [
    {"work-command": {"worktype": "fail", "command": "sh",
                      "params": "-c 'echo about to fail; exit 1'"}},
    {"work-command": {"worktype": "sleeper", "command": "sleep", "params": "120"}},
]


def routes_among(cluster: Mesh, names: list[str]) -> bool:
    return all(set(cluster.nodes[n].routes()) >= set(names) - {n} for n in names)


def test_failure_events_carry_node_peer_and_unit() -> None:
    line = ["controller01", "relayer01", "executor01"]
    cluster = Mesh(Path(tempfile.mkdtemp(prefix="mesh-logctx-")))
    ctl = cluster.add("controller01")
    relay = cluster.add("relayer01")
    exe = cluster.add("executor01", listen=False, sections=WORK)
    cluster.link("relayer01", "controller01")
    cluster.link("executor01", "relayer01")
    # a second listener on the controller that lets only relayer01 in: "stranger" is refused
    guarded = free_port()
    ctl.sections.append({"tcp-listener": {"port": guarded, "bindaddr": "127.0.0.1",
                                          "allowedpeers": ["relayer01"]}})
    stranger = cluster.add("stranger", listen=False, sections=[
        {"tcp-peer": {"address": f"127.0.0.1:{guarded}"}},
        {"tcp-peer": {"address": f"127.0.0.1:{free_port()}"}},  # nothing listens there
    ])
    try:
        cluster.start()
        wait_until(lambda: routes_among(cluster, line), timeout=60, what="line converged")
        wait_until(lambda: any(ad["NodeID"] == "executor01" and ad["Service"] == "control"
                               for ad in ctl.status()["Advertisements"]),
                   timeout=60, what="executor01's control service on controller01")

        # a refused link, and a dial to an address where nothing listens
        wait_until(lambda: ctl.log_events("link_rejected", peer="stranger"), timeout=60,
                   what="controller01 refuses stranger")
        wait_until(lambda: len(stranger.log_events("backend_dial_failed")) >= 2, timeout=60,
                   what="stranger's failed dials")
        # a handshake that never happens: connect and hang up
        with socket.create_connection(("127.0.0.1", cluster.ports["relayer01"]), timeout=30):
            pass
        wait_until(lambda: relay.log_events("handshake_failed"), timeout=60,
                   what="relayer01 logs the broken handshake")

        # a remote unit whose command exits 1
        failed = submitted_unit(receptorctl(ctl, "work", "submit", "--node", "executor01",
                                            "--no-payload", "fail"))
        assert wait_state(ctl, failed, {3}, timeout=60)["StateName"] == "Failed"
        wait_until(lambda: ctl.log_events("remote_work_finished", unit_id=failed), timeout=60,
                   what="controller01 finishes following the failed unit")
        failed_remote = remote_id(ctl, failed)
        wait_until(lambda: exe.log_events("unit_state_changed", unit_id=failed_remote,
                                          state="Failed"),
                   timeout=60, what="executor01 logs the failure")

        # a remote unit cancelled while it runs
        cancelled = submitted_unit(receptorctl(ctl, "work", "submit", "--node", "executor01",
                                               "--no-payload", "sleeper"))
        wait_until(lambda: status(ctl, cancelled)["State"] == 1, timeout=60,
                   what="sleeper running")
        cancelled_remote = remote_id(ctl, cancelled)
        wait_state(exe, cancelled_remote, {1}, timeout=60)
        receptorctl(ctl, "work", "cancel", cancelled)
        wait_state(exe, cancelled_remote, {4}, timeout=60)
        wait_state(ctl, cancelled, {4}, timeout=60)
        wait_until(lambda: exe.log_events("unit_killed", unit_id=cancelled_remote), timeout=60,
                   what="executor01 logs the kill")

        # the relay dies: both neighbours lose their link, the executor redials in vain
        relay.kill()
        wait_until(lambda: ctl.log_events("connection_lost", peer="relayer01"), timeout=60,
                   what="controller01 loses relayer01")
        wait_until(lambda: exe.log_events("backend_session_ended", peer="relayer01"), timeout=60,
                   what="executor01's session to relayer01 ends")
        relay_address = f"127.0.0.1:{cluster.ports['relayer01']}"
        wait_until(lambda: exe.log_events("backend_dial_failed", peer=relay_address), timeout=60,
                   what="executor01 redials relayer01 in vain")
        cluster.stop()

        # the failures above were logged (so the rule below is not checked on nothing) ...
        seen = {e: n.name for n in cluster.nodes.values()
                for e in ("connection_established", "connection_lost", "link_rejected",
                          "remote_work_started", "runner_started", "stream.ended",
                          "node_stopping") if n.log_events(e)}
        assert len(seen) == 7, seen
        # ... and every line of every log satisfies it
        problems = [p for node in cluster.nodes.values() for p in log_problems(node)]
        assert not problems, "\n".join(problems[:50])
    finally:
        cleanup(cluster)


# -- what the logging setup adds by itself -------------------------------------------------------

PROCESS_SCRIPT = textwrap.dedent("""
    import asyncio, gc, logging, threading, warnings
    import structlog
    from mesh.log import bind_node, configure_logging, loop_exception_handler

    configure_logging("debug", "json")
    bind_node("solo")
    log = structlog.get_logger("plugin")

    async def broken():
        raise RuntimeError("nobody awaited me")

    async def main():
        asyncio.get_running_loop().set_exception_handler(loop_exception_handler("solo"))
        task = asyncio.create_task(broken(), name="orphan")
        await asyncio.sleep(0.01)
        del task
        gc.collect()
        await asyncio.sleep(0)

    asyncio.run(main())
    threading.Thread(target=lambda: log.info("thread_event")).start()
    logging.getLogger("some.library").warning("library %s", "warning")
    warnings.warn("deprecated thing")
""")


def test_threads_libraries_and_lost_task_exceptions_carry_node_id() -> None:
    proc = subprocess.run([sys.executable, "-c", PROCESS_SCRIPT], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert [p for line in lines for p in context_problems("solo", line)] == []
    by_event = {json.loads(line)["event"]: json.loads(line) for line in lines}
    lost = by_event["unhandled_exception"]
    assert lost["task"] == "orphan" and "nobody awaited me" in lost["error"]
    assert "RuntimeError" in lost["exception"]
    assert "thread_event" in by_event
    assert by_event["library warning"]["logger"] == "some.library"
    assert any("deprecated thing" in name for name in by_event)
