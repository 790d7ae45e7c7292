"""The bench's two clients of a node's control socket, with one interface.

* :class:`ReceptorctlClient` calls receptorctl 1.6.9's library the way AWX does
  (``submit_work``, ``get_work_results(return_socket=True)``, ``simple_command``), with the
  connections ``receptorctl work submit --rm --follow`` makes: one to submit, one for the
  results, one for status and release (without the CLI's ``status`` version probe and its
  start-up).
* :class:`RawClient` speaks the same line protocol over a plain socket in this process, for
  comparison.

Both read results with :func:`raw_chain.drain` and send payloads through
:class:`raw_chain.PayloadClock`, like the raw-TCP reference.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from raw_chain import READ, drain
from receptorctl.socket_interface import ReceptorControl

SUCCEEDED = 2


class JobClient(Protocol):
    """What the work bench does with a control socket."""

    label: str

    def submit(self, node: str, worktype: str, payload: BinaryIO | bytes = b"",
               params: dict[str, str] | None = None) -> str:
        """Submit and send the payload; the unit ID once the node answered ``Job Started``."""

    def results(self, unit_id: str) -> int:
        """Stream a unit's results to EOF into nowhere; the byte count."""

    def status_and_release(self, unit_id: str) -> dict[str, Any]:
        """The unit's status, then release it."""

    def command(self, line: str) -> Any:
        """One command on a fresh connection; its JSON reply."""


def small_job(client: JobClient, node: str, worktype: str) -> tuple[float, float, float]:
    """One job done like ``work submit --rm --follow``: (submit, results, status+release)
    seconds."""
    t0 = time.perf_counter()
    unit_id = client.submit(node, worktype)
    t1 = time.perf_counter()
    size = client.results(unit_id)
    t2 = time.perf_counter()
    status = client.status_and_release(unit_id)
    t3 = time.perf_counter()
    if size == 0 or status["State"] != SUCCEEDED:
        raise RuntimeError(f"small job {unit_id}: {size} bytes, status {status}")
    return t1 - t0, t2 - t1, t3 - t2


class ReceptorctlClient:
    """receptorctl's ``ReceptorControl``, a new one per connection."""

    label = "receptorctl"

    def __init__(self, path: Path) -> None:
        self.address = str(path)

    def submit(self, node: str, worktype: str, payload: BinaryIO | bytes = b"",
               params: dict[str, str] | None = None) -> str:
        rc = ReceptorControl(self.address)
        try:
            reply = rc.submit_work(worktype, payload, node=node, params=params)
        finally:
            rc.close()
        if reply.get("result") != "Job Started":
            raise RuntimeError(f"submit {worktype} to {node}: {reply}")
        return str(reply["unitid"])

    def results(self, unit_id: str) -> int:
        rc = ReceptorControl(self.address)
        sock, sockfile = rc.get_work_results(unit_id, return_socket=True,
                                             return_sockfile=True)
        try:
            return drain(sockfile)
        finally:
            sockfile.close()
            sock.close()

    def status_and_release(self, unit_id: str) -> dict[str, Any]:
        rc = ReceptorControl(self.address)
        try:
            status: dict[str, Any] = rc.simple_command(f"work status {unit_id}")
            rc.simple_command(f"work release {unit_id}")
            return status
        finally:
            rc.close()

    def command(self, line: str) -> Any:
        rc = ReceptorControl(self.address)
        try:
            return rc.simple_command(line)
        finally:
            rc.close()


class _Session:
    """One raw control connection, greeted."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.reader = self.sock.makefile("rb")
        greeting = self.reader.readline()
        if not greeting.startswith(b"Receptor Control, node "):
            raise RuntimeError(f"{path}: unexpected greeting {greeting!r}")

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")

    def command(self, line: str) -> Any:
        self.send(line)
        reply = self.reader.readline()
        if reply.startswith(b"ERROR"):
            raise RuntimeError(reply.decode().strip())
        return json.loads(reply)

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


class RawClient:
    """The control protocol over a plain Unix socket in this process."""

    label = "raw"

    def __init__(self, path: Path) -> None:
        self.address = str(path)

    def submit(self, node: str, worktype: str, payload: BinaryIO | bytes = b"",
               params: dict[str, str] | None = None) -> str:
        session = _Session(self.address)
        try:
            session.send(json.dumps({"command": "work", "subcommand": "submit", "node": node,
                                     "worktype": worktype, **(params or {})}))
            created = session.reader.readline()
            if not created.startswith(b"Work unit created"):
                raise RuntimeError(f"submit {worktype} to {node}: {created!r}")
            if isinstance(payload, bytes):
                session.sock.sendall(payload)
            else:
                while chunk := payload.read(READ):
                    session.sock.sendall(chunk)
            session.sock.shutdown(socket.SHUT_WR)
            reply = json.loads(session.reader.readline())
        finally:
            session.close()
        if reply.get("result") != "Job Started":
            raise RuntimeError(f"submit {worktype} to {node}: {reply}")
        return str(reply["unitid"])

    def results(self, unit_id: str) -> int:
        session = _Session(self.address)
        try:
            session.send(f"work results {unit_id} 0")
            banner = session.reader.readline()
            if banner != f"Streaming results for work unit {unit_id}\n".encode():
                raise RuntimeError(f"results {unit_id}: {banner!r}")
            session.sock.shutdown(socket.SHUT_WR)
            return drain(session.reader)
        finally:
            session.close()

    def status_and_release(self, unit_id: str) -> dict[str, Any]:
        session = _Session(self.address)
        try:
            status: dict[str, Any] = session.command(f"work status {unit_id}")
            session.command(f"work release {unit_id}")
            return status
        finally:
            session.close()

    def command(self, line: str) -> Any:
        session = _Session(self.address)
        try:
            return session.command(line)
        finally:
            session.close()


CLIENTS: dict[str, type[ReceptorctlClient] | type[RawClient]] = {
    ReceptorctlClient.label: ReceptorctlClient, RawClient.label: RawClient}
