"""The runner server: forks the detached runner of each ``work-command`` unit.

Starting a unit's runner (:mod:`command_runner`) as a new ``python -I -S`` interpreter costs
~20 ms of wall and CPU time, on the critical path of every small job.  Instead, a node starts one
runner server (lazily, with its first unit; it lives as long as the node) and asks it, over a Unix
socketpair, to fork a runner per unit: the server has imported ``command_runner`` already, so the
node has the runner's pid ~1-2 ms after it asked (two process wake-ups and a fork of a small
process), and the runner goes straight to work.

**The server** is this module run by :data:`SERVER_BOOT`::

    python -I -S -c "<import runner_server; main()>" --fd N [--node-pid P]

(``--node-pid`` only tells ``ps`` readers whose server it is.)  It imports only the standard
library, from the directory of ``command_runner`` (``RUNNER_DIR``), and runs in a session of its
own, so a signal to the node's process group does not reach it.  For each request it forks a
child that

* opens the unit directory and keeps it open while it lives: a forked runner's command line is
  the server's, and this open directory is what tells it apart (see
  ``mesh_builtin.runner_processes.is_runner``);
* calls ``setsid()`` (a session of its own: a SIGKILL of the node's or the server's process
  group never reaches it), restores SIGCHLD, closes the server's socket and signal pipe, takes
  the node's environment and working directory from the request;
* runs ``command_runner.Runner(...).run()``, then ends with ``os._exit(code)``.

It replies with the child's pid, reaps its children on SIGCHLD and reports each one's wait status,
and exits when the node's end of the socket closes: the node was killed, or exited (at exit the
node closes it and waits for the server, see :meth:`RunnerServer.close`).  Runners it forked run
on: they own the unit's status, exactly as a runner started the old way.

**Protocol** (both ways: a 4-byte big-endian length, then compact JSON):

* node to server: ``{"id": N, "unitdir": DIR, "params": TEXT, "argv": [...], "env": {...},
  "cwd": DIR, "maxstdout": BYTES-or-null}`` with the write end of the unit's ready pipe attached (``SCM_RIGHTS``);
* server to node: ``{"id": N, "pid": P}`` or ``{"id": N, "error": TEXT}``; and, whenever a child
  exits, ``{"exited": P, "status": WAIT_STATUS}``.

**The client**, :class:`RunnerServer`, is the node's end (one per node process:
:meth:`RunnerServer.shared`).  When the server cannot be started, dies or does not answer,
:meth:`RunnerServer.spawn` raises :class:`RunnerServerError` and the next spawn starts a new
server; the caller then starts the runner the old way.  Whenever ``spawn`` raises, the server holds
no copy of the ready pipe's write end any more (it closed it, exited, or was killed and reaped), so
the pipe tells whether a runner was forked all the same: only a runner still holds it.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:  # the client's modules; the server never imports them
    import asyncio
    import socket
    import subprocess

#: The directory of this module and of ``command_runner``; the server imports both from it (so
#: their bytecode is cached in its ``__pycache__``).
SERVER_DIR = os.path.dirname(os.path.realpath(__file__))
SERVER_BOOT = (f"import sys; sys.path.append({SERVER_DIR!r}); "
               "from runner_server import main; sys.exit(main())")
#: Part of the command line of the server, and so of every runner it forks.
SERVER_MARKER = b"from runner_server import main"

REPLY_TIMEOUT = 10.0  # seconds spawn() waits for the server's answer before giving up on it
EXIT_REPORT_TIMEOUT = 1.0  # seconds exit_code() waits for the report of an exited runner
CLOSE_TIMEOUT = 2.0  # seconds close() waits for the server to exit before it SIGKILLs it
KILL_WAIT = 0.2  # seconds the node waits for a server it SIGKILLed before reaping it later
MAX_FRAME = 16 << 20  # bytes; a longer frame means the stream is corrupt
MAX_REMEMBERED_EXITS = 1024  # exit statuses kept for runners nobody asked about yet
HEADER = 4

USAGE = ("usage: runner_server.py --fd N [--node-pid P]\n"
         "Forks work-command runners for the node at the other end of fd N; see the module "
         "docstring.\n")


def frame(body: bytes) -> bytes:
    """One protocol frame: ``body`` behind its 4-byte big-endian length."""
    return len(body).to_bytes(HEADER, "big") + body


# ------------------------------------------------------------------------------------------------
# The server (runs under python -I -S: standard library only, and little of it)
# ------------------------------------------------------------------------------------------------


class _Server:
    def __init__(self, fd: int) -> None:
        import _signal
        import _socket

        import command_runner  # beside this module, on sys.path (see SERVER_BOOT)

        self.runner = command_runner
        self.sig = _signal
        self.net = _socket
        self.sock = _socket.socket(fileno=fd)
        self.sock.setblocking(True)
        self.out = bytearray()  # replies and exit reports not sent yet
        # SIGCHLD wakes select() through this pipe; the handler does nothing else
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        _signal.set_wakeup_fd(self.wake_w)
        _signal.signal(_signal.SIGCHLD, _ignore_signal)

    def serve(self) -> int:
        import select

        while True:
            self.reap()
            self.flush()
            readable, _, _ = select.select([self.sock, self.wake_r],
                                           [self.sock] if self.out else [], [])
            if self.wake_r in readable:
                try:
                    while os.read(self.wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
            if self.sock in readable:
                request = self.read_request()
                if request is None:
                    return 0  # the node is gone; the runners run on
                self.queue(self.answer(*request))

    # -- socket ------------------------------------------------------------------------------

    def read_request(self) -> tuple[bytes, list[int]] | None:
        """One request frame and the fds that came with it; None at EOF (or a broken stream)."""
        fds: list[int] = []
        header = self.read_exactly(HEADER, fds)
        if header is None:
            return None
        size = int.from_bytes(header, "big")
        body = self.read_exactly(size, fds) if size <= MAX_FRAME else None
        if body is None:
            _close_all(fds)
            return None
        return body, fds

    def read_exactly(self, size: int, fds: list[int]) -> bytes | None:
        net = self.net
        flags = getattr(net, "MSG_CMSG_CLOEXEC", 0)
        data = b""
        while len(data) < size:
            try:
                chunk, ancillary, _, _ = self.sock.recvmsg(size - len(data), net.CMSG_LEN(64),
                                                           flags)
            except OSError:
                return None
            for level, kind, payload in ancillary:
                if level == net.SOL_SOCKET and kind == net.SCM_RIGHTS:
                    usable = len(payload) - len(payload) % 4
                    fds += [int.from_bytes(payload[i:i + 4], sys.byteorder, signed=True)
                            for i in range(0, usable, 4)]
            if not chunk:
                return None
            data += chunk
        return data

    def queue(self, message: dict) -> None:
        self.out += frame(self.runner.json_dumps(message).encode("ascii"))

    def flush(self) -> None:
        net = self.net
        while self.out:
            try:
                sent = self.sock.send(self.out, net.MSG_DONTWAIT | net.MSG_NOSIGNAL)
            except BlockingIOError:
                return  # select() waits until the node reads
            except OSError:
                self.out.clear()  # the node is gone; the next read sees EOF
                return
            del self.out[:sent]

    # -- children ----------------------------------------------------------------------------

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if not pid:
                return
            self.queue({"exited": pid, "status": status})

    def answer(self, body: bytes, fds: list[int]) -> dict:
        """Fork a runner for one request; the reply.  Closes every fd that came with it."""
        ready = fds[0] if fds else None
        _close_all(fds[1:])
        request_id = None
        try:
            request = self.runner.json_loads(body.decode("ascii"))
            request_id = request.get("id") if isinstance(request, dict) else None
            unitdir, params, argv, env, cwd, max_stdout = _checked(request)
            try:
                pid = os.fork()
            except OSError as exc:
                return {"id": request_id, "error": f"cannot fork a runner: {exc.strerror or exc}"}
            if pid == 0:
                self.run_child(unitdir, params, argv, env, cwd, ready, max_stdout)
            return {"id": request_id, "pid": pid}
        except (ValueError, UnicodeError) as exc:
            return {"id": request_id, "error": f"bad request: {exc}"}
        finally:
            if ready is not None:
                os.close(ready)  # only the runner holds the ready pipe now

    def run_child(self, unitdir: str, params: str, argv: list[str], env: dict[str, str] | None,
                  cwd: str | None, ready: int | None, max_stdout: int | None) -> NoReturn:
        code = 1
        try:
            try:  # kept open while the runner lives: it marks this process as the unit's runner
                os.open(unitdir, os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                pass  # the runner reports the missing unit directory itself
            os.setsid()
            sig = self.sig
            sig.set_wakeup_fd(-1)
            sig.signal(sig.SIGCHLD, sig.SIG_DFL)
            self.sock.close()
            os.close(self.wake_r)
            os.close(self.wake_w)
            if env is not None:
                os.environ.clear()
                os.environ.update(env)
            if cwd:
                try:
                    os.chdir(cwd)
                except OSError:
                    pass  # as if the node's working directory were the server's
            if ready is not None:
                os.set_inheritable(ready, False)  # the command must not hold the node's pipe
            code = self.runner.Runner(unitdir, params, argv, ready, max_stdout).run()
        finally:
            os._exit(code)


def _ignore_signal(signum: int, frame: object) -> None:
    pass


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _checked(request: Any,
             ) -> tuple[str, str, list[str], dict[str, str] | None, str | None, int | None]:
    """(unitdir, params, argv, env, cwd, maxstdout) of a request; ValueError says what is
    wrong."""
    if not isinstance(request, dict):
        raise ValueError("not a JSON object")
    unitdir, params, argv = request.get("unitdir"), request.get("params", ""), request.get("argv")
    env, cwd = request.get("env"), request.get("cwd")
    if not isinstance(unitdir, str) or not unitdir:
        raise ValueError("unitdir must be a non-empty string")
    if not isinstance(params, str):
        raise ValueError("params must be a string")
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
        raise ValueError("argv must be a non-empty list of strings")
    if env is not None and not (isinstance(env, dict)
                                and all(isinstance(v, str) for v in env.values())):
        raise ValueError("env must map names to strings")
    if cwd is not None and not isinstance(cwd, str):
        raise ValueError("cwd must be a string")
    max_stdout = request.get("maxstdout")
    if max_stdout is not None and not (isinstance(max_stdout, int) and max_stdout > 0
                                       and not isinstance(max_stdout, bool)):
        raise ValueError("maxstdout must be a positive integer")
    return unitdir, params, argv, env, cwd, max_stdout


def main(args: list[str] | None = None) -> int:
    args = sys.argv[1:] if args is None else args
    fd = None
    i = 0
    while i < len(args):
        if args[i] in ("-h", "--help"):
            sys.stdout.write(USAGE)
            return 0
        if args[i] in ("--fd", "--node-pid") and i + 1 < len(args) and args[i + 1].isdigit():
            if args[i] == "--fd":
                fd = int(args[i + 1])
            i += 2
            continue
        raise SystemExit(f"runner_server: unexpected argument {args[i]!r}\n{USAGE}")
    if fd is None:
        raise SystemExit(f"runner_server: --fd is required\n{USAGE}")
    try:  # runners hash their unit's stdout with OpenSSL: imported once here, not per fork
        import _hashlib  # noqa: F401
    except ImportError:  # pragma: no cover - Python without OpenSSL
        pass
    return _Server(fd).serve()


# ------------------------------------------------------------------------------------------------
# The client: the node's end
# ------------------------------------------------------------------------------------------------


class RunnerServerError(Exception):
    """The runner server could not fork a runner: it could not start, died, did not answer
    or failed to fork.  The caller starts the runner itself."""


class RunnerServer:
    """The node's end of its runner server: starts the server on first use and forks runners
    through it.

    Use it from one event loop at a time (a new loop takes it over: its pending requests are
    forgotten).  Requests are tagged, so concurrent spawns each get their own answer.
    """

    _shared: RunnerServer | None = None

    def __init__(self, python: str = sys.executable) -> None:
        self.python = python
        self.owner = os.getpid()
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        #: consecutive spawns that failed since the last one that worked
        self.failures = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._send_lock: asyncio.Lock | None = None
        self._next_id = 0
        self._replies: dict[int, asyncio.Future[dict]] = {}
        self._inbuf = bytearray()
        self._forked: set[int] = set()  # runners of the current server not reported exited
        self._exits: dict[int, int] = {}  # pid -> wait status, until exit_code() takes it
        self._exit_waiters: dict[int, asyncio.Future[None]] = {}
        self._write_waiter: asyncio.Future[None] | None = None
        self._old: list[subprocess.Popen[bytes]] = []  # servers that ended, to reap

    @classmethod
    def shared(cls) -> RunnerServer:
        """This process's runner server (created on first use, closed at interpreter exit)."""
        if cls._shared is None or cls._shared.owner != os.getpid():
            import atexit

            cls._shared = cls()
            atexit.register(cls._shared.close)
        return cls._shared

    @property
    def pid(self) -> int | None:
        """The running server's pid, or None."""
        return self.proc.pid if self.proc is not None and self.sock is not None else None

    # -- spawning ----------------------------------------------------------------------------

    async def spawn(self, unitdir: str, params: str, argv: list[str], ready_fd: int,
                    max_stdout: int | None = None) -> int:
        """Fork a runner for the unit in ``unitdir`` (stopped when its stdout outgrows
        ``max_stdout`` bytes); its pid once forked.

        ``ready_fd`` (the write end of the unit's ready pipe) is passed to the runner; the
        caller closes its own copy.

        :raises RunnerServerError: the server did not fork a runner, or may have done so and
            failed before it answered; either way it holds no copy of ``ready_fd`` any more,
            so only a runner forked all the same does.
        """
        import asyncio
        import json

        try:
            self._reap_old()
            if self.sock is None:
                self._start()
            loop = asyncio.get_running_loop()
            self._bind(loop)
            self._next_id += 1
            request_id = self._next_id
            body = json.dumps({"id": request_id, "unitdir": unitdir, "params": params,
                               "argv": argv, "env": dict(os.environ), "cwd": _cwd(),
                               "maxstdout": max_stdout},
                              separators=(",", ":")).encode("ascii")
            reply = loop.create_future()
            self._replies[request_id] = reply
            try:
                async with asyncio.timeout(REPLY_TIMEOUT):
                    await self._send(frame(body), ready_fd)
                    answer = await reply
            except TimeoutError:
                self._disconnect(f"the runner server did not answer within {REPLY_TIMEOUT:g} s",
                                 kill=True)
                raise RunnerServerError(f"the runner server did not answer within "
                                        f"{REPLY_TIMEOUT:g} s") from None
            finally:
                self._replies.pop(request_id, None)
            if "error" in answer:
                raise RunnerServerError(str(answer["error"]))
        except RunnerServerError:
            self.failures += 1
            raise
        self.failures = 0
        return int(answer["pid"])

    async def exit_code(self, pid: int, timeout: float = EXIT_REPORT_TIMEOUT) -> int | None:
        """The exit code of runner ``pid`` (as ``Popen.returncode``: ``-N`` for signal N) once
        the server reports it, waiting up to ``timeout`` seconds; None for a pid this server
        did not fork, or whose exit is not known."""
        import asyncio

        if pid not in self._exits and pid in self._forked and self.sock is not None:
            loop = asyncio.get_running_loop()
            self._bind(loop)
            waiter = self._exit_waiters[pid] = loop.create_future()
            try:
                async with asyncio.timeout(timeout):
                    await waiter
            except TimeoutError:
                pass
            finally:
                if self._exit_waiters.get(pid) is waiter:
                    del self._exit_waiters[pid]
        status = self._exits.pop(pid, None)
        return None if status is None else os.waitstatus_to_exitcode(status)

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Close the node's end: the server exits (the runners it forked run on).  Waits up to
        ``timeout`` seconds for it, then SIGKILLs it."""
        if self.owner != os.getpid():
            return  # a forked copy of the node's process: the server is not ours
        proc = self.proc
        self._disconnect("the runner server was closed")
        if proc is not None:
            self._wait(proc, timeout)
        for old in self._old:
            self._wait(old, timeout)
        self._old.clear()

    # -- internals ---------------------------------------------------------------------------

    def _start(self) -> None:
        import socket
        import subprocess

        node_end, server_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.proc = subprocess.Popen(
                [self.python, "-I", "-S", "-c", SERVER_BOOT, "--fd", str(server_end.fileno()),
                 "--node-pid", str(os.getpid())],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True, close_fds=True, pass_fds=(server_end.fileno(),))
        except OSError as exc:
            node_end.close()
            raise RunnerServerError(f"cannot start the runner server: {exc}") from None
        finally:
            server_end.close()
        node_end.setblocking(False)
        self.sock = node_end
        self._inbuf.clear()
        self._forked.clear()

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Read the server's messages in ``loop`` (the first, or a new one that takes over)."""
        import asyncio

        if self._loop is loop or self.sock is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self.sock.fileno())
        self._replies.clear()  # futures of the old loop: nobody waits for them any more
        self._exit_waiters.clear()
        loop.add_reader(self.sock.fileno(), self._on_readable)
        self._loop = loop
        self._send_lock = asyncio.Lock()

    async def _send(self, data: bytes, fd: int) -> None:
        """Send one frame, ``fd`` attached to its first byte; frames never interleave (a frame
        cut short by a cancel ends the connection)."""
        import socket

        assert self._send_lock is not None
        async with self._send_lock:
            view = memoryview(data)
            try:
                while view:
                    sock = self.sock
                    if sock is None:
                        raise RunnerServerError("the runner server exited")
                    try:
                        if len(view) == len(data):
                            sent = sock.sendmsg([view], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                                          fd.to_bytes(4, sys.byteorder))])
                        else:
                            sent = sock.send(view)
                    except BlockingIOError:
                        await self._writable(sock)
                        continue
                    except OSError as exc:
                        why = f"cannot write to the runner server: {exc}"
                        self._disconnect(why)
                        raise RunnerServerError(why) from None
                    view = view[sent:]
            except BaseException:
                if 0 < len(view) < len(data):
                    self._disconnect("a request to the runner server was cut short", kill=True)
                raise

    async def _writable(self, sock: socket.socket) -> None:
        """Wait until ``sock`` takes more data, or the connection ends."""
        assert self._loop is not None
        ready = self._loop.create_future()
        self._write_waiter = ready
        self._loop.add_writer(sock.fileno(), lambda: ready.done() or ready.set_result(None))
        try:
            await ready
        finally:
            self._write_waiter = None
            if self.sock is sock and self._loop is not None:
                self._loop.remove_writer(sock.fileno())

    def _on_readable(self) -> None:
        import json

        if self.sock is None:
            return
        try:
            data = self.sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._disconnect(f"cannot read from the runner server: {exc}")
            return
        if not data:
            self._disconnect("the runner server exited")
            return
        self._inbuf += data
        while len(self._inbuf) >= HEADER:
            size = int.from_bytes(self._inbuf[:HEADER], "big")
            if size > MAX_FRAME:
                self._disconnect("the runner server sent a corrupt frame", kill=True)
                return
            if len(self._inbuf) < HEADER + size:
                break
            body = bytes(self._inbuf[HEADER:HEADER + size])
            del self._inbuf[:HEADER + size]
            try:
                message = json.loads(body)
            except ValueError:
                self._disconnect("the runner server sent a corrupt frame", kill=True)
                return
            self._dispatch(message)

    def _dispatch(self, message: dict) -> None:
        if "exited" in message:
            pid = message["exited"]
            if pid in self._forked:
                self._forked.discard(pid)
                self._exits[pid] = message["status"]
                while len(self._exits) > MAX_REMEMBERED_EXITS:
                    del self._exits[next(iter(self._exits))]
                waiter = self._exit_waiters.get(pid)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            return
        if "pid" in message:  # also when its spawn() was cancelled: the runner runs
            self._forked.add(message["pid"])
            self._exits.pop(message["pid"], None)
        reply = self._replies.get(message.get("id"))
        if reply is not None and not reply.done():
            reply.set_result(message)

    def _disconnect(self, reason: str, *, kill: bool = False) -> None:
        """Forget the current server: fail its pending requests, close our end (it exits);
        with ``kill``, SIGKILL it and wait briefly until it is gone (it holds no passed fds
        then; a caller that needs to know waits on the ready pipe, bounded)."""
        sock, proc = self.sock, self.proc
        self.sock = self.proc = None
        if sock is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(sock.fileno())
                self._loop.remove_writer(sock.fileno())
            sock.close()
        self._loop = None
        for reply in self._replies.values():
            if not reply.done():
                reply.set_exception(RunnerServerError(reason))
        self._replies.clear()
        for waiter in self._exit_waiters.values():
            if not waiter.done():
                waiter.set_result(None)
        self._exit_waiters.clear()
        if self._write_waiter is not None and not self._write_waiter.done():
            self._write_waiter.set_result(None)
        self._forked.clear()  # their exits will not be reported
        self._inbuf.clear()
        if proc is not None:
            if kill:
                try:
                    proc.kill()
                except OSError:
                    pass
                import subprocess

                try:  # dead within milliseconds; the node's event loop must not wait longer
                    proc.wait(KILL_WAIT)
                except subprocess.TimeoutExpired:
                    self._old.append(proc)  # reaped later (_reap_old)
            elif proc.poll() is None:
                self._old.append(proc)  # exiting: reaped by a later spawn() or close()

    def _reap_old(self) -> None:
        self._old = [proc for proc in self._old if proc.poll() is None]

    @staticmethod
    def _wait(proc: subprocess.Popen[bytes], timeout: float) -> None:
        import subprocess

        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:
        return None


if __name__ == "__main__":
    sys.exit(main())
