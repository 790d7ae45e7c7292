"""Cost of authenticated routing (``route-auth``) per routing update, in-process.

Makes a CA and a node-ID certificate (RSA 2048, as ``mesh cert`` does), then times, for a
routing update with ``--connections`` links: signing it (canonical bytes + signature), verifying
it with the certificate already cached (what a node does for every update but the first of each
origin), the first verification of a certificate (chain check), and the unsigned encode/decode
for comparison.  Prints the median of ``--rounds`` runs in microseconds, and the update's size
with and without ``MeshSig``/``MeshCert``.

    .venv/bin/python bench/route_auth_bench.py [--rounds 2000] [--connections 4]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

from cryptography.hazmat.primitives import serialization

from mesh.net import messages as m
from mesh_builtin import certs
from mesh_builtin import route_auth as ra


def median_us(action: Callable[[], object], rounds: int) -> float:
    """The median wall time of ``action`` in microseconds."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--bits", type=int, default=2048, help="RSA key size")
    args = parser.parse_args(argv)

    ca_cert, ca_key = certs.make_ca("bench CA", bits=args.bits)
    signer_key = certs.generate_key(args.bits)
    req = certs.make_request("n001", signer_key, node_ids=["n001"])
    leaf = certs.sign_request(req, ca_cert, ca_key)
    signer = ra.Signer(signer_key, leaf.public_bytes(serialization.Encoding.DER))
    origin = ra.RouteAuthenticator("n001", "require", signer, ra.CertificateChecker([ca_cert]))
    verifier = ra.RouteAuthenticator("n002", "require", signer,
                                     ra.CertificateChecker([ca_cert]))

    def update() -> m.RoutingUpdate:
        return m.RoutingUpdate(
            node_id="n001", update_id="AbCd1234", update_epoch=int(time.time() * (1 << 24)),
            update_sequence=42,
            connections={f"n{i:03d}": 1.0 for i in range(2, 2 + args.connections)},
            forwarding_node="n001", max_datagram=60000, keepalive_ms=1200)

    plain = m.encode_routing_update(update())
    signed_update = update()
    origin.sign_update(signed_update)
    signed = m.encode_routing_update(signed_update)
    verifier.accept_update(m.decode_routing_update(signed[1:]), "n001")  # caches the cert

    def sign_and_encode() -> bytes:
        u = update()
        origin.sign_update(u)
        return m.encode_routing_update(u)

    def decode_and_verify() -> bool:
        return verifier.accept_update(m.decode_routing_update(signed[1:]), "n001")

    def first_verification() -> bool:
        fresh = ra.RouteAuthenticator("n002", "require", signer,
                                      ra.CertificateChecker([ca_cert]))
        return fresh.accept_update(m.decode_routing_update(signed[1:]), "n001")

    rounds = args.rounds
    rows = [
        ("encode, unsigned", median_us(lambda: m.encode_routing_update(update()), rounds)),
        ("sign + encode", median_us(sign_and_encode, max(rounds // 4, 50))),
        ("decode, unsigned", median_us(lambda: m.decode_routing_update(plain[1:]), rounds)),
        ("decode + verify (certificate cached)", median_us(decode_and_verify, rounds)),
        ("decode + verify, first of a certificate", median_us(first_verification,
                                                              max(rounds // 10, 50))),
    ]
    assert decode_and_verify() and first_verification()
    print(f"\nroute-auth cost per routing update (RSA {args.bits}, {args.connections} "
          f"connections, median of {rounds} runs)")
    print(f"{'operation':<44} | µs")
    print(f"{'-' * 44}-+-{'-' * 8}")
    for label, value in rows:
        print(f"{label:<44} | {value:8.1f}")
    print(f"{'update size unsigned / signed (bytes)':<44} | {len(plain)} / {len(signed)}")
    print(f"{'  of which MeshSig / MeshCert (base64)':<44} | "
          f"{len(signed_update.signature or '')} / {len(signed_update.certificate or '')}")


if __name__ == "__main__":
    main()
