"""The event-sourced model on `eventsourcing`: a `Unit` per chip, the global `Log` and the `Checkpoints`.

A unit's events are its chain links; the log's version is the log index plus one (versions start at 1)
and each of its events carries one statement's wire form and the Merkle compact range after it, so the
tree head is read from the newest event alone, never by replaying the log. Writers build the stored
events directly (`ledger.store.codec`); the classes reconstruct from them through the library's
repository (`ledger.application`). Their topics are frozen in the codec and registered here, so
the classes may move or be renamed without breaking a stored event.
"""

from __future__ import annotations

from eventsourcing.domain import Aggregate, event
from eventsourcing.utils import register_topic

from ledger.store import codec


class Log(Aggregate):
    """The global log: one event per accepted statement; the genesis statement creates it."""

    @event("Opened")
    def __init__(self, wire: bytes, range: list[bytes]) -> None:
        self.range = range
        self.wires = [wire]

    @event("Appended")
    def append(self, wire: bytes, range: list[bytes]) -> None:
        self.range = range
        self.wires.append(wire)


class Unit(Aggregate):
    """One chip; its events are the links of its hash chain."""

    @event("Fabricated")
    def __init__(self, serial: str, index: int, hash: bytes, at: int) -> None:
        self.serial = serial
        self.links: list[tuple[int, bytes]] = [(index, hash)]

    @event("Linked")
    def link(self, serial: str, index: int, hash: bytes, at: int) -> None:
        self.links.append((index, hash))


class Checkpoints(Aggregate):
    """The operator's signed checkpoints, in the order they were signed."""

    @event("First")
    def __init__(self, size: int, note: str) -> None:
        self.notes: list[str] = [note]

    @event("Signed")
    def sign(self, size: int, note: str) -> None:
        self.notes.append(note)


def _registered() -> None:
    """Register the classes under the codec's frozen topics (the event classes are made by `@event`)."""
    for topic, owner, name in ((codec.LOG_OPENED, Log, "Opened"), (codec.LOG_APPENDED, Log, "Appended"),
                               (codec.UNIT_FABRICATED, Unit, "Fabricated"), (codec.UNIT_LINKED, Unit, "Linked"),
                               (codec.CHECKPOINTS_FIRST, Checkpoints, "First"),
                               (codec.CHECKPOINTS_SIGNED, Checkpoints, "Signed")):
        register_topic(topic, getattr(owner, name))
    for topic, cls in ((codec.LOG_CLASS, Log), (codec.UNIT_CLASS, Unit), (codec.CHECKPOINTS_CLASS, Checkpoints)):
        register_topic(topic, cls)


_registered()
