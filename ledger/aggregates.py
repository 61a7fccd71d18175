"""The event-sourced model on `eventsourcing`: a `Unit` per chip and the global `Log`.

A unit's events are its chain links; the log's version is the log index plus one (versions start at 1)
and each of its events carries one statement's wire form and the Merkle compact range after it, so the
tree head is read from the newest event alone, never by replaying the log. Writers build the stored
events directly (`stored_*` below, as `Application.save` would through the mapper) so a 1,000-unit
shipment does not pay for 1,000 aggregate objects; the classes still reconstruct through a repository.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import StoredEvent

from ledger.transcoder import MsgpackTranscoder

_TRANSCODER = MsgpackTranscoder()


class Log(Aggregate):
    """The global log: one event per accepted statement; the genesis statement creates it."""

    @event("Opened")
    def __init__(self, wire: bytes, range: list[bytes]) -> None:
        self.range = range

    @event("Appended")
    def append(self, wire: bytes, range: list[bytes]) -> None:
        self.range = range


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


LOG_TOPICS = ("ledger.aggregates:Log.Opened", "ledger.aggregates:Log.Appended")
UNIT_TOPICS = ("ledger.aggregates:Unit.Fabricated", "ledger.aggregates:Unit.Linked")
CHECKPOINT_TOPICS = ("ledger.aggregates:Checkpoints.First", "ledger.aggregates:Checkpoints.Signed")
_CLASS_TOPIC = {LOG_TOPICS[0]: "ledger.aggregates:Log", UNIT_TOPICS[0]: "ledger.aggregates:Unit",
                CHECKPOINT_TOPICS[0]: "ledger.aggregates:Checkpoints"}


def log_id(origin: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"custody:{origin}/log")


def unit_id(origin: str, serial: str) -> UUID:
    """DESIGN: a unit aggregate per chip, identified by uuid5 of origin and serial."""
    return uuid5(NAMESPACE_URL, f"custody:{origin}/unit/{serial}")


def checkpoints_id(origin: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"custody:{origin}/checkpoints")


def _stored(originator: UUID, version: int, topics: tuple[str, str], state: dict[str, Any],
            now: datetime) -> StoredEvent:
    """A stored event as the mapper would make it; version 1 is the aggregate's creation event."""
    topic = topics[0] if version == 1 else topics[1]
    state["timestamp"] = now
    if version == 1:
        state["originator_topic"] = _CLASS_TOPIC[topic]
    return StoredEvent(originator_id=originator, originator_version=version, topic=topic,
                       state=_TRANSCODER.encode(state))


def stored_log_event(origin: str, index: int, wire: bytes, range_: list[bytes],
                     now: datetime) -> StoredEvent:
    """Statement `index` as log version `index + 1`."""
    return _stored(log_id(origin), index + 1, LOG_TOPICS, {"wire": wire, "range": range_}, now)


def stored_unit_link(origin: str, serial: str, version: int, index: int, hash_: bytes, at: int,
                     now: datetime) -> StoredEvent:
    """Link `version` (1-based) of a unit's chain: the unit's statement at log `index`."""
    return _stored(unit_id(origin, serial), version, UNIT_TOPICS,
                   {"serial": serial, "index": index, "hash": hash_, "at": at}, now)


def stored_checkpoint(origin: str, version: int, size: int, note: str, now: datetime) -> StoredEvent:
    return _stored(checkpoints_id(origin), version, CHECKPOINT_TOPICS, {"size": size, "note": note}, now)


def decode_state(state: bytes) -> dict[str, Any]:
    decoded: dict[str, Any] = _TRANSCODER.decode(state)
    return decoded
