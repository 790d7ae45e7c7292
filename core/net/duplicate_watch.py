"""Duplicate node IDs: what proves one, what is only an accusation, and how the older settles it.

Receptor stops a node at the first routing update that carries its node ID and
``SuspectedDuplicate`` = its epoch (reference §2.3).  Every node learns every epoch from the
flooded updates, so one forged message stopped any node.  Here:

* an **accusation** alone (our ID, SuspectedDuplicate = our epoch) raises an alarm (log, health,
  metric) for :data:`ALARM_HOLD` seconds and makes us flood our own fresh update (at most every
  :data:`REASSERT_INTERVAL` s, so that others restore their record of us); the node keeps
  serving;
* the node stops only on **evidence** of an older live instance with its ID (Receptor's rule:
  the newer one stops): that instance's own updates, with an older epoch, heard with
  :data:`EVIDENCE_UPDATES` increasing sequence numbers spanning :data:`EVIDENCE_SPAN` s;
* the **older** instance, when it sees a newer one, provides that evidence: it floods its own
  update with SuspectedDuplicate = the newer epoch every :data:`SETTLE_INTERVAL` s for
  :data:`SETTLE_DURATION` s after it last heard it (at most :data:`MAX_EPOCHS` newer epochs at
  a time; an update not answered yet is answered :data:`SETTLE_GAP` s after the previous
  settle, repeats come one per interval in all, so forged "newer" updates cannot make it
  flood faster).  Every node gives the record back to the older instance whichever newer
  epoch holds it, and then ignores that epoch (:mod:`mesh.net.router`).

Pure: no I/O, no clock (callers pass ``now``, a ``time.monotonic()`` value); memory is
bounded (at most MAX_EPOCHS epochs of each kind and MAX_PEERS peers per epoch).
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Distinct, increasing sequence numbers of an older instance's updates that prove it is live ...
EVIDENCE_UPDATES = 3
#: ... heard over at least this many seconds (so the older's settle updates, every
#: SETTLE_INTERVAL s, prove it after 2 intervals; a single burst or one replayed update never).
EVIDENCE_SPAN = 10.0
#: An epoch (older or newer) not heard from for this long is forgotten (at least
#: SETTLE_DURATION, so a newer epoch is not settled again once it went quiet).
FORGET_AFTER = 60.0
#: At most this many foreign epochs of each kind are tracked (beyond: newer ones are not
#: tracked until one goes quiet; older ones push out one with the least evidence).
MAX_EPOCHS = 4
#: At most this many peers are remembered per epoch (for the messages).
MAX_PEERS = 8
#: How long the ``duplicate_node_id`` alarm stays raised after the last accusation.
ALARM_HOLD = 300.0
#: After an accusation we flood our own update again, at most this often.
REASSERT_INTERVAL = 5.0
#: The older instance repeats its "you are the duplicate" update this often ...
SETTLE_INTERVAL = 5.0
#: ... until it has not heard the newer epoch for this long (a newer mesh node stops within
#: about 2 intervals, a Go one at once; a forger's repeats are answered as long as it sends).
SETTLE_DURATION = 60.0
#: A newer epoch not answered yet is answered this soon after the previous settle update (the
#: record others hold is then someone else's until the answer arrives).
SETTLE_GAP = 1.0

ALARM = "duplicate_node_id"


@dataclass
class _Older:
    """Updates of another instance with our ID and an older epoch."""

    first_seen: float
    last_seen: float
    last_sequence: int
    count: int = 1
    peers: list[str] = field(default_factory=list)


@dataclass
class _Newer:
    """A newer instance with our ID that we tell to stop."""

    first_seen: float
    last_seen: float
    #: The highest sequence heard with this epoch.
    sequence: int = 0
    floods: int = 0
    #: False while an update with this epoch (a higher sequence) has not been answered.
    answered: bool = False
    peers: list[str] = field(default_factory=list)


def _add_peer(peers: list[str], peer: str) -> None:
    if peer not in peers and len(peers) < MAX_PEERS:
        peers.append(peer)


@dataclass
class Accusation:
    """What :meth:`DuplicateWatch.accused` decided."""

    #: Flood our own update now (rate-limited by REASSERT_INTERVAL).
    reassert: bool
    #: Otherwise, in how many seconds to flood it.
    reassert_in: float = 0.0


@dataclass
class DuplicateWatch:
    """The duplicate-ID state of one node (whose epoch is ``own_epoch``)."""

    node_id: str
    own_epoch: int
    older: dict[int, _Older] = field(default_factory=dict)
    newer: dict[int, _Newer] = field(default_factory=dict)
    _alarm_until: float | None = None
    _alarm_reason: str = ""
    _reasserted_at: float | None = None
    _settled_at: float | None = None
    #: The evidence was complete once (we stop): later updates change nothing.
    _proven: bool = False
    #: The epoch this process started with: epochs from it up to ``own_epoch`` are all this
    #: process's (see :meth:`renew`), never evidence of another node.
    first_epoch: int = 0

    def __post_init__(self) -> None:
        self.first_epoch = self.first_epoch or self.own_epoch

    def renew(self, epoch: int) -> None:
        """This process takes a new, higher epoch (a forged update of ours took the top of
        the sequence space); updates with an earlier one of ours are forgeries or late
        copies."""
        self.own_epoch = epoch

    # -- we may be the newer one ---------------------------------------------------------

    def accused(self, *, peer: str, epoch: int, now: float) -> Accusation:
        """An update with our ID and SuspectedDuplicate = our epoch arrived from ``peer``
        (sent by an instance with ``epoch``): raise the alarm; never a reason to stop."""
        self._alarm_until = now + ALARM_HOLD
        self._alarm_reason = (f"a routing update from peer {peer} says another node uses node "
                              f"ID {self.node_id} (its epoch {epoch}); this node keeps "
                              f"running unless that node's own updates prove it was first")
        reassert = self._reasserted_at is None or \
            now - self._reasserted_at >= REASSERT_INTERVAL
        if reassert:
            self._reasserted_at = now
            return Accusation(True, 0.0)
        # Not now, but at the end of the interval: each of our updates makes a real older
        # node (a Go one too) accuse us again, which is the evidence we stop on.
        return Accusation(False, self._reasserted_at + REASSERT_INTERVAL - now)

    def heard_older(self, *, peer: str, epoch: int, sequence: int, now: float,
                    accuses_us: bool) -> bool:
        """An update with our ID and an ``epoch`` older than ours arrived from ``peer``;
        True once (the first time) the evidence says that older instance is live: we must
        stop.

        Only updates that also accuse us (SuspectedDuplicate = our epoch) count: an older
        instance that hears us says so, and such an update names an epoch that did not exist
        before this process started, so it cannot be a replay of the older process's updates
        (which, signed, would still verify under route-auth)."""
        if self._proven or epoch >= self.first_epoch or not accuses_us:
            return False
        self._forget(now)
        entry = self.older.get(epoch)
        if entry is None:
            if len(self.older) >= MAX_EPOCHS:
                # a flood of invented epochs must not push out one that is gathering evidence
                fresh = [e for e, held in self.older.items() if held.count < 2]
                if not fresh:
                    return False
                del self.older[min(fresh, key=lambda e: self.older[e].last_seen)]
            entry = self.older[epoch] = _Older(now, now, sequence)
        elif sequence > entry.last_sequence:
            entry.count += 1
            entry.last_sequence, entry.last_seen = sequence, now
        _add_peer(entry.peers, peer)
        self._proven = entry.count >= EVIDENCE_UPDATES and \
            now - entry.first_seen >= EVIDENCE_SPAN
        return self._proven

    def stop_message(self, epoch: int) -> str:
        """Why we stop, and what the user can do about it."""
        entry = self.older.get(epoch)
        via = ", ".join(entry.peers) if entry is not None else "?"
        return (f"another node with node ID {self.node_id} (epoch {epoch}, heard via peers "
                f"{via}) was running first: give this node another id in its node section, "
                f"or stop the other one")

    # -- we may be the older one ---------------------------------------------------------

    def heard_newer(self, *, peer: str, epoch: int, sequence: int, now: float) -> bool:
        """An update with our ID, an ``epoch`` newer than ours and ``sequence`` arrived; True
        if this epoch is new to us (worth a log line).  :meth:`settle_due` says when to flood.

        An update with a higher sequence than heard before (it took our record back at the
        nodes that passed it on) is answered again, SETTLE_GAP s after the last answer."""
        self._forget(now)
        entry = self.newer.get(epoch)
        if entry is not None:
            entry.last_seen = now
            _add_peer(entry.peers, peer)
            if sequence > entry.sequence:
                entry.sequence, entry.answered = sequence, False
            return False
        if len(self.newer) >= MAX_EPOCHS:
            return False  # a flood of invented epochs: keep settling the ones we have
        self.newer[epoch] = _Newer(now, now, sequence, peers=[peer])
        return True

    def _next(self, now: float) -> tuple[int, float] | None:
        """The epoch to settle next and when (a ``now`` value); None: nothing left.

        Epochs heard within SETTLE_DURATION are settled.  An update not answered yet comes
        first, the smallest such epoch (every node gives our record back whichever newer
        epoch holds it), SETTLE_GAP s after the last settle; then the least settled epoch,
        every SETTLE_INTERVAL s (each newer instance needs updates naming its own epoch as
        evidence to stop)."""
        active = [(entry.answered, entry.floods, epoch) for epoch, entry in self.newer.items()
                  if now - entry.last_seen <= SETTLE_DURATION]
        if not active:
            return None
        answered, _, epoch = min(active)
        if self._settled_at is None:
            return epoch, now
        return epoch, self._settled_at + (SETTLE_INTERVAL if answered else SETTLE_GAP)

    def settle_due(self, now: float) -> int:
        """The newer epoch to send our settle update for now (0: none), counting it sent."""
        due = self._next(now)
        if due is None or due[1] > now:
            return 0
        entry = self.newer[due[0]]
        entry.floods, entry.answered = entry.floods + 1, True
        self._settled_at = now
        return due[0]

    def next_settle_in(self, now: float) -> float | None:
        """Seconds until :meth:`settle_due` may return an epoch again (None: nothing left)."""
        due = self._next(now)
        return None if due is None else max(0.0, due[1] - now)

    # -- state ---------------------------------------------------------------------------

    def alarm(self, now: float) -> str | None:
        """The ``duplicate_node_id`` alarm's reason while it is raised, else None."""
        if self._alarm_until is None or now >= self._alarm_until:
            return None
        return self._alarm_reason

    def _forget(self, now: float) -> None:
        for table in (self.older, self.newer):
            for epoch, entry in list(table.items()):
                if now - entry.last_seen > FORGET_AFTER:
                    del table[epoch]
