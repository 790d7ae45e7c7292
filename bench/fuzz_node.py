"""Fuzz a running node over a mesh link and over its control socket, then check it still works.

Starts a 3-node line (controller01 – target – executor01), then for a bounded time:
* over a raw TCP link to `target` (after a valid handshake as node "fuzzer"): random frames,
  and valid messages mutated (bit flips, truncation, splices, type-byte changes);
* over `target`'s control socket: random lines, and valid commands mutated.
Afterwards the target must be alive, its routes intact, and a remote job from controller01 to
executor01 through it must succeed.  Prints how many inputs were tried.

    .venv/bin/python bench/fuzz_node.py [--seconds 60] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mesh.net import messages as m
from mesh.net.highwayhash import node_hash
from mesh.testing import Mesh, wait_until

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
        node_id="fuzzer", update_id="abcdefgh", update_epoch=1, update_sequence=5,
        connections={"target": 1.0}, forwarding_node="fuzzer"))
    data = m.encode_data(30, node_hash("fuzzer"), node_hash("target"), "x", "ping", b"")
    ad = m.encode_service_advertisement(m.ServiceAdvertisement(
        node_id="fuzzer", service="svc", time_ns=time.time_ns(), conn_type=1,
        tags={"type": "x"}))
    return [update, data, ad, m.REJECT_MESSAGE]


def frame(payload: bytes) -> bytes:
    return struct.pack("<H", len(payload) & 0xFFFF) + payload[:65535]


def handshake(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    hello = m.encode_routing_update(m.RoutingUpdate(
        node_id="fuzzer", update_id="hello123", update_epoch=1, update_sequence=1,
        connections={}, forwarding_node="fuzzer"))
    sock.sendall(frame(hello))
    sock.settimeout(0.01)
    return sock


def fuzz_link(rng: random.Random, port: int, deadline: float) -> int:
    tried = 0
    seeds = link_seeds()
    sock = None
    while time.monotonic() < deadline:
        try:
            if sock is None:
                sock = handshake(port)
            payload = rng.randbytes(rng.randint(0, 200)) if rng.random() < 0.3 \
                else mutate(rng, rng.choice(seeds))
            sock.sendall(frame(payload) if rng.random() < 0.9 else payload)
            tried += 1
            if tried % 20 == 0:  # drain what the node sent back, now and then
                try:
                    sock.recv(1 << 20)
                except socket.timeout:
                    pass
        except OSError:
            if sock is not None:
                sock.close()
            sock = None
    if sock is not None:
        sock.close()
    return tried


def fuzz_control(rng: random.Random, path: str, deadline: float) -> int:
    tried = 0
    while time.monotonic() < deadline:
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(0.5)
                sock.connect(path)
                sock.recv(200)
                for _ in range(rng.randint(1, 20)):
                    line = rng.randbytes(rng.randint(0, 100)) if rng.random() < 0.3 \
                        else mutate(rng, rng.choice(CONTROL_SEEDS))
                    sock.sendall(line.replace(b"\n", b"") + b"\n")
                    tried += 1
                    try:
                        sock.recv(65536)
                    except socket.timeout:
                        break
        except OSError:
            continue
    return tried


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    mesh = Mesh(Path(tempfile.mkdtemp(prefix="mesh-fuzz-")))
    try:
        mesh.add("controller01")
        mesh.add("target")
        mesh.add("executor01", listen=False, sections=[
            {"work-command": {"worktype": "cat", "command": "cat"}}])
        for node in mesh.nodes.values():
            node.log_level = "warning"
        mesh.link("target", "controller01")
        mesh.link("executor01", "target")
        mesh.start()
        mesh.wait_converged()
        target = mesh.nodes["target"]
        half = args.seconds / 2
        link_inputs = fuzz_link(rng, mesh.ports["target"], time.monotonic() + half)
        control_inputs = fuzz_control(rng, str(target.socket), time.monotonic() + half)
        alive = target.alive
        wait_until(lambda: mesh.nodes["controller01"].routes().get("executor01") == "target",
                   timeout=30, what="route through the fuzzed node")
        mesh.wait_until_work_types("controller01", "executor01", ["cat"])
        job = subprocess.run(
            [str(Path(sys.executable).parent / "receptorctl"), "--socket",
             str(mesh.nodes["controller01"].socket), "work", "submit", "--node", "executor01",
             "--payload-literal", "still alive", "--rm", "--follow", "cat"],
            capture_output=True, text=True, timeout=120)
        ok = alive and target.alive and job.returncode == 0 and "still alive" in job.stdout
        print(json.dumps({"seconds": args.seconds, "link_inputs": link_inputs,
                          "control_inputs": control_inputs, "target_alive": target.alive,
                          "remote_job_ok": job.returncode == 0}, indent=2))
        return 0 if ok else 1
    finally:
        mesh.cleanup()


if __name__ == "__main__":
    sys.exit(main())
