"""Fuzz a running node over a mesh link and over its control socket, then check it still works.

Starts a 3-node line (controller01 – target – executor01), then for a bounded time:
* over a raw TCP link to `target` (after a valid handshake as node "fuzzer"), in rounds of one
  input kind each:
  - ``random``: random frames; ``mutated``: valid messages mutated (bit flips, truncation,
    splices, type-byte changes);
  - control-plane attacks, built from what the target floods to the fuzzer link (each node's
    NodeID, UpdateEpoch and UpdateSequence, decoded from the frames it sends; nothing is read
    from the nodes' files):
    ``forged-duplicate``  "you are a duplicate" accusations (SuspectedDuplicate = the real
                          epoch of the target or of another node; newer, older, equal epochs);
    ``older-instance``    updates that claim to come from an older process with the target's
                          node ID (each forged epoch with at most 2 sequences, unless
                          ``--sustained-older``: then one forged epoch keeps sending, as a real
                          older duplicate does, which a node must obey without signed routing);
    ``hijack``            updates for controller01 / executor01 with their real epoch, a
                          higher sequence and wrong connections;
    ``name-flood``        updates and service advertisements of invented nodes (thousands),
                          each listing a connection to "fuzzer";
* over `target`'s control socket (``control``): random lines, and valid commands mutated.

After every round every node is checked: a node that exited is a *node-stopping input*,
counted with the kind of that round, recorded (its last inputs and its own last error event),
and restarted, so one failure does not end the run.  Afterwards every node must be alive,
controller01 must route to executor01 through the target, and a remote job from controller01
to executor01 must succeed.  Prints a table (inputs and stops per kind, the target's RSS before
and after, the final checks) and then one line ``JSON: {...}``; exits 1 if any node stopped or
a final check failed.  All traffic stays on loopback; every loop is bounded in time and count.

    .venv/bin/python bench/fuzz_node.py [--seconds 60] [--seed 1] [--attacks all]
"""

from __future__ import annotations

import argparse
import json
import random
import select
import socket
import string
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mesh.net import messages as m
from mesh.net.highwayhash import node_hash
from mesh.testing import Mesh, NodeProcess, wait_until

FUZZER = "fuzzer"
TARGET = "target"
LINK_COST = 1.0
BASIC_KINDS = ("random", "mutated")
ATTACK_KINDS = ("forged-duplicate", "older-instance", "hijack", "name-flood")
LINK_KINDS = BASIC_KINDS + ATTACK_KINDS
CONTROL_KIND = "control"
#: Inputs of one round, per kind (a name-flood round sends this many invented nodes).
ROUND_SIZE = {"random": 20, "mutated": 20, "forged-duplicate": 4, "older-instance": 2,
              "hijack": 4, "name-flood": 400}
#: The fuzzer's own update lists at most this many invented nodes (a frame is at most 64 KiB).
MAX_LISTED_NAMES = 1500
SEND_TIMEOUT = 5.0
#: After the link broke, wait this long for a stopping node to exit (better attribution).
LINK_GRACE = 0.5
#: After a stop, wait this long for others (one flooded update may stop several nodes).
STOP_GRACE = 1.0
#: After a round of these kinds, wait up to this long for a node to stop before the next round
#: (a node that is told it is a duplicate takes a moment to exit): a stop is then seen while
#: its cause is still the latest round, and counted with the right kind.
SETTLE = {"forged-duplicate": 0.6, "older-instance": 0.6, "hijack": 0.2, "name-flood": 0.1}
#: A stop is blamed on the latest attack kind sent this many seconds before it was seen.
STOP_WINDOW = 3.0
MAX_FORGED_IDS = 100_000
MAX_KNOWN_NODES = 64
MAX_LINK_BUFFER = 1 << 20
ID_CHARS = string.ascii_letters + string.digits

CONTROL_SEEDS = [b"status", b"ping executor01", b"traceroute controller01", b"work list",
                 b'{"command":"status","requested_fields":["Version"]}',
                 b'{"command":"work","subcommand":"status","unitid":"abcdEFGH"}',
                 b"work results abcdEFGH 0", b"connect executor01 control ", b"reload",
                 b'{"command":"ping","target":"controller01"}', b"work cancel x", b"stats",
                 b"work submit executor01 cat", b"work submit localhost nosuch a b c",
                 b'{"command":"work","subcommand":"submit","node":"executor01","worktype":"cat",'
                 b'"ttl":"1h","params":"x"}',
                 b'{"command":"work","subcommand":"submit","node":"localhost","worktype":"cat"}',
                 b'{"command":"work","subcommand":"release","unitid":"abcdEFGH"}']


def mutate(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        if choice < 0.4 and data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif choice < 0.6 and data:
            del data[rng.randrange(len(data)):]
        elif choice < 0.8:
            pos = rng.randrange(len(data) + 1)
            data[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif data:
            data[0] = rng.randrange(256)
    return bytes(data)


def link_seeds() -> list[bytes]:
    update = m.encode_routing_update(m.RoutingUpdate(
        node_id=FUZZER, update_id="abcdefgh", update_epoch=1, update_sequence=5,
        connections={TARGET: LINK_COST}, forwarding_node=FUZZER))
    data = m.encode_data(30, node_hash(FUZZER), node_hash(TARGET), "x", "ping", b"")
    ad = m.encode_service_advertisement(m.ServiceAdvertisement(
        node_id=FUZZER, service="svc", time_ns=time.time_ns(), conn_type=1,
        tags={"type": "x"}))
    return [update, data, ad, m.REJECT_MESSAGE]


def frame(payload: bytes) -> bytes:
    return struct.pack("<H", len(payload) & 0xFFFF) + payload[:65535]


# ------------------------------------------------------------------------------------------------
# What the attacker learns from the link


@dataclass
class NodeIntel:
    """A real node as seen in the routing updates the target floods to us."""

    epoch: int
    sequence: int
    connections: dict[str, float]


@dataclass
class Intel:
    """Decodes the frames the target sends on the fuzzer link and keeps each real node's
    latest epoch, sequence and connections (our own forgeries and invented names excluded)."""

    forged_ids: set[str] = field(default_factory=set)
    forged_order: deque[str] = field(default_factory=deque)
    invented_prefix: str = "flood-"
    nodes: dict[str, NodeIntel] = field(default_factory=dict)
    buffer: bytearray = field(default_factory=bytearray)
    frames: int = 0

    def forged(self, update_id: str) -> None:
        """Remember an UpdateID we made up, so its echo never counts as the truth."""
        self.forged_ids.add(update_id)
        self.forged_order.append(update_id)
        if len(self.forged_order) > MAX_FORGED_IDS:
            self.forged_ids.discard(self.forged_order.popleft())

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 2:
            (length,) = struct.unpack_from("<H", self.buffer)
            if len(self.buffer) < 2 + length:
                break
            payload = bytes(self.buffer[2:2 + length])
            del self.buffer[:2 + length]
            self.frames += 1
            if payload[:1] == bytes((m.MSG_ROUTING_UPDATE,)):
                self._learn(payload)
        if len(self.buffer) > MAX_LINK_BUFFER:  # cannot happen with 16-bit lengths; bounded anyway
            self.buffer.clear()

    def reset_stream(self) -> None:
        """A new connection: a partial frame of the old one means nothing."""
        self.buffer.clear()

    def _learn(self, payload: bytes) -> None:
        try:
            update = m.decode_routing_update(payload[1:])
        except m.MessageError:
            return
        node = update.node_id
        if not node or node == FUZZER or node.startswith(self.invented_prefix) or \
                update.update_id in self.forged_ids or update.suspected_duplicate:
            return
        known = self.nodes.get(node)
        if known is None and len(self.nodes) >= MAX_KNOWN_NODES:
            return
        if known is None or update.update_epoch > known.epoch or (
                update.update_epoch == known.epoch and update.update_sequence > known.sequence):
            self.nodes[node] = NodeIntel(update.update_epoch, update.update_sequence,
                                         dict(update.connections))

    def real(self, node: str) -> NodeIntel | None:
        return self.nodes.get(node)


# ------------------------------------------------------------------------------------------------
# Inputs


@dataclass
class Attacker:
    """Builds each round's inputs; the attacks need :class:`Intel` (None: not learned yet)."""

    rng: random.Random
    intel: Intel
    sustained_older: bool = False
    flood_names: int = 20000
    seeds: list[bytes] = field(default_factory=link_seeds)
    own_sequence: int = 10
    older_used: set[int] = field(default_factory=set)
    sustained: tuple[int, int] | None = None  # (forged epoch, last sequence)
    hijack_sequence: dict[str, int] = field(default_factory=dict)
    flood_next: int = 0
    flood_sequence: int = 1
    flood_epoch: int = field(default_factory=lambda: int(time.time()) << 24)

    def round(self, kind: str) -> list[bytes] | None:
        """The inputs of one round of ``kind`` (whole messages, framed by the caller), or None
        while the intel the attack needs is missing."""
        return getattr(self, "_" + kind.replace("-", "_"))(ROUND_SIZE[kind])

    # -- helpers

    def _update(self, node: str, epoch: int, sequence: int, connections: dict[str, float],
                suspected: int = 0) -> bytes:
        uid = "".join(self.rng.choice(ID_CHARS) for _ in range(8))
        self.intel.forged(uid)
        return m.encode_routing_update(m.RoutingUpdate(
            node_id=node, update_id=uid, update_epoch=epoch, update_sequence=sequence,
            connections=connections, forwarding_node=FUZZER, suspected_duplicate=suspected))

    def own_update(self, extra: dict[str, float] | None = None) -> bytes:
        """Our own update: it must list the target at the link's cost, or the link ends."""
        self.own_sequence += 1
        return self._update(FUZZER, 1, self.own_sequence, {TARGET: LINK_COST, **(extra or {})})

    def _wrong_connections(self, real: dict[str, float]) -> dict[str, float]:
        choice = self.rng.randrange(4)
        if choice == 0:
            return {}
        if choice == 1:
            return {FUZZER: LINK_COST}
        if choice == 2:
            return {FUZZER: 0.001, **{k: 1000.0 for k in real}}
        return {k: v for k, v in real.items() if k != TARGET} | {FUZZER: LINK_COST}

    def _other_real_nodes(self) -> list[str]:
        return sorted(n for n in self.intel.nodes if n != TARGET)

    # -- kinds

    def _random(self, count: int) -> list[bytes]:
        return [self.rng.randbytes(self.rng.randint(0, 200)) for _ in range(count)]

    def _mutated(self, count: int) -> list[bytes]:
        return [mutate(self.rng, self.rng.choice(self.seeds)) for _ in range(count)]

    def _forged_duplicate(self, count: int) -> list[bytes] | None:
        victims = [n for n in [TARGET, *self._other_real_nodes()] if self.intel.real(n)]
        if not victims:
            return None
        out = []
        for _ in range(count):
            victim = TARGET if self.rng.random() < 0.5 else self.rng.choice(victims)
            real = self.intel.real(victim)
            if real is None:
                continue
            delta = self.rng.choice([1, self.rng.randint(2, 1 << 24), self.rng.randint(1, 1 << 40)])
            epoch = self.rng.choice([real.epoch + delta, max(1, real.epoch - delta), real.epoch])
            sequence = self.rng.choice([1, real.sequence + 1, self.rng.randint(1, 1 << 32)])
            conns = self.rng.choice([dict(real.connections), {FUZZER: LINK_COST}, {}])
            out.append(self._update(victim, epoch, sequence, conns, suspected=real.epoch))
        return out

    def _older_instance(self, count: int) -> list[bytes] | None:
        real = self.intel.real(TARGET)
        if real is None or real.epoch < 2:
            return None
        conns = self.rng.choice([dict(real.connections), {FUZZER: LINK_COST}])
        if self.sustained_older:
            # what a real older process with the same ID sends: one epoch, counting up
            if self.sustained is None or self.sustained[0] >= real.epoch:
                self.sustained = (real.epoch - self.rng.randint(1, min(1 << 24, real.epoch - 1)),
                                  0)
            epoch, seq = self.sustained
            self.sustained = (epoch, seq + 1)
            return [self._update(TARGET, epoch, seq + 1, conns)]
        # a fuzzer's variety: a fresh forged epoch each round, with at most 2 sequences
        for _ in range(16):
            delta = self.rng.choice([1, self.rng.randint(2, 1 << 24), self.rng.randint(1, 1 << 40)])
            epoch = max(1, real.epoch - delta)
            if epoch not in self.older_used:
                break
        else:
            return None
        if len(self.older_used) < MAX_FORGED_IDS:
            self.older_used.add(epoch)
        first = self.rng.randint(1, 1000)
        return [self._update(TARGET, epoch, first + i, conns) for i in range(min(count, 2))]

    def _hijack(self, count: int) -> list[bytes] | None:
        victims = [n for n in self._other_real_nodes() if n != FUZZER]
        if not victims:
            return None
        out = []
        for _ in range(count):
            victim = self.rng.choice(victims)
            real = self.intel.nodes[victim]
            base = max(real.sequence, self.hijack_sequence.get(victim, 0))
            bump = self.rng.choices([self.rng.randint(1, 20), self.rng.randint(1000, 10**6),
                                     (1 << 63) + self.rng.randint(0, 1 << 20)],
                                    weights=[80, 15, 5])[0]
            sequence = min(base + bump, (1 << 64) - 1)
            self.hijack_sequence[victim] = sequence
            out.append(self._update(victim, real.epoch, sequence,
                                    self._wrong_connections(real.connections)))
        if self.rng.random() < 0.5:  # and claim the other end of the forged edge
            out.append(self.own_update({v: LINK_COST for v in victims}))
        return out

    def _name_flood(self, count: int) -> list[bytes]:
        out, names = [], []
        for _ in range(count):
            index = self.flood_next
            self.flood_next += 1
            if self.flood_next >= self.flood_names:  # bounded: re-announce the same names
                self.flood_next = 0
                self.flood_sequence += 1
            name = f"{self.intel.invented_prefix}{index:06d}"
            names.append(name)
            out.append(self._update(name, self.flood_epoch, self.flood_sequence,
                                    {FUZZER: LINK_COST}))
            if self.rng.random() < 0.5:
                out.append(m.encode_service_advertisement(m.ServiceAdvertisement(
                    node_id=name, service="control", time_ns=time.time_ns(), conn_type=1,
                    tags={"type": "Control Service"},
                    work_commands=[m.WorkCommand("cat")])))
        # make the invented nodes reachable: our own update lists them too
        out.append(self.own_update({n: LINK_COST for n in names[:MAX_LISTED_NAMES]}))
        return out


# ------------------------------------------------------------------------------------------------
# Node watch


@dataclass
class Stop:
    """A node that exited during the run: a node-stopping input."""

    node: str
    kind: str
    at: float
    exit_code: int | None
    reason: str
    #: Each kind sent in the STOP_WINDOW before the stop was seen: how many seconds ago.
    recent_kinds: dict[str, float]
    last_inputs: list[dict[str, Any]]
    restarted: bool


@dataclass
class Watch:
    """Checks every node after each round; records and restarts nodes that exited.

    A stop shows some time after the input that caused it (a flooded update reaches the
    other nodes, a node takes a moment to shut down): attack rounds are followed by a short
    wait (:data:`SETTLE`), and a stop is counted with the kind of the round just ended, or,
    after a random or mutated round, with the latest attack kind sent in the last
    :data:`STOP_WINDOW` s.  The report also lists every kind sent in that window, and the
    node's own last error event.
    """

    mesh: Mesh
    started: float
    max_restarts: int
    last_sent: dict[str, float] = field(default_factory=dict)
    recent: dict[str, deque[bytes]] = field(default_factory=dict)
    stops: list[Stop] = field(default_factory=list)

    def sent(self, kind: str, payload: bytes) -> None:
        self.last_sent[kind] = time.monotonic()
        self.recent.setdefault(kind, deque(maxlen=5)).append(payload)

    def stopped(self) -> list[NodeProcess]:
        return [n for n in self.mesh.nodes.values() if not n.alive]

    def wait_for_stop(self, grace: float) -> None:
        """A broken link may mean the target is stopping: give it ``grace`` s to exit."""
        end = time.monotonic() + grace
        while time.monotonic() < end and not self.stopped():
            time.sleep(0.02)

    def _blame(self, kind: str, now: float) -> tuple[str, dict[str, float]]:
        window = {k: round(now - t, 2) for k, t in self.last_sent.items()
                  if now - t <= STOP_WINDOW}
        if kind in ATTACK_KINDS or kind == CONTROL_KIND:
            return kind, window
        attacks = [k for k in window if k in ATTACK_KINDS]
        return (min(attacks, key=window.__getitem__) if attacks else kind), window

    def check(self, kind: str) -> bool:
        """Record and restart every node that exited; False once restarts are used up."""
        if not self.stopped():
            return True
        blamed, window = self._blame(kind, time.monotonic())
        time.sleep(STOP_GRACE)  # one input may stop several nodes (a flooded update)
        for _ in range(len(self.mesh.nodes) * 2):  # bounded: nodes that stop while we restart
            dead = self.stopped()
            if not dead:
                break
            for node in dead:
                last = [{"len": len(p), "head": p[:300].decode("utf-8", "replace")}
                        for p in self.recent.get(blamed, ())]
                self.stops.append(Stop(node.name, blamed, round(time.monotonic() - self.started, 2),
                                       node.proc.returncode if node.proc else None,
                                       _last_error(node), window, last, True))
                print(f"node {node.name} stopped, blamed on {blamed!r} (kinds sent in the last "
                      f"{STOP_WINDOW:g} s, seconds ago: {window}): {self.stops[-1].reason}",
                      file=sys.stderr)
                if len(self.stops) > self.max_restarts:
                    self.stops[-1].restarted = False
                    return False
                try:
                    node.start()
                except (RuntimeError, TimeoutError) as exc:
                    print(f"restart of {node.name} failed: {exc}", file=sys.stderr)
                    self.stops[-1].restarted = False
                    return False
            time.sleep(STOP_GRACE)
        self.last_sent.clear()
        try:
            self.mesh.wait_converged(timeout=60)
        except TimeoutError as exc:
            print(f"mesh did not converge after a restart: {exc}", file=sys.stderr)
        return True


def _last_error(node: NodeProcess) -> str:
    """The node's own last error event (diagnosis for the report, not attacker knowledge)."""
    for event in reversed(node.log_events()[-200:]):
        if event.get("level") in ("error", "critical"):
            detail = event.get("detail") or event.get("reason") or ""
            return f"{event.get('event')}: {detail}"[:300]
    return "no error event in its log"


def vm_rss_kib(node: NodeProcess) -> int | None:
    if not node.alive or node.proc is None:
        return None
    try:
        for line in Path(f"/proc/{node.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


# ------------------------------------------------------------------------------------------------
# Fuzzing loops


def handshake(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    hello = m.encode_routing_update(m.RoutingUpdate(
        node_id=FUZZER, update_id="hello123", update_epoch=1, update_sequence=1,
        connections={}, forwarding_node=FUZZER))
    sock.sendall(frame(hello))
    sock.settimeout(SEND_TIMEOUT)
    return sock


def drain(sock: socket.socket, intel: Intel, wait: float = 0.0) -> None:
    """Read what the target sent us (at most 64 reads), decoding it into ``intel``."""
    for _ in range(64):
        readable, _, _ = select.select([sock], [], [], wait)
        if not readable:
            return
        data = sock.recv(1 << 20)
        if not data:
            raise ConnectionResetError("target closed the link")
        intel.feed(data)
        wait = 0.0


def fuzz_link(rng: random.Random, port: int, deadline: float, kinds: list[str],
              attacker: Attacker, watch: Watch, counts: Counter[str]) -> None:
    """Rounds of one input kind each until ``deadline``; nodes are checked after each round."""
    sock: socket.socket | None = None
    while time.monotonic() < deadline:
        kind = rng.choice(kinds)
        broken = False
        try:
            if sock is None:
                attacker.intel.reset_stream()
                sock = handshake(port)
                drain(sock, attacker.intel, wait=0.3)  # the target's update and database
            inputs = attacker.round(kind)
            if inputs is None:  # not learned yet what this attack needs
                kind, inputs = "mutated", attacker.round("mutated")
            for payload in inputs:
                raw = kind in BASIC_KINDS and rng.random() >= 0.9  # unframed bytes
                sock.sendall(payload if raw else frame(payload))
                counts[kind] += 1
                watch.sent(kind, payload)
            drain(sock, attacker.intel, wait=0.01)
            settle = SETTLE.get(kind, 0.0)
            if settle:  # give a stop time to show before another kind is sent
                watch.wait_for_stop(settle)
        except OSError:
            broken = True
            if sock is not None:
                sock.close()
            sock = None
        if broken:
            watch.wait_for_stop(LINK_GRACE)
        if not watch.check(kind):
            break
    if sock is not None:
        sock.close()


def fuzz_control(rng: random.Random, path: str, deadline: float, watch: Watch,
                 counts: Counter[str]) -> None:
    while time.monotonic() < deadline:
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(0.5)
                sock.connect(path)
                sock.recv(200)
                for _ in range(rng.randint(1, 20)):
                    line = rng.randbytes(rng.randint(0, 100)) if rng.random() < 0.3 \
                        else mutate(rng, rng.choice(CONTROL_SEEDS))
                    line = line.replace(b"\n", b"") + b"\n"
                    sock.sendall(line)
                    counts[CONTROL_KIND] += 1
                    watch.sent(CONTROL_KIND, line)
                    try:
                        sock.recv(65536)
                    except socket.timeout:
                        break
        except OSError:
            time.sleep(0.01)
        if not watch.check(CONTROL_KIND):
            break


# ------------------------------------------------------------------------------------------------
# Final checks and report


def print_views(mesh: Mesh) -> None:
    """What each node believes (routes, known links of the real nodes) and its routing
    warnings, on stderr: why a final check failed."""
    real = set(mesh.nodes)
    for name, node in mesh.nodes.items():
        try:
            status = node.status()
            known = {n: links for n, links in status["KnownConnectionCosts"].items()
                     if n in real}
            print(f"{name}: routes to real nodes "
                  f"{ {n: h for n, h in status['RoutingTable'].items() if n in real} }, "
                  f"known links {known}, {len(status['KnownConnectionCosts'])} nodes known",
                  file=sys.stderr)
        except (RuntimeError, OSError) as exc:
            print(f"{name}: no status ({exc})", file=sys.stderr)
        events = [e for e in node.log_events() if e.get("level") in ("warning", "error")]
        for event in events[-15:]:
            print(f"  {name} {event}", file=sys.stderr)


def final_checks(mesh: Mesh) -> dict[str, bool]:
    checks = {"alive": all(n.alive for n in mesh.nodes.values())}
    try:
        wait_until(lambda: mesh.nodes["controller01"].routes().get("executor01") == TARGET,
                   timeout=60, what="route through the fuzzed node")
        checks["route_through_target"] = True
    except (TimeoutError, RuntimeError, OSError):
        checks["route_through_target"] = False
        print_views(mesh)
    job_ok = False
    try:
        mesh.wait_until_work_types("controller01", "executor01", ["cat"])
        job = subprocess.run(
            [str(Path(sys.executable).parent / "receptorctl"), "--socket",
             str(mesh.nodes["controller01"].socket), "work", "submit", "--node", "executor01",
             "--payload-literal", "still alive", "--rm", "--follow", "cat"],
            capture_output=True, text=True, timeout=120)
        job_ok = job.returncode == 0 and "still alive" in job.stdout
        if not job_ok:
            print(f"remote job failed ({job.returncode}): {job.stdout[-500:]!r} "
                  f"{job.stderr[-500:]!r}", file=sys.stderr)
    except (TimeoutError, RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"remote job not run: {exc}", file=sys.stderr)
    checks["remote_job_works"] = job_ok
    return checks


def table(report: dict[str, Any]) -> str:
    stops = Counter(s["kind"] for s in report["stops"])
    lines = [f"{'kind':<18}{'inputs':>10}{'node stops':>12}"]
    for kind, n in report["inputs"].items():
        lines.append(f"{kind:<18}{n:>10}{stops.get(kind, 0):>12}")
    lines.append(f"{'total':<18}{sum(report['inputs'].values()):>10}{len(report['stops']):>12}")
    rss = report["target_rss_kib"]
    lines.append(f"target VmRSS: before {rss['before']} KiB, after {rss['after']} KiB"
                 f"{' (after a restart)' if rss['restarted'] else ''}")
    for check, ok in report["final_checks"].items():
        lines.append(f"final check {check}: {'ok' if ok else 'FAILED'}")
    for stop in report["stops"]:
        lines.append(f"stop: {stop['node']} at {stop['at']} s after {stop['kind']!r} "
                     f"(exit {stop['exit_code']}): {stop['reason']}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="fuzzing time (half on the link, half on the control socket)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--attacks", default="all",
                        help="comma-separated attack kinds to mix in (%s), 'all' or 'none'"
                             % ", ".join(ATTACK_KINDS))
    parser.add_argument("--sustained-older", action="store_true",
                        help="older-instance: keep one forged epoch with increasing sequences "
                             "(a well-formed duplicate; without signed routing a node must stop)")
    parser.add_argument("--flood-names", type=int, default=20000,
                        help="distinct invented node names of name-flood (then re-announced)")
    parser.add_argument("--max-restarts", type=int, default=20,
                        help="stop fuzzing after this many node stops")
    args = parser.parse_args(argv)
    if args.attacks == "all":
        args.attacks = list(ATTACK_KINDS)
    elif args.attacks == "none":
        args.attacks = []
    else:
        args.attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
        unknown = sorted(set(args.attacks) - set(ATTACK_KINDS))
        if unknown:
            parser.error(f"--attacks: unknown kind(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(ATTACK_KINDS)}, all, none")
    return args


def build_mesh() -> Mesh:
    mesh = Mesh(Path(tempfile.mkdtemp(prefix="mesh-fuzz-")))
    mesh.add("controller01")
    mesh.add(TARGET)
    mesh.add("executor01", listen=False, sections=[
        {"work-command": {"worktype": "cat", "command": "cat"}}])
    for node in mesh.nodes.values():
        node.log_level = "warning"
    mesh.link(TARGET, "controller01")
    mesh.link("executor01", TARGET)
    return mesh


def run(args: argparse.Namespace, mesh: Mesh) -> dict[str, Any]:
    rng = random.Random(args.seed)
    mesh.start()
    mesh.wait_converged()
    target = mesh.nodes[TARGET]
    first_pid = target.proc.pid if target.proc else None
    rss_before = vm_rss_kib(target)
    kinds = list(BASIC_KINDS) + args.attacks
    counts: Counter[str] = Counter({k: 0 for k in [*kinds, CONTROL_KIND]})
    watch = Watch(mesh, time.monotonic(), args.max_restarts)
    attacker = Attacker(rng, Intel(), sustained_older=args.sustained_older,
                        flood_names=args.flood_names)
    half = args.seconds / 2
    fuzz_link(rng, mesh.ports[TARGET], time.monotonic() + half, kinds, attacker, watch, counts)
    fuzz_control(rng, str(target.socket), time.monotonic() + half, watch, counts)
    checks = final_checks(mesh)
    return {
        "seconds": args.seconds, "seed": args.seed, "attacks": args.attacks,
        "sustained_older": args.sustained_older,
        "inputs": dict(counts),
        "link_inputs": sum(n for k, n in counts.items() if k != CONTROL_KIND),
        "control_inputs": counts[CONTROL_KIND],
        "node_stops": len(watch.stops),
        "stops": [vars(s) for s in watch.stops],
        "learned_nodes": {n: {"epoch": i.epoch, "sequence": i.sequence}
                          for n, i in attacker.intel.nodes.items()},
        "target_rss_kib": {"before": rss_before, "after": vm_rss_kib(target),
                           "restarted": target.proc is not None and target.proc.pid != first_pid},
        "final_checks": checks,
        "target_alive": target.alive,
        "remote_job_ok": checks["remote_job_works"],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mesh = build_mesh()
    try:
        report = run(args, mesh)
    finally:
        mesh.cleanup()
    print(table(report))
    print("JSON: " + json.dumps(report))
    return 0 if report["node_stops"] == 0 and all(report["final_checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
