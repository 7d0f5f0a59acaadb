"""CPU threads that run the windows of one predictor call side by side.

A small student's operations are too small for OpenMP to share among cores (2 threads: 1.0-1.3x, and slower than
one when idle threads sleep, ``OMP_WAIT_POLICY=PASSIVE``, as napari-dmd runs). Its windows are independent, though:
:class:`WindowPool` splits the batch of one call into ``workers`` chunks and runs each in its own thread on
``threads_each`` intra-op threads (torch releases the GIL inside its operations). Each window's logits are those of
the same network on the same input; the pool holds no more windows than the call it splits.
``benchmarks/bench_window_workers.py`` measures it per volume (docs/benchmarks.md, B2).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

__all__ = ["WindowPool"]


class WindowPool:
    """A context manager: within it, :meth:`map` runs a function over chunks of a batch in ``workers`` threads."""

    def __init__(self, workers: int, threads_each: int = 1) -> None:
        if workers < 1 or threads_each < 1:
            raise ValueError(f"workers and threads_each must be >= 1, got {workers} and {threads_each}")
        self.workers = int(workers)
        self.threads_each = int(threads_each)
        self._executor: ThreadPoolExecutor | None = None

    def _start_worker(self) -> None:
        torch.set_num_threads(self.threads_each)  # OpenMP's count is per thread

    def __enter__(self) -> WindowPool:
        if self.workers > 1:
            self._executor = ThreadPoolExecutor(self.workers, "napari-dmd-window", initializer=self._start_worker)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
            # torch.set_num_threads also sets the count that threads started later begin with; a worker set it to
            # threads_each: give it back this thread's count
            torch.set_num_threads(torch.get_num_threads())

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> list[torch.Tensor]:
        """``[fn(chunk) ...]`` over up to ``workers`` consecutive chunks of ``x``'s first axis, side by side (each
        in the caller's inference and gradient modes); ``[fn(x)]`` in the calling thread when there is one chunk
        or no pool."""
        chunks = min(self.workers, int(x.shape[0]))
        if self._executor is None or chunks < 2:
            return [fn(x)]
        inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

        def run(part: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                return fn(part)

        return list(self._executor.map(run, torch.tensor_split(x, chunks)))
