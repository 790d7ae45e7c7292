"""The contract between link backends (plugins) and the kernel.

A backend produces *sessions*: message-oriented pipes to one neighbour.  It hands each
session to :meth:`LinkHost.run_session`, which runs the link protocol on it and returns
when the link ends.  Peers (dialers) redial with :func:`redial_loop`.  Listeners bind through
:meth:`Backend.listen`, which tells the node whether they are listening: a node whose
listener cannot bind does not start (and a ``reload`` that adds one replies with an error).
"""

from __future__ import annotations

import abc
import asyncio
import os
import random
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Protocol, TypeVar

import structlog

log = structlog.get_logger(__name__)

#: Bump when the Session/Backend contract changes incompatibly.
BACKEND_ABI = 1

T = TypeVar("T")


class SessionClosed(Exception):
    """The session ended (peer closed, transport error, or local close)."""


class ListenError(Exception):
    """A listener could not bind its address; the message names the address and the reason,
    e.g. ``0.0.0.0:2222: cannot listen: address already in use``."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"{address}: cannot listen: {reason}")
        self.address = address
        self.reason = reason


def os_error_reason(exc: OSError) -> str:
    """Why a socket call failed, as the C library says it (``address already in use``):
    asyncio's own text repeats the errno and the address."""
    if isinstance(exc.errno, int) and exc.errno > 0:  # resolver errors are negative
        return os.strerror(exc.errno).lower()
    return str(exc.strerror or exc).lower()


async def bind(address: str, binding: Awaitable[T]) -> T:
    """Await ``binding``, a call that binds ``address`` (``loop.create_server(...)``).

    :raises ListenError: the bind failed (an :class:`OSError`); the message names
        ``address`` and the reason.
    """
    try:
        return await binding
    except OSError as exc:
        raise ListenError(address, os_error_reason(exc)) from None


def join_host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets (Go's ``net.JoinHostPort``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Session(abc.ABC):
    """A bidirectional, message-oriented pipe to one neighbour.

    ``send`` must never block: it queues one whole message (a backend may drop data
    messages when :meth:`congested` is true, as a UDP link would).  ``recv`` returns the next
    whole message or raises :class:`SessionClosed`.  Sessions are made by a backend, whose
    ``abi`` covers them.
    """

    #: A human label for logs, e.g. ``tcp 127.0.0.1:2222``.
    label: str = "?"
    #: The neighbour's node ID, set by the kernel once the handshake accepted the link.
    peer_node: str | None = None
    #: Set by the kernel when it refused the link because it already has one to this
    #: neighbour (both sides configured a peer to the other): the dialer then waits for
    #: that link to end instead of redialing into the same refusal.
    redundant_with: str | None = None
    #: Largest message this session can carry.
    max_message: int = 65535
    #: QUIC datagram size this link prefers, if smaller than the node's (e.g. a UDP link on
    #: a 1500-byte MTU, where large datagrams would fragment); None for no preference.
    preferred_datagram: int | None = None
    #: False for a transport that may lose messages (UDP): the node then repeats its
    #: routing database on the link now and then, since it floods updates only on change.
    reliable: bool = True
    #: Traffic counters: whole messages and bytes on the wire, each way.  A backend that
    #: counts its traffic keeps them up to date (tcp's
    #: :class:`~mesh.net.stream_session.FramedSession`, udp and websocket sessions do);
    #: :meth:`mesh.net.netceptor.Netceptor.stats` reports them per link, 0 for a backend
    #: that does not count.
    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0

    @abc.abstractmethod
    def send(self, message: bytes) -> None:
        """Queue one message for the neighbour (raises SessionClosed once closed)."""

    @abc.abstractmethod
    async def recv(self) -> bytes:
        """The next message from the neighbour."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the session; pending and future ``recv`` calls raise SessionClosed."""

    @property
    def peer_name(self) -> str:
        """The ``peer`` of this session's log events: the node ID once known, else :attr:`label`."""
        return self.peer_node or self.label

    def congested(self) -> bool:
        """True while the outgoing buffer is so full that droppable data should be dropped."""
        return False

    def peer_node_ids(self) -> list[str] | None:
        """Node IDs in the peer's TLS certificate (Receptor node-ID SANs), or None without TLS.

        When this is not None the kernel refuses a peer whose declared node ID is not listed.
        """
        return None


@dataclass(frozen=True)
class LinkOptions:
    """Per-backend link settings from the config section."""

    cost: float = 1.0
    nodecost: dict[str, float] = field(default_factory=dict)
    allowedpeers: tuple[str, ...] = ()

    def cost_for(self, peer: str) -> float:
        return self.nodecost.get(peer, self.cost)


class LinkHost(Protocol):
    """What a backend needs from the node."""

    node_id: str

    async def run_session(self, session: Session, options: LinkOptions) -> str:
        """Run the link protocol on ``session`` until it ends; returns the reason."""
        ...

    async def wait_link_down(self, peer: str) -> None:
        """Return once the node has no link to ``peer``."""
        ...

    async def wait_heard_from(self, peer: str) -> None:
        """Return at the next fresh routing update from ``peer`` that the node takes: ``peer``
        is running and linked to the mesh (heard through another neighbour, while the node
        has no link to it)."""
        ...


class Backend(abc.ABC):
    """One configured listener or peer.  ``run`` serves until cancelled.

    A listener sets :attr:`listens` and binds with :meth:`listen`: the node waits (up to a
    deadline) until it is listening before it reports itself started, and a listener whose
    ``run`` fails before that is a start failure.  A peer (dialer) leaves :attr:`listens`
    False: a neighbour it cannot reach is no failure, it redials.
    """

    abi = BACKEND_ABI
    #: True for a backend that binds a local address: the node then waits for
    #: :meth:`wait_listening` before it declares itself started or answers ``reload``.
    listens: bool = False
    #: Resolved with the address once :meth:`listening` was called (made on first use).
    _listening: asyncio.Future[str] | None = None

    @abc.abstractmethod
    async def run(self, host: LinkHost) -> None:
        """Accept or dial sessions and hand each to ``host.run_session``."""

    async def listen(self, address: str, binding: Awaitable[T]) -> T:
        """Await ``binding``, the call that binds this listener (``loop.create_server(...)``),
        then report the backend listening on ``address``.

        :raises ListenError: the bind failed (an :class:`OSError`); the message names
            ``address`` and the reason.
        """
        bound = await bind(address, binding)
        self.listening(address)
        return bound

    def listening(self, address: str) -> None:
        """Report, from ``run``, that this backend is bound to ``address`` and accepting
        (:meth:`listen` calls it; a backend that binds some other way calls it itself)."""
        future = self._listening_future()
        if not future.done():
            future.set_result(address)

    async def wait_listening(self) -> str | None:
        """Return once ``run`` reported the backend listening (the address it gave), or at
        once with None for a backend that does not listen."""
        if not self.listens:
            return None
        return await asyncio.shield(self._listening_future())

    def _listening_future(self) -> asyncio.Future[str]:
        if self._listening is None:
            self._listening = asyncio.get_running_loop().create_future()
        return self._listening


@dataclass
class Backoff:
    """Redial delays: ×1.5 up to 5 s (Receptor: 5 s up to 20 s), with ±20 % jitter.

    Receptor starts at 5 s; we start at 1 s so a relay that comes back is used sooner.  After a
    link that had been up for :attr:`settled` seconds ends, the first redial comes after only
    :attr:`quick` seconds: the neighbour is most likely restarting (a node starts in ~0.25 s)
    or still there.  That costs one extra dial per link lost; a link that keeps ending within
    ``settled`` of being made is redialed after the backoff's :attr:`initial` delay, as before.
    For :attr:`refused_window` seconds after such a link ended, a dial the neighbour's host
    refuses (nothing listens yet: the node is restarting) is repeated every :attr:`quick`
    seconds too, so a restarted node is linked within a quarter second of listening; a
    refusal costs the host microseconds, and the window bounds it to ~40 dials.
    """

    initial: float = 1.0
    factor: float = 1.5
    maximum: float = 5.0
    jitter: float = 0.2
    quick: float = 0.25
    settled: float = 1.0
    refused_window: float = 10.0
    current: float = 0.0
    #: When a settled link ended (loop time), while refused dials are repeated quickly.
    lost_at: float | None = None

    def reset(self) -> None:
        self.current = 0.0

    def next(self) -> float:
        self.current = self.initial if not self.current else min(self.current * self.factor,
                                                                 self.maximum)
        return self._jittered(self.current)

    def after_link(self, lasted: float) -> float:
        """The delay before redialing once a link that was up for ``lasted`` seconds ended:
        :attr:`quick` if it had settled (the backoff starts again behind it), else the next
        backoff step."""
        if lasted < self.settled:
            return self.next()
        self.current = 0.0
        self.lost_at = asyncio.get_running_loop().time()
        return self._jittered(self.quick)

    def after_refusal(self) -> float | None:
        """The delay before redialing a host that refused the dial: :attr:`quick` within
        :attr:`refused_window` of a settled link's end, else None (use :meth:`next`)."""
        if self.lost_at is None:
            return None
        if asyncio.get_running_loop().time() - self.lost_at >= self.refused_window:
            self.lost_at = None
            return None
        return self._jittered(self.quick)

    def _jittered(self, delay: float) -> float:
        return delay * random.uniform(1 - self.jitter, 1 + self.jitter)


def _raise_if_cancelling() -> None:
    """Honour a cancellation that a dial swallowed.

    A dial built on ``asyncio.wait_for`` (Python 3.11) that fails in the same loop turn as
    the task is cancelled raises the dial's error and drops the cancellation: the loop would
    redial for ever and the node would never finish stopping.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def redial_loop(dial: Callable[[], Awaitable[Session]], host: LinkHost,
                      options: LinkOptions, *, redial: bool, what: str,
                      backoff: Backoff | None = None, peer: str | None = None) -> None:
    """Dial, run the link, and dial again after failures or disconnects.

    The backoff resets whenever a dial succeeds at the transport level, and a link that had
    settled is redialed quickly once it ends (:meth:`Backoff.after_link`).  While the
    neighbour of a lost link is away, hearing from it through the rest of the mesh (a fresh
    routing update: it is back) ends the wait for the next dial, once per lost link.  ``what``
    names the backend in logs (``tcp-peer 10.0.0.1:2222``); ``peer`` is the address dialled
    (default ``what``), logged as ``peer`` until a session knows the neighbour's node ID.
    """
    backoff = backoff or Backoff()
    address = peer or what
    loop = asyncio.get_running_loop()
    #: The neighbour of the link that ended last, until hearing from it woke a redial.
    lost: str | None = None
    refusals = 0  # quick redials after refusals since the last dial that connected
    while True:
        try:
            session = await dial()
        except (OSError, asyncio.TimeoutError, SessionClosed) as exc:
            _raise_if_cancelling()
            quick = backoff.after_refusal() if isinstance(exc, ConnectionRefusedError) else None
            delay = backoff.next() if quick is None else quick
            # quick repeats of a refusal are logged at debug: at most one warning per second
            (log.debug if quick is not None and refusals % 4 else log.warning)(
                "backend_dial_failed", node_id=host.node_id, peer=address, backend=what,
                error=str(exc) or type(exc).__name__, retry_in=round(delay, 2))
            refusals += quick is not None
        else:
            refusals = 0
            backoff.lost_at = None
            backoff.reset()
            began = loop.time()
            reason = await host.run_session(session, options)
            if redial and session.redundant_with:
                log.info("link_redundant", node_id=host.node_id, peer=session.redundant_with,
                         backend=what, detail=f"already linked to {session.redundant_with}; "
                                              f"dialing again when that link ends")
                await host.wait_link_down(session.redundant_with)
                continue
            if session.peer_node:  # the kernel had accepted the link
                lost = session.peer_node
                delay = backoff.after_link(loop.time() - began)
            else:
                delay = backoff.next()
            log.info("backend_session_ended", node_id=host.node_id, peer=session.peer_name,
                     backend=what, reason=reason, retry_in=round(delay, 2) if redial else None)
        if not redial:
            return
        if lost is None:
            await asyncio.sleep(delay)
        elif await _heard_within(host, lost, delay):
            log.debug("redial_early", node_id=host.node_id, peer=lost, backend=what,
                      reason="heard from it through the mesh")
            lost = None


async def _heard_within(host: LinkHost, peer: str, delay: float) -> bool:
    """Wait up to ``delay`` seconds for the node to hear from ``peer``; True if it did."""
    try:
        async with asyncio.timeout(delay):
            await host.wait_heard_from(peer)
    except TimeoutError:
        return False
    return True
