"""The detached runner of one ``work-command`` unit (Receptor's ``--command-runner``).

The node's runner server (:mod:`runner_server`, which has this module imported already) forks it
into a new session and calls ``Runner(unitdir, params, argv, ready_fd).run()``: ~1-2 ms instead of
the ~20 ms of a new interpreter.  If the server fails, the node starts it the old way, as a new
interpreter in a new session (see ``mesh_builtin.detached_runner.RUNNER_BOOT``)::

    python -I -S -c "<import command_runner; main()>" --unitdir DIR [--params TEXT] [--ready-fd N] \
        [--max-stdout BYTES] -- COMMAND [ARG...]

``python -m mesh_builtin.command_runner ...`` works too, but starts ~15 ms slower (site-packages).
With a ready fd (``--ready-fd``) it writes one byte to that fd and closes it once Running (or a
final state) is recorded, so the node's ``start()`` returns without polling.

It runs COMMAND with stdin from ``DIR/stdin`` and stdout+stderr appended to ``DIR/stdout``, in a process
group of its own, and keeps ``DIR/status`` current: ``Running: PID <child>`` (ExtraData
``{"Pid": <runner pid>, "Params": TEXT}``), the stdout size every 250 ms, and finally Succeeded
``exit status 0`` or Failed ``exit status N`` / ``signal: killed`` with ExtraData null, and
``StdoutFinalSize`` and ``StdoutSHA256`` (stdout is hashed while it grows, at every status tick).  With
``--max-stdout`` (``work-limits maxstdout``) a command whose stdout grows past BYTES is killed, stdout
is cut to BYTES and the unit is Failed ``stdout larger than the limit of BYTES bytes (work-limits
maxstdout)``.  It outlives the node (which may be killed and restarted meanwhile).

Status writes hold an exclusive ``flock`` on ``DIR/status.lock`` (the kernel's ``UnitLock`` takes the same
lock) and read-modify-write the JSON: in place, or replaced atomically for a final State.  A status that
is already final (Succeeded, Failed, Canceled) is never overwritten: finding one means someone else ended
the unit, so the runner kills its command and exits.

SIGTERM or SIGINT: SIGINT to the command's process group, up to 10 s for it to exit, then SIGKILL to the
group, status Failed ``Killed``, exit 255.

It imports only the standard library, and avoids even the modules that cost milliseconds at start
(``json`` and ``signal`` pull in ``re`` and ``enum``): when the runner server fails it is started for
every unit, and a small remote job should finish end to end in tens of milliseconds.  The node splits the params (``shlex``) and passes
the argv after ``--``, so the runner needs no lexer either.
"""

from __future__ import annotations

import fcntl
import os
import select
import sys
import time

try:  # C accelerators of json and signal, without the start-up cost of their Python wrappers
    import _json
    import _signal as _sig
except ImportError:  # pragma: no cover - other interpreters
    _json = None  # type: ignore[assignment]
    import signal as _sig  # type: ignore[no-redef]

USAGE = ("usage: command_runner.py --unitdir DIR [--params TEXT] [--ready-fd N] [--max-stdout BYTES] "
         "-- COMMAND [ARG...]\n"
         "Runs one work-command unit detached from the node; see the module docstring.\n")

PENDING, RUNNING, SUCCEEDED, FAILED, CANCELED = 0, 1, 2, 3, 4
FINAL_STATES = (SUCCEEDED, FAILED, CANCELED)

STATUS_INTERVAL = 0.25  # seconds between StdoutSize updates (Receptor's 250 ms)
CHUNK = 1 << 20  # bytes read at a time to hash stdout
HASH_INTERVAL = 0.02  # seconds between two hashing rounds while stdout grows
KILL_GRACE = 10.0  # seconds between SIGINT and SIGKILL when the runner is told to stop
STATUS_SLACK = 128  # spaces after the JSON of a replaced status file (the kernel's too)
MAX_WRITE_FAILURES = 3  # consecutive status-write failures before the runner gives up (as Receptor)
EXIT_KILLED = 255  # Receptor's runner exits -1

#: Go's names for Linux signals (``syscall.Signal.String()``), used for ``signal: <name>`` details.
GO_SIGNAL_NAMES = {
    1: "hangup", 2: "interrupt", 3: "quit", 4: "illegal instruction", 5: "trace/breakpoint trap",
    6: "aborted", 7: "bus error", 8: "floating point exception", 9: "killed",
    10: "user defined signal 1", 11: "segmentation fault", 12: "user defined signal 2",
    13: "broken pipe", 14: "alarm clock", 15: "terminated", 16: "stack fault", 17: "child exited",
    18: "continued", 19: "stopped (signal)", 20: "stopped", 21: "stopped (tty input)",
    22: "stopped (tty output)", 23: "urgent I/O condition", 24: "CPU time limit exceeded",
    25: "file size limit exceeded", 26: "virtual timer expired", 27: "profiling timer expired",
    28: "window changed", 29: "I/O possible", 30: "power failure", 31: "bad system call",
}


def go_signal_name(signum: int) -> str:
    return GO_SIGNAL_NAMES.get(signum, f"signal {signum}")


def describe_wait_status(wait_status: int) -> str:
    """Go's ``ProcessState.String()`` for a raw ``waitpid`` status."""
    if os.WIFEXITED(wait_status):
        return f"exit status {os.WEXITSTATUS(wait_status)}"
    if os.WIFSIGNALED(wait_status):
        text = "signal: " + go_signal_name(os.WTERMSIG(wait_status))
        return text + " (core dumped)" if os.WCOREDUMP(wait_status) else text
    return f"wait status {wait_status}"


# ------------------------------------------------------------------------------------------------
# JSON for the status file (compact, ASCII: what the kernel's json.dumps writes too)
# ------------------------------------------------------------------------------------------------


def _reject_constant(name: str) -> None:
    raise ValueError(f"invalid JSON constant {name}")


if _json is not None:

    class _ScanContext:
        strict = True
        object_hook = None
        object_pairs_hook = None
        parse_float = float
        parse_int = int
        parse_constant = staticmethod(_reject_constant)
        memo: dict = {}

    _scan = _json.make_scanner(_ScanContext())
    _encode_str = _json.encode_basestring_ascii

    def json_loads(text: str):
        text = text.strip()
        try:
            value, end = _scan(text, 0)
        except StopIteration:
            raise ValueError("status is not JSON") from None
        if end != len(text):
            raise ValueError("extra data after the JSON value")
        return value

    def json_dumps(value) -> str:
        if value is None:
            return "null"
        if value is True:
            return "true"
        if value is False:
            return "false"
        if isinstance(value, int):
            return int.__repr__(value)
        if isinstance(value, float):
            return float.__repr__(value)
        if isinstance(value, str):
            return _encode_str(value)
        if isinstance(value, dict):
            return "{" + ",".join(_encode_str(str(k)) + ":" + json_dumps(v)
                                  for k, v in value.items()) + "}"
        if isinstance(value, (list, tuple)):
            return "[" + ",".join(json_dumps(v) for v in value) + "]"
        raise TypeError(f"cannot encode {type(value).__name__} as JSON")

else:  # pragma: no cover
    import json as _json_module

    json_loads = _json_module.loads

    def json_dumps(value) -> str:
        return _json_module.dumps(value, separators=(",", ":"))


# ------------------------------------------------------------------------------------------------
# Status file
# ------------------------------------------------------------------------------------------------


class UnitGone(Exception):
    """The unit directory or its status file disappeared (the unit was released)."""


class StatusFinal(Exception):
    """The status is already final; someone else ended the unit."""


def _write_in_place(path: str, encoded: bytes) -> bool:
    """Overwrite ``path`` with ``encoded`` padded to the file's size, in one ``pwrite``; False
    (nothing written) if it does not fit.  As the kernel's unit store does for a status that is
    not final: renaming over the file would flush it first on ext4 (~1 ms)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        room = os.fstat(fd).st_size - 1
        if len(encoded) > room:
            return False
        padded = encoded + b" " * (room - len(encoded)) + b"\n"
        return os.pwrite(fd, padded, 0) == len(padded)
    finally:
        os.close(fd)


def update_status(unitdir: str, changes: dict) -> None:
    """Under the unit lock: read ``status``, apply ``changes`` and write it back: in place
    when the State is not final and the JSON fits, else by atomic replacement.

    Raises :class:`StatusFinal` (nothing written) when the stored state is already final.
    Only the write of a final State is fsynced (as in the kernel's unit store): the Running
    write is on the path of every job start, and on ext4 each fsync also flushes the stdout
    data written so far, which would slow down large outputs.
    """
    try:
        lock_fd = os.open(os.path.join(unitdir, "status.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    except FileNotFoundError:
        raise UnitGone(unitdir) from None
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        path = os.path.join(unitdir, "status")
        try:
            with open(path, encoding="utf-8") as handle:
                data = json_loads(handle.read())
        except FileNotFoundError:
            raise UnitGone(unitdir) from None
        if not isinstance(data, dict):
            raise ValueError("status is not a JSON object")
        if data.get("State") in FINAL_STATES:
            raise StatusFinal(data.get("State"))
        data.update(changes)
        encoded = json_dumps(data).encode("ascii")
        final = changes.get("State") in FINAL_STATES
        if not final and _write_in_place(path, encoded):
            return
        # .status.PID.*.tmp, as the kernel names its own: its start-up sweep keeps a live
        # writer's temp file and removes the rest
        tmp = os.path.join(unitdir, f".status.{os.getpid()}.runner.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, encoded + b" " * STATUS_SLACK + b"\n")
            if final:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        os.close(lock_fd)  # releases the flock


# ------------------------------------------------------------------------------------------------
# The runner
# ------------------------------------------------------------------------------------------------


def find_executable(command: str) -> str:
    """Resolve ``command`` like Go's ``exec.LookPath``; raise OSError with a message that says what is wrong."""
    if "/" in command:
        candidates = [command]
    else:
        path = os.environ.get("PATH", os.defpath)
        candidates = [os.path.join(d or ".", command) for d in path.split(os.pathsep)]
    for candidate in candidates:
        if os.path.isfile(candidate):
            if os.access(candidate, os.X_OK):
                return candidate
            if "/" in command:
                raise OSError(f"cannot execute {command}: permission denied (not executable)")
    if "/" in command:
        what = "is a directory" if os.path.isdir(command) else "no such file"
        raise OSError(f"command not found: {command} ({what})")
    raise OSError(f"command not found: {command} (no executable file named {command!r} in "
                  f"PATH={os.environ.get('PATH', os.defpath)})")


class StdoutHash:
    """SHA-256 of the unit's stdout, fed while the command writes it (at every status tick),
    so that the final status gets ``StdoutFinalSize`` and ``StdoutSHA256`` without reading
    a large output again at the end (the kernel's ``mesh.work.stdout_digest`` fields)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.pos = 0
        self.fd = -1
        self.hash = None

    def catch_up(self, end: int) -> bool:
        """Hash the file up to offset ``end`` (or its end, if shorter); True if there was
        anything to hash."""
        if self.pos >= end and self.hash is not None:
            return False
        if self.hash is None:
            try:  # OpenSSL's (~1 GB/s; the runner server imported it already)
                from _hashlib import openssl_sha256 as sha256
            except ImportError:  # pragma: no cover - Python without OpenSSL
                from hashlib import sha256
            self.hash = sha256()
        if self.fd < 0:
            try:
                self.fd = os.open(self.path, os.O_RDONLY)
            except OSError:
                return False
        start = self.pos
        while self.pos < end:
            chunk = os.pread(self.fd, min(CHUNK, end - self.pos), self.pos)
            if not chunk:
                break
            self.hash.update(chunk)
            self.pos += len(chunk)
        return self.pos > start

    def fields(self, size: int) -> dict:
        """The final status fields for a stdout of ``size`` bytes (hashed to there first)."""
        self.catch_up(size)
        if self.pos != size:  # the file shrank or cannot be read: record no digest
            return {}
        return {"StdoutFinalSize": size, "StdoutSHA256": self.hash.hexdigest()}


class Runner:
    def __init__(self, unitdir: str, params: str, argv: list[str], ready_fd: int | None,
                 max_stdout: int | None = None) -> None:
        self.unitdir = unitdir
        self.params = params
        self.argv = argv
        self.ready_fd = ready_fd
        #: ``work-limits maxstdout``: the command is stopped once stdout grows past it.
        self.max_stdout = max_stdout
        self.digest = StdoutHash(os.path.join(unitdir, "stdout"))
        self.child = 0
        self.pidfd: int | None = None
        self.stdout_fd = -1
        self.last_size = -1
        self.write_failures = 0
        self.stop_requested = False

    # -- helpers ---------------------------------------------------------------------------

    def signal_ready(self) -> None:
        if self.ready_fd is not None:
            try:
                os.write(self.ready_fd, b"R")
            except OSError:
                pass  # the node is gone; nobody waits
            os.close(self.ready_fd)
            self.ready_fd = None

    def stdout_size(self) -> int:
        try:
            return os.fstat(self.stdout_fd).st_size if self.stdout_fd >= 0 else 0
        except OSError:
            return 0

    def write(self, changes: dict) -> None:
        """Write a status change; StatusFinal and UnitGone propagate, other failures are counted."""
        try:
            update_status(self.unitdir, changes)
        except (StatusFinal, UnitGone):
            raise
        except Exception:
            self.write_failures += 1
            if self.write_failures > MAX_WRITE_FAILURES:
                raise
        else:
            self.write_failures = 0

    def final(self, state: int, detail: str) -> dict:
        """The status changes of a final state: size, digest, no ExtraData."""
        size = self.stdout_size()
        return {"State": state, "Detail": detail, "StdoutSize": size, "ExtraData": None,
                **self.digest.fields(size)}

    def fail(self, detail: str) -> int:
        try:
            self.write(self.final(FAILED, detail))
        except Exception:
            pass
        self.signal_ready()
        return 1

    def kill_group(self, signum: int) -> None:
        try:
            os.killpg(self.child, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def wait_child(self, timeout: float | None) -> int | None:
        """Wait up to ``timeout`` seconds (forever if None) for the command; its wait status or None."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                pid, wait_status = os.waitpid(self.child, os.WNOHANG)
            except ChildProcessError:
                return 0  # already reaped
            if pid:
                return wait_status
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            if self.pidfd is not None:
                select.select([self.pidfd], [], [], remaining)
            else:
                time.sleep(0.05 if remaining is None else min(0.05, remaining))

    def abandon(self) -> int:
        """Someone else ended the unit (or removed it): stop the command, write nothing."""
        self.kill_group(_sig.SIGKILL)
        self.wait_child(5.0)
        self.signal_ready()
        return EXIT_KILLED

    # -- main ------------------------------------------------------------------------------

    def run(self) -> int:
        try:
            stdin_fd = os.open(os.path.join(self.unitdir, "stdin"), os.O_RDONLY)
        except OSError as exc:
            return self.fail(f"Error: cannot open the unit's stdin file: {exc.strerror}")
        try:
            self.stdout_fd = os.open(os.path.join(self.unitdir, "stdout"),
                                     os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            return self.fail(f"Error: cannot open the unit's stdout file: {exc.strerror}")
        try:
            executable = find_executable(self.argv[0])
        except OSError as exc:
            return self.fail(f"Error: {exc}")

        # Signals wake the select() below through this pipe; handlers only set a flag.
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        _sig.set_wakeup_fd(wake_w)
        for signum in (_sig.SIGTERM, _sig.SIGINT):
            _sig.signal(signum, self._on_stop_signal)

        try:
            self.child = os.posix_spawn(
                executable, self.argv, dict(os.environ),
                file_actions=[(os.POSIX_SPAWN_DUP2, stdin_fd, 0),
                              (os.POSIX_SPAWN_DUP2, self.stdout_fd, 1),
                              (os.POSIX_SPAWN_DUP2, self.stdout_fd, 2)],
                setpgroup=0,  # its own process group, so a cancel reaches everything it starts
                # Python ignores SIGPIPE and SIGXFSZ; the command gets the defaults back.
                setsigdef=(_sig.SIGPIPE, _sig.SIGXFSZ, _sig.SIGTERM, _sig.SIGINT),
                setsigmask=(),
            )
        except OSError as exc:
            reason = exc.strerror or str(exc)
            return self.fail(f"Error: cannot execute {executable}: {reason}")
        finally:
            os.close(stdin_fd)
        try:
            self.pidfd = os.pidfd_open(self.child)
        except (AttributeError, OSError):
            self.pidfd = None  # old kernel: poll waitpid instead

        try:
            self.last_size = self.stdout_size()
            self.write({"State": RUNNING, "Detail": f"Running: PID {self.child}",
                        "StdoutSize": self.last_size,
                        "ExtraData": {"Pid": os.getpid(), "Params": self.params}})
            self.signal_ready()
            return self.supervise(wake_r)
        except (StatusFinal, UnitGone):
            return self.abandon()
        except Exception:
            self.kill_group(_sig.SIGKILL)
            self.wait_child(5.0)
            return self.fail("Error: command runner could not write the unit status")

    def _on_stop_signal(self, signum: int, frame: object) -> None:
        self.stop_requested = True

    def supervise(self, wake_r: int) -> int:
        """Until the command exits or a stop is asked: StdoutSize every STATUS_INTERVAL, and
        stdout hashed (and checked against ``max_stdout``) every HASH_INTERVAL while it grows,
        so that the final status waits for at most the last few milliseconds of output."""
        watch = [wake_r] if self.pidfd is None else [wake_r, self.pidfd]
        tick = STATUS_INTERVAL if self.pidfd is not None else 0.05
        next_status = time.monotonic() + STATUS_INTERVAL
        while True:
            if self.stop_requested:
                return self.stop()
            pid, wait_status = os.waitpid(self.child, os.WNOHANG)
            if pid:
                return self.finish(wait_status)
            now = time.monotonic()
            size = self.stdout_size()
            if self.max_stdout is not None and size > self.max_stdout:
                return self.cut()
            if now >= next_status:
                next_status = now + STATUS_INTERVAL
                if size != self.last_size:
                    self.last_size = size
                    self.write({"StdoutSize": size})
            growing = self.digest.catch_up(size)
            wait = min(HASH_INTERVAL if growing else tick, next_status - now)
            ready, _, _ = select.select(watch, [], [], max(0.0, wait))
            if wake_r in ready:
                try:
                    os.read(wake_r, 512)
                except BlockingIOError:
                    pass

    def finish(self, wait_status: int) -> int:
        if self.max_stdout is not None and self.stdout_size() > self.max_stdout:
            return self.cut()  # it outgrew the limit since the last tick
        detail = describe_wait_status(wait_status)
        ok = os.WIFEXITED(wait_status) and os.WEXITSTATUS(wait_status) == 0
        try:
            self.write(self.final(SUCCEEDED if ok else FAILED, detail))
        except (StatusFinal, UnitGone):
            pass
        if os.WIFEXITED(wait_status):
            return os.WEXITSTATUS(wait_status)
        return EXIT_KILLED

    def stop(self) -> int:
        self.kill_group(_sig.SIGINT)
        self.wait_child(KILL_GRACE)
        self.kill_group(_sig.SIGKILL)  # also whatever the command left behind in its group
        self.wait_child(5.0)
        try:
            self.write(self.final(FAILED, "Killed"))
        except (StatusFinal, UnitGone):
            pass
        return EXIT_KILLED

    def cut(self) -> int:
        """stdout outgrew ``max_stdout``: kill the command's group, keep stdout up to the
        limit, record Failed with the kernel's Detail (``stdout_limit_detail``)."""
        self.kill_group(_sig.SIGKILL)
        self.wait_child(5.0)
        try:
            os.ftruncate(self.stdout_fd, self.max_stdout)
        except OSError:
            pass
        detail = f"stdout larger than the limit of {self.max_stdout} bytes (work-limits maxstdout)"
        try:
            self.write(self.final(FAILED, detail))
        except (StatusFinal, UnitGone):
            pass
        return EXIT_KILLED


def parse_args(args: list[str]) -> tuple[str, str, int | None, int | None, list[str]]:
    unitdir, params, ready_fd, max_stdout = None, "", None, None
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-h", "--help"):
            sys.stdout.write(USAGE)
            raise SystemExit(0)
        if arg == "--":
            argv = args[i + 1:]
            break
        if arg in ("--unitdir", "--params", "--ready-fd", "--max-stdout") and i + 1 < len(args):
            value = args[i + 1]
            if arg == "--unitdir":
                unitdir = value
            elif arg == "--params":
                params = value
            elif arg == "--max-stdout":
                if not value.isdigit() or int(value) <= 0:
                    raise SystemExit(f"command_runner: --max-stdout {value!r} is not a positive "
                                     f"number of bytes\n{USAGE}")
                max_stdout = int(value)
            else:
                ready_fd = int(value)
            i += 2
            continue
        raise SystemExit(f"command_runner: unexpected argument {arg!r}\n{USAGE}")
    else:
        argv = []
    if not unitdir or not argv:
        raise SystemExit(f"command_runner: --unitdir and a command after -- are required\n{USAGE}")
    return unitdir, params, ready_fd, max_stdout, argv


def main(args: list[str] | None = None) -> int:
    unitdir, params, ready_fd, max_stdout, argv = parse_args(
        sys.argv[1:] if args is None else args)
    if ready_fd is not None:
        os.set_inheritable(ready_fd, False)  # the command must not hold the node's pipe open
    return Runner(unitdir, params, argv, ready_fd, max_stdout).run()


if __name__ == "__main__":
    sys.exit(main())
