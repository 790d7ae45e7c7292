"""``mesh work``: submit, list, results, release and cancel work units.

A kernel plugin like any other (listed in ``mesh.plugins.DEFAULT_PLUGINS``); outputs follow
``receptorctl work`` so scripts can switch between the two.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import socket
import sys
import threading
import time
from typing import IO, TYPE_CHECKING, Any

import click

from mesh import hookimpl
from mesh.control.client import ControlClient, ControlClientError
from mesh.work.params import is_reserved_param
from mesh.work.states import FINAL, UnitState

if TYPE_CHECKING:  # pragma: no cover
    from mesh.work.stdout_digest import Digest

CREATED = re.compile(r"Work unit created with ID (.+)\. Send stdin data and EOF\.")
PROGRESS_MIN = 8 * 1024 * 1024
CHUNK = 1024 * 1024
#: Seconds between two ``work status`` polls while a unit is followed.
FOLLOW_POLL = 1.0
#: A Running unit's Detail is shown once its output has paused this long (seconds).
QUIET_TIME = 5.0
#: How long one ``work status`` poll may take before the watch stops polling (seconds).
STATUS_TIMEOUT = 30.0
#: Exit codes of a follow that stopped before the unit ended (as GNU timeout and shells).
EXIT_TIMEOUT, EXIT_INTERRUPTED = 124, 130


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"mesh: {message}", err=True)
    sys.exit(code)


def _address(socket_path: str | None) -> str:
    from mesh.defaults import default_socket

    return socket_path or default_socket()


def _client(socket_path: str | None) -> ControlClient:
    try:
        return ControlClient(_address(socket_path), timeout=None)
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
        if is_reserved_param(key):
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


class Duration(click.ParamType):
    """A positive Go duration (``30s``, ``10m``, ``1h30m``), as in the node's configuration;
    converted to seconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        from mesh.config.duration import DurationError, parse_go_duration

        try:
            seconds = parse_go_duration(value)
        except DurationError as exc:
            self.fail(str(exc), param, ctx)
        if seconds <= 0:
            self.fail(f"{value!r} is not a positive duration; give e.g. 30s or 10m", param, ctx)
        return seconds


class FollowStopped(Exception):
    """Following ended before the unit did: at ``--timeout`` or on Ctrl-C."""

    def __init__(self, why: str, code: int, status: dict[str, Any]) -> None:
        super().__init__(why)
        #: What stopped it, e.g. ``after 3s (--timeout)``.
        self.why = why
        #: The exit code the CLI ends with.
        self.code = code
        #: The unit's last ``work status`` reply ({} if none came).
        self.status = status


class DetailWatch(threading.Thread):
    """Watches a unit while its results stream: shows its Detail on stderr, and ends the
    stream at the deadline.

    It polls ``work status`` on a control session of its own.  A Detail is shown when it
    changes while nothing else shows progress: the unit is Pending (e.g. ``Waiting to
    submit: …``), or it is Running and its output paused for :data:`QUIET_TIME` (routine
    details of a unit whose output flows, such as ``Receiving results (…)``, stay hidden).
    """

    def __init__(self, address: str, unit_id: str, stream: ControlClient,
                 timeout: float | None) -> None:
        super().__init__(name=f"watch-{unit_id}", daemon=True)
        self.address, self.unit_id, self.stream = address, unit_id, stream
        self.deadline = None if timeout is None else time.monotonic() + timeout
        #: When the stream last delivered output (monotonic clock).
        self.last_output = time.monotonic()
        #: The last ``work status`` reply.
        self.status: dict[str, Any] = {}
        #: True once the deadline ended the stream.
        self.timed_out = False
        self._shown = ""
        self._done = threading.Event()
        self._lock = threading.Lock()  # orders finish() against printing and the shutdown

    def output(self) -> None:
        """The stream delivered output (called by the streaming thread)."""
        self.last_output = time.monotonic()

    def finish(self) -> None:
        """Stop watching; nothing is printed and the stream is not touched after this."""
        with self._lock:
            self._done.set()

    def run(self) -> None:
        client: ControlClient | None = None
        try:
            client = ControlClient(self.address, timeout=STATUS_TIMEOUT)
        except (ControlClientError, OSError):
            pass  # the stream reports an unreachable node; the deadline still holds
        try:
            while not self._done.is_set():
                if client is not None:
                    try:
                        self._show(client.command(f"work status {self.unit_id}"))
                    except (ControlClientError, OSError, ValueError):
                        client.close()  # e.g. the unit was released: its stream ends too
                        client = None
                wait = FOLLOW_POLL if client is not None else None
                if self.deadline is not None:
                    left = self.deadline - time.monotonic()
                    if left <= 0:
                        self._expire()
                        return
                    wait = left if wait is None else min(wait, left)
                self._done.wait(wait)
        finally:
            if client is not None:
                client.close()

    def _show(self, status: Any) -> None:
        if not isinstance(status, dict):
            return
        self.status = status
        state, detail = status.get("State"), str(status.get("Detail", ""))
        if state in FINAL or not detail or detail == self._shown:
            return
        if state != UnitState.PENDING and time.monotonic() - self.last_output < QUIET_TIME:
            return
        with self._lock:
            if not self._done.is_set():
                self._shown = detail
                click.echo(f"mesh: {self.unit_id}: {detail}", err=True)

    def _expire(self) -> None:
        with self._lock:
            if self._done.is_set():
                return  # the stream ended first
            self.timed_out = True
            self._done.set()
            try:  # wakes the streaming thread's read with EOF
                self.stream.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def stream_results(socket_path: str | None, unit_id: str, out: IO[bytes],
                   timeout: float | None = None, start: int = 0) -> "Digest | None":
    """Copy a unit's stdout from byte ``start`` to ``out`` until the node closes the stream,
    showing the unit's Detail on stderr meanwhile (see :class:`DetailWatch`).  Returns the
    size and SHA-256 of what was received from byte 0 (None for a later ``start``), for
    :func:`check_received`.

    Raises :class:`FollowStopped` after ``timeout`` seconds or on Ctrl-C; the unit is not
    touched then.
    """
    from mesh.work.stdout_digest import RunningDigest

    client = _client(socket_path)
    watch: DetailWatch | None = None
    received = RunningDigest() if start == 0 else None
    try:
        client.send_line(f"work results {unit_id} {start}")
        line = client.readline()
        if line != f"Streaming results for work unit {unit_id}":
            _fail(f"failed to get results: {line.removeprefix('ERROR: ')}")
        client.shutdown_write()
        watch = DetailWatch(_address(socket_path), unit_id, client, timeout)
        watch.start()
        progress = Progress("results", None)
        for chunk in client.chunks(CHUNK):
            out.write(chunk)
            if received is not None:
                received.update(chunk)
            watch.output()
            progress.add(len(chunk))
        watch.finish()  # at once: a deadline passing now must not call a finished unit stopped
        out.flush()
        progress.finish()
    except KeyboardInterrupt:
        raise FollowStopped("on Ctrl-C", EXIT_INTERRUPTED,
                            watch.status if watch else {}) from None
    finally:
        if watch is not None:
            watch.finish()
        client.close()
    if watch is not None and watch.timed_out:
        from mesh.config.duration import format_go_duration

        raise FollowStopped(f"after {format_go_duration(timeout or 0)} (--timeout)",
                            EXIT_TIMEOUT, watch.status)
    return received.result() if received is not None else None


def check_received(unit_id: str, status: dict[str, Any], received: "Digest | None") -> None:
    """Exit 1 if the whole stdout received for a final unit differs from the size and SHA-256
    its node recorded (nothing to check for a unit that has no record, e.g. on Receptor)."""
    from mesh.work.stdout_digest import DigestMismatch, recorded

    expected = recorded(status)
    if received is None or expected is None or status.get("State") not in FINAL:
        return
    try:
        expected.check(received, f"the stdout received for unit {unit_id}")
    except DigestMismatch as exc:
        _fail(str(exc))


def _follow_command(unit_id: str) -> str:
    """The command line that follows ``unit_id`` again (with this command's --socket)."""
    words = ["mesh", "work", "results"]
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.get_parameter_source("socket_path") \
            == click.core.ParameterSource.COMMANDLINE:
        words += ["--socket", ctx.params["socket_path"]]
    return shlex.join([*words, unit_id])


def _stopped(unit_id: str, stop: FollowStopped, *, kept: bool = False) -> None:
    """Exit after a follow that stopped early, saying how to pick the unit up again."""
    status = stop.status
    state = status.get("StateName", status.get("State")) if status else "in an unknown state"
    detail = f" ({status['Detail']})" if status.get("Detail") else ""
    click.echo(f"mesh: stopped following unit {unit_id} {stop.why}; it is {state}{detail}",
               err=True)
    not_released = " and not released (--rm)" if kept else ""
    _fail(f"the unit is left as it is{not_released}: follow it again with "
          f"`{_follow_command(unit_id)}`, or cancel and remove it with "
          f"`mesh work release {unit_id}`", stop.code)


def _check_failed(status: dict[str, Any]) -> None:
    if status.get("State") == UnitState.FAILED:
        _fail(f"Remote unit failed: {status.get('Detail')}", 1)


def _simple(socket_path: str | None, line: str) -> Any:
    client = _client(socket_path)
    try:
        return client.command(line)
    except ControlClientError as exc:
        _fail(str(exc))
    finally:
        client.close()


FOLLOW_TIMEOUT_HELP = ("Stop following after DURATION (30s, 10m, 1h30m), leave the unit as "
                       "it is and exit 124. Default: follow until the unit ends, however long "
                       "(Ctrl-C stops following with exit 130; the unit keeps going).")
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
@click.option("--follow", "-f", is_flag=True,
              help="Stream the results after submitting; while the unit waits, its Detail "
                   "(e.g. why it is not started yet) is shown on stderr.")
@click.option("--timeout", type=Duration(), default=None, metavar="DURATION",
              help=FOLLOW_TIMEOUT_HELP + " Needs --follow.")
@click.option("--rm", "remove", is_flag=True,
              help="Release the unit when done (needs --follow; confirmed on stderr).")
def submit_command(socket_path: str | None, worktype: str, node: str, payload_file: Any,
                   payload_literal: str | None, no_payload: bool, params: tuple[str, ...],
                   ttl: str, follow: bool, timeout: float | None, remove: bool) -> None:
    """Submit a work unit of WORKTYPE."""
    chosen = sum(x is not None and x is not False
                 for x in (payload_file, payload_literal, no_payload or None))
    if chosen != 1:
        _fail("give exactly one of --payload FILE, --payload -, --payload-literal TEXT, "
              "--no-payload", 2)
    if remove and not follow:
        _fail("--rm needs --follow (without it the results would never be seen)", 2)
    if timeout is not None and not follow:
        _fail("--timeout needs --follow (it limits how long the results are followed)", 2)
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
    stopped: FollowStopped | None = None
    try:
        received = stream_results(socket_path, unit_id, sys.stdout.buffer, timeout)
        status = _simple(socket_path, f"work status {unit_id}")
    except FollowStopped as exc:
        stopped = exc  # the unit may still run: it stays, --rm or not
    finally:
        if remove and stopped is None:
            # stdout carries only the unit's output (it is often piped on, e.g. to
            # `ansible-runner process`), so the release confirmation goes to stderr
            for key, value in _simple(socket_path, f"work release {unit_id}").items():
                click.echo(f"({value}, {key})", err=True)
    if stopped is not None:
        _stopped(unit_id, stopped, kept=remove)
    check_received(unit_id, status, received)
    _check_failed(status)


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
@click.option("--timeout", type=Duration(), default=None, metavar="DURATION",
              help=FOLLOW_TIMEOUT_HELP)
@click.option("--tail", type=int, default=None, metavar="BYTES",
              help="Start with the last BYTES of the output so far (the rest is not "
                   "transferred), then follow.")
@click.option("--from", "offset", type=int, default=None, metavar="OFFSET",
              help="Start at byte OFFSET of the output (0 is the start), then follow.")
@click.option("--verify", is_flag=True,
              help="Stream nothing: have the node check the unit's stored stdout (for a "
                   "remote unit, the controller's copy) against the size and SHA-256 "
                   "recorded when the unit ended.")
@click.option("--verify-file", type=click.Path(exists=True, dir_okay=False), default=None,
              metavar="FILE", help="Stream nothing: check FILE, a copy of the results "
                                   "fetched earlier, against that record.")
def results_command(socket_path: str | None, unit_id: str, timeout: float | None,
                    tail: int | None, offset: int | None, verify: bool,
                    verify_file: str | None) -> None:
    """Stream a unit's stdout until it finishes (its Detail on stderr while it waits).

    The whole stdout is checked against the size and SHA-256 its node recorded when the
    unit ended: a truncated or corrupted copy exits 1 with an error on stderr.
    """
    if sum(x is not None and x is not False for x in (tail, offset, verify or None,
                                                       verify_file)) > 1:
        _fail("give one of --tail, --from, --verify and --verify-file", 2)
    if verify:
        reply = _simple(socket_path, json.dumps({"command": "work", "subcommand": "verify",
                                                 "unitid": unit_id}))
        click.echo(f"{unit_id}: verified {reply['size']} bytes, SHA-256 {reply['sha256']}")
        return
    if verify_file is not None:
        _verify_file(socket_path, unit_id, verify_file)
        return
    for name, value in (("--tail", tail), ("--from", offset)):
        if value is not None and value < 0:
            _fail(f"{name} {value} is negative; give a byte count of 0 or more", 2)
    start = offset or 0
    if tail is not None:
        size = _simple(socket_path, f"work status {unit_id}").get("StdoutSize", 0)
        start = max(0, int(size) - tail)
    try:
        received = stream_results(socket_path, unit_id, sys.stdout.buffer, timeout, start)
    except FollowStopped as stop:
        _stopped(unit_id, stop)
    status = _simple(socket_path, f"work status {unit_id}")
    check_received(unit_id, status, received)
    _check_failed(status)


def _verify_file(socket_path: str | None, unit_id: str, path: str) -> None:
    """Check a saved copy of a unit's results against the size and SHA-256 its node recorded."""
    from mesh.work.stdout_digest import DigestMismatch, file_digest, recorded

    expected = recorded(_simple(socket_path, f"work status {unit_id}"))
    if expected is None:
        _fail(f"unit {unit_id} has no recorded size and SHA-256 (it has not ended, or it ended "
              f"on a node that does not record them, e.g. Receptor)")
        return
    actual = file_digest(path)
    try:
        expected.check(actual, path)
    except DigestMismatch as exc:
        _fail(str(exc))
    click.echo(f"{unit_id}: verified {actual.size} bytes, SHA-256 {actual.sha256} ({path})")


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


#: The release options that select units on the node (one ``work release-matching``).
FILTER_OPTIONS = "--failed, --succeeded, --canceled, --older-than, --dry-run"


@work_group.command("release")
@socket_option
@click.argument("unit_ids", nargs=-1)
@click.option("--all", "release_all", is_flag=True,
              help="Release every unit (with --older-than: of any state, older than that).")
@click.option("--failed", is_flag=True, help="Release the Failed units.")
@click.option("--succeeded", is_flag=True, help="Release the Succeeded units.")
@click.option("--canceled", is_flag=True, help="Release the Canceled units.")
@click.option("--older-than", type=Duration(), default=None, metavar="DURATION",
              help="Only units whose status last changed DURATION (30m, 1h, 168h) ago or "
                   "earlier; alone it selects finished (Succeeded, Failed, Canceled) units.")
@click.option("--dry-run", is_flag=True,
              help="Print (ID, would release) for what would be released; release nothing.")
@click.option("--force", is_flag=True, help="Release locally even if the remote node is down.")
def release_command(socket_path: str | None, unit_ids: tuple[str, ...], release_all: bool,
                    failed: bool, succeeded: bool, canceled: bool, older_than: float | None,
                    dry_run: bool, force: bool) -> None:
    """Release (delete) work units, locally and on the remote node.

    Give unit IDs, --all, or a policy: --failed, --succeeded and --canceled add states,
    --older-than limits by age (e.g. `mesh work release --failed --canceled --older-than 1h`).
    """
    states = [name for name, chosen in (("failed", failed), ("succeeded", succeeded),
                                         ("canceled", canceled)) if chosen]
    if not states and older_than is None and not dry_run:
        ids = list(unit_ids)
        if release_all:
            ids = list(_simple(socket_path, "work list"))
        if not ids and not release_all:
            _fail(f"give unit IDs or --all, or a selection ({FILTER_OPTIONS})", 2)
        _each(socket_path, "force-release" if force else "release", ids)
        return
    if unit_ids:
        _fail(f"give unit IDs or a selection ({FILTER_OPTIONS}), not both", 2)
    if release_all:
        states = ["all"]
    if not states and older_than is None:
        _fail("--dry-run needs --all, --failed, --succeeded, --canceled or --older-than", 2)
    _release_matching(socket_path, states, older_than, dry_run=dry_run, force=force)


def _release_matching(socket_path: str | None, states: list[str], older_than: float | None,
                      *, dry_run: bool, force: bool) -> None:
    """Release (or list, dry) the units the node selects, with one ``work release-matching``."""
    request: dict[str, Any] = {"command": "work", "subcommand": "release-matching",
                               "states": states, "dryrun": dry_run, "force": force}
    if older_than is not None:
        from mesh.config.duration import format_go_duration

        request["olderthan"] = format_go_duration(older_than)
    client = _client(socket_path)
    try:
        reply = client.command(json.dumps(request))
    except ControlClientError as exc:
        if str(exc) == "bad command":  # Receptor's answer to a subcommand it lacks
            _fail("the node does not know `work release-matching` (a Receptor node?): give "
                  "unit IDs or --all alone")
        _fail(str(exc))
    finally:
        client.close()
    for verb in ("would release", "released", "release pending"):
        for unit_id in reply.get(verb, []):
            click.echo(f"({unit_id}, {verb})")
    errors = reply.get("errors") or {}
    for unit_id, message in errors.items():
        click.echo(f"ERROR: {unit_id}: {message}", err=True)
    if errors:
        sys.exit(1)


@work_group.command("cancel")
@socket_option
@click.argument("unit_ids", nargs=-1, required=True)
def cancel_command(socket_path: str | None, unit_ids: tuple[str, ...]) -> None:
    """Cancel running work units."""
    _each(socket_path, "cancel", list(unit_ids))


@hookimpl
def mesh_register_cli_commands(cli: click.Group) -> None:
    cli.add_command(work_group)
