"""The student a Distill run is training, shared with the Features widget's live mode.

Both widgets import :data:`LIVE` from here (neither imports the other): the Distill widget sets ``running``,
``name`` and ``latest`` and emits the signals; Features widgets subscribe and show the snapshots.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from psygnal import Signal as PSignal

if TYPE_CHECKING:
    from ..features import StudentSnapshot

__all__ = ["LIVE", "LiveStudent"]


class LiveStudent:
    """The student a Distill widget trains, shared with the Features widget's live mode.

    Features widgets :meth:`subscribe` with a step interval; the training child process then copies the
    student's weights (between steps) every that many steps and sends them, and the Distill widget emits
    :attr:`snapshot` with the :class:`~napari_dmd.features.StudentSnapshot` on the main thread.
    :attr:`changed` fires when a run starts or ends.
    """

    snapshot = PSignal(object)
    changed = PSignal()

    def __init__(self) -> None:
        self.running = False
        self.name = ""
        self.latest: StudentSnapshot | None = None
        self._every: dict[int, int] = {}
        self._requested = False

    def subscribe(self, key: int, every: int) -> None:
        self._every[key] = max(1, int(every))

    def unsubscribe(self, key: int) -> None:
        self._every.pop(key, None)

    @property
    def every(self) -> int:
        """Smallest requested interval in steps (0: nobody watches)."""
        return min(self._every.values()) if self._every else 0

    def request(self) -> None:
        """Ask for a snapshot after the next step."""
        self._requested = True

    def take_request(self) -> bool:
        """Whether a snapshot was requested since the last call (the request is then cleared)."""
        requested, self._requested = self._requested, False
        return requested

    def due(self, iteration: int) -> bool:
        """Called by the training worker after each step."""
        if self._requested:
            self._requested = False
            return True
        n = self.every
        return n > 0 and iteration % n == 0


LIVE = LiveStudent()
