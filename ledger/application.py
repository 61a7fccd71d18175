"""The stored events read back as `eventsourcing` aggregates, through the library's own repository.

The ledger's writers store events directly (`codec`), many thousand at a time; this application shows
that they are the library's events all the same: `LedgerApplication(store).repository.get(unit_id)`
reconstructs a `Unit` (its chain links), the `Log` or the `Checkpoints` from what the store holds.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import ApplicationRecorder, InfrastructureFactory, Transcoder
from eventsourcing.popo import POPOFactory
from eventsourcing.utils import Environment

import ledger.aggregates  # noqa: F401  (registers the frozen topics)
from ledger.store.base import Store
from ledger.store.codec import MsgpackTranscoder


class LedgerApplication(Application[UUID]):
    """An application over an opened store's recorder (read it; the ledger's writers do the writing)."""

    name = "custody"

    def __init__(self, store: Store) -> None:
        self._store = store
        super().__init__(env={})

    def construct_factory(self, env: Environment) -> InfrastructureFactory[Any]:
        return POPOFactory(env)  # only for the mapper and the event store: the recorder is the store's

    def construct_transcoder(self) -> Transcoder:
        return MsgpackTranscoder()

    def construct_recorder(self) -> ApplicationRecorder:
        recorder: ApplicationRecorder = self._store.recorder
        return recorder
