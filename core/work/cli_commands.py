"""``mesh work``: submit, list, results, release and cancel work units.

A kernel plugin like any other (listed in ``mesh.plugins.DEFAULT_PLUGINS``); outputs follow
``receptorctl work`` so scripts can switch between the two.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from typing import IO, Any

import click

from mesh import hookimpl
from mesh.control.client import ControlClient, ControlClientError

CREATED = re.compile(r"Work unit created with ID (.+)\. Send stdin data and EOF\.")
RESERVED_PARAMS = ("command", "subcommand", "node", "worktype", "tlsclient", "ttl", "signwork")
PROGRESS_MIN = 8 * 1024 * 1024
CHUNK = 1024 * 1024


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"mesh: {message}", err=True)
    sys.exit(code)


def _client(socket_path: str | None) -> ControlClient:
    from mesh.defaults import default_socket

    try:
        return ControlClient(socket_path or default_socket(), timeout=None)
    except ControlClientError as exc:
        _fail(str(exc))
        raise


class Progress:
    """A one-line byte counter on stderr, shown only on a terminal for large transfers."""

    def __init__(self, what: str, total: int | None) -> None:
        self.what, self.total, self.done = what, total, 0
        self.enabled = sys.stderr.isatty() and (total is None or total >= PROGRESS_MIN)
        self.shown = False

    def add(self, count: int) -> None:
        self.done += count
        if not self.enabled or self.done < PROGRESS_MIN:
            return
        mib = self.done / 1048576
        text = f"{self.what}: {mib:.1f} MiB"
        if self.total:
            text += f" of {self.total / 1048576:.1f} MiB ({100 * self.done // self.total}%)"
        width = shutil.get_terminal_size().columns
        sys.stderr.write("\r" + text[:width - 1])
        sys.stderr.flush()
        self.shown = True

    def finish(self) -> None:
        if self.shown:
            sys.stderr.write("\n")


def _params(pairs: tuple[str, ...]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            _fail(f"--param {pair!r} must be key=value")
        if key.lower() in RESERVED_PARAMS:
            _fail(f"--param {key!r} is a reserved name")
        if value.startswith("@") and not value.startswith("@@"):
            try:
                with open(value[1:]) as handle:
                    value = handle.read()
            except OSError as exc:
                _fail(f"--param {key}: cannot read {value[1:]}: {exc}")
        params[key] = value
    return params


def _send_payload(client: ControlClient, source: IO[bytes] | bytes | None,
                  total: int | None) -> None:
    progress = Progress("payload", total)
    if isinstance(source, bytes):
        client.file.write(source)
        progress.add(len(source))
    elif source is not None:
        while chunk := source.read(CHUNK):
            client.file.write(chunk)
            progress.add(len(chunk))
    progress.finish()
    client.shutdown_write()


def stream_results(socket_path: str | None, unit_id: str, out: IO[bytes]) -> None:
    """Copy a unit's stdout to ``out`` until the node closes the stream."""
    client = _client(socket_path)
    try:
        client.send_line(f"work results {unit_id} 0")
        line = client.readline()
        if line != f"Streaming results for work unit {unit_id}":
            _fail(f"failed to get results: {line.removeprefix('ERROR: ')}")
        client.shutdown_write()
        progress = Progress("results", None)
        while chunk := client.file.read1(CHUNK):
            out.write(chunk)
            progress.add(len(chunk))
        out.flush()
        progress.finish()
    finally:
        client.close()


def _simple(socket_path: str | None, line: str) -> Any:
    client = _client(socket_path)
    try:
        return client.command(line)
    except ControlClientError as exc:
        _fail(str(exc))
    finally:
        client.close()


socket_option = click.option("--socket", "socket_path", envvar="MESH_SOCKET", default=None,
                             metavar="ADDRESS", help="Control socket (default: $MESH_SOCKET).")


@click.group("work")
def work_group() -> None:
    """Submit and manage work units."""


@work_group.command("submit")
@socket_option
@click.argument("worktype")
@click.option("--node", default="localhost", show_default=True, help="Node to run the work on.")
@click.option("--payload", "payload_file", type=click.File("rb"), default=None,
              help="File to send as stdin (- for standard input).")
@click.option("--payload-literal", default=None, help="Send this text and a newline as stdin.")
@click.option("--no-payload", is_flag=True, help="Send no stdin.")
@click.option("--param", "-a", "params", multiple=True, metavar="KEY=VALUE",
              help="Work parameter (value @file reads a file).")
@click.option("--ttl", default="", help="Remote only: fail if not started within this time.")
@click.option("--follow", "-f", is_flag=True, help="Stream the results after submitting.")
@click.option("--rm", "remove", is_flag=True,
              help="Release the unit when done (needs --follow; confirmed on stderr).")
def submit_command(socket_path: str | None, worktype: str, node: str, payload_file: Any,
                   payload_literal: str | None, no_payload: bool, params: tuple[str, ...],
                   ttl: str, follow: bool, remove: bool) -> None:
    """Submit a work unit of WORKTYPE."""
    chosen = sum(x is not None and x is not False
                 for x in (payload_file, payload_literal, no_payload or None))
    if chosen != 1:
        _fail("give exactly one of --payload FILE, --payload -, --payload-literal TEXT, "
              "--no-payload", 2)
    if remove and not follow:
        _fail("--rm needs --follow (without it the results would never be seen)", 2)
    request: dict[str, str] = {"command": "work", "subcommand": "submit", "node": node,
                               "worktype": worktype, **_params(params)}
    if ttl:
        request["ttl"] = ttl
    total = None
    source: IO[bytes] | bytes | None = None
    if payload_literal is not None:
        source = (payload_literal + "\n").encode()
    elif payload_file is not None:
        source = payload_file
        try:
            total = payload_file.seek(0, 2)
            payload_file.seek(0)
        except (OSError, ValueError):
            total = None
    client = _client(socket_path)
    try:
        client.send_line(json.dumps(request))
        line = client.readline()
        if CREATED.fullmatch(line) is None:
            _fail(f"failed to start work unit: {line.removeprefix('ERROR: ')}", 101)
        _send_payload(client, source, total)
        reply = client.reply()
    except ControlClientError as exc:
        _fail(f"remote error: {exc}", 101)
    finally:
        client.close()
    unit_id = reply["unitid"]
    if not follow:
        click.echo(f"Result: {reply['result']}")
        click.echo(f"Unit ID: {unit_id}")
        return
    try:
        stream_results(socket_path, unit_id, sys.stdout.buffer)
        status = _simple(socket_path, f"work status {unit_id}")
    finally:
        if remove:
            # stdout carries only the unit's output (it is often piped on, e.g. to
            # `ansible-runner process`), so the release confirmation goes to stderr
            for key, value in _simple(socket_path, f"work release {unit_id}").items():
                click.echo(f"({value}, {key})", err=True)
    if status.get("State") == 3:
        _fail(f"Remote unit failed: {status.get('Detail')}", 1)


@work_group.command("list")
@socket_option
@click.option("--unit-id", default=None, help="Only this unit.")
@click.option("-q", "--quiet", is_flag=True, help="Only print unit IDs.")
def list_command(socket_path: str | None, unit_id: str | None, quiet: bool) -> None:
    """List work units and their status as JSON."""
    units = _simple(socket_path, f"work list {unit_id}" if unit_id else "work list")
    if quiet:
        for key in units:
            click.echo(key)
    else:
        click.echo(json.dumps(units, indent=4, sort_keys=True))


@work_group.command("results")
@socket_option
@click.argument("unit_id")
def results_command(socket_path: str | None, unit_id: str) -> None:
    """Stream a unit's stdout until it finishes."""
    stream_results(socket_path, unit_id, sys.stdout.buffer)
    status = _simple(socket_path, f"work status {unit_id}")
    if status.get("State") == 3:
        _fail(f"Remote unit failed: {status.get('Detail')}", 1)


def _each(socket_path: str | None, verb: str, unit_ids: list[str]) -> None:
    client = _client(socket_path)
    failed = False
    try:
        for unit_id in unit_ids:
            try:
                reply = client.command(f"work {verb} {unit_id}")
            except ControlClientError as exc:
                click.echo(f"ERROR: {exc}", err=True)
                failed = True
                continue
            for key, value in reply.items():
                click.echo(f"({value}, {key})")
    finally:
        client.close()
    if failed:
        sys.exit(1)


@work_group.command("release")
@socket_option
@click.argument("unit_ids", nargs=-1)
@click.option("--all", "release_all", is_flag=True, help="Release every unit.")
@click.option("--force", is_flag=True, help="Release locally even if the remote node is down.")
def release_command(socket_path: str | None, unit_ids: tuple[str, ...], release_all: bool,
                    force: bool) -> None:
    """Release (delete) work units, locally and on the remote node."""
    ids = list(unit_ids)
    if release_all:
        ids = list(_simple(socket_path, "work list"))
    if not ids and not release_all:
        _fail("give unit IDs or --all", 2)
    _each(socket_path, "force-release" if force else "release", ids)


@work_group.command("cancel")
@socket_option
@click.argument("unit_ids", nargs=-1, required=True)
def cancel_command(socket_path: str | None, unit_ids: tuple[str, ...]) -> None:
    """Cancel running work units."""
    _each(socket_path, "cancel", list(unit_ids))


@hookimpl
def mesh_register_cli_commands(cli: click.Group) -> None:
    cli.add_command(work_group)
