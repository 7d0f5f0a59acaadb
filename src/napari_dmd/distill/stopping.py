"""Stopping inside a training step: a stop asked mid-step abandons the step before the optimizer applies it.

:class:`StepGuard` is asked at a few points of :meth:`napari_dmd.distill.engine.Distiller._step` (after the
batch and the teacher's forward, after the student's forward, after the backward pass; never after
``optimizer.step``). When its run's ``stop_check()`` says stop, it puts back what the step had changed so far
(the sampler's random stream, torch's RNG, the learning rate, the models' buffers such as batch-norm running
statistics) and the step is not counted; the engine then writes ``last.pt`` of the last *completed* step, so
resuming from it repeats the abandoned step exactly as an uninterrupted run does. An exception that cuts the
step short before its last check (e.g. the child's SIGTERM) rolls it back the same way.

Only for one process (no DDP: every rank must run the same steps) and only when the run has a ``stop_check``
(the GUI's child process sets one); otherwise a stop acts between steps, as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["StepAbandoned", "StepGuard"]


class StepAbandoned(Exception):
    """A stop was asked during a step: the step was rolled back and not counted."""


class StepGuard:
    """Checks for a stop inside a step of the run ``d`` (a Distiller) and rolls the step back when one comes."""

    def __init__(self, d: Any) -> None:
        self.d = d
        self.stop_check: Callable[[], bool] | None = None  # e.g. the child's stop event; None: between steps only
        self.abandoned_at: float | None = None  # time.monotonic() when a step was abandoned
        self._saved: tuple[Any, ...] | None = None
        self._buffers: list[torch.Tensor] | None = None

    @property
    def active(self) -> bool:
        """Whether stops are checked inside steps (a ``stop_check`` is set and the run is one process)."""
        return self.stop_check is not None and not self.d.dist.enabled

    def run(self, step: Callable[[], Any]) -> Any:
        """``step()``'s result, or None when a stop abandoned it (rolled back: the step does not count)."""
        self._begin()
        try:
            return step()
        except StepAbandoned:
            self.abandoned_at = time.monotonic()
            return None
        except BaseException:
            self.rollback()  # cut short before its last check: nothing applied (after it: nothing to undo)
            raise
        finally:
            self._saved, self._buffers = None, None

    def stopping(self) -> bool:
        """After a completed step: whether a stop was asked (then the run writes last.pt at once, without a
        validation or a periodic checkpoint; the last step of a run is validated as always)."""
        d = self.d
        if not self.active or d.iteration >= d.total:
            return False
        assert self.stop_check is not None
        d._stop = d._stop or bool(self.stop_check())
        return d._stop

    def check(self, before_student: bool = False, last: bool = False) -> None:
        """Abandon the step (rolled back) when a stop was asked; ``before_student``: the student's forward pass
        comes next (its buffers are kept first: it changes batch-norm statistics); ``last``: the last check
        before the optimizer's update."""
        if self._saved is None:
            return
        assert self.stop_check is not None
        if self.d._stop or self.stop_check():
            self.d._stop = True
            self.rollback()
            raise StepAbandoned
        if before_student:
            self._buffers = [b.detach().clone() for b in self.d.net.buffers()]
        if last:
            self._saved, self._buffers = None, None  # from here on the step is applied: no rollback

    def _begin(self) -> None:
        """At the start of a step (before anything changes): keep what the step will change."""
        self._buffers = None
        if not self.active:
            self._saved = None
            return
        d = self.d
        self._saved = (d.sampler.state_dict(), torch.get_rng_state(), [g["lr"] for g in d.optimizer.param_groups])

    def rollback(self) -> None:
        """Put back what the step changed: sampler stream, RNG, learning rate, buffers; no gradients kept."""
        if self._saved is None:
            return
        d = self.d
        sampler, rng, lrs = self._saved
        d.sampler.load_state_dict(sampler)
        torch.set_rng_state(rng)
        for g, lr in zip(d.optimizer.param_groups, lrs):
            g["lr"] = lr
        if self._buffers is not None:
            with torch.no_grad():
                for b, kept in zip(d.net.buffers(), self._buffers):
                    b.copy_(kept)
        d.optimizer.zero_grad(set_to_none=True)
        self._saved, self._buffers = None, None
