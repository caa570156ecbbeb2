"""Overlap host-synchronising post-processing with the GPU work of the next batch of prompt chunks.

Post-processing has data-dependent sizes (candidates above a threshold, boxes kept by NMS), so it
waits for the GPU several times per image. Run on the model's stream, each wait would drain the
queue and leave the GPU idle while the host works. :class:`OverlappedPostprocess` instead runs the
post-processing of group ``k`` on a side CUDA stream after group ``k + 1`` has been queued: the
host waits only for the small side-stream kernels while the GPU keeps computing the next group.
On the CPU it simply runs each job in order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

Job = Callable[[Sequence[Tensor]], None]


class OverlappedPostprocess:
    """Runs ``job(outputs)`` of each submitted group while the next group computes.

    Args:
        device: where the outputs live (a side stream is used on CUDA only).
        copy_outputs: clone the outputs when submitted (needed when they are buffers that the next
            call overwrites, e.g. CUDA-graph outputs).

    Usage::

        pipe = OverlappedPostprocess(device, copy_outputs=graphs)
        for group in groups:
            pipe.submit(heads(group), job_for(group))  # runs the previous group's job
        pipe.flush()  # the last job; later work on the default stream sees every result
    """

    def __init__(self, device: torch.device, copy_outputs: bool = False) -> None:
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.copy_outputs = copy_outputs
        self._pending: tuple[Sequence[Tensor], Job, torch.cuda.Event | None] | None = None

    def submit(self, outputs: Sequence[Tensor], job: Job) -> None:
        """Queue ``job`` for ``outputs`` (already launched) and run the previously queued job."""
        event = None
        if self.stream is not None:
            if self.copy_outputs:
                outputs = [t.clone() for t in outputs]
            event = torch.cuda.Event()
            event.record()
        previous, self._pending = self._pending, (outputs, job, event)
        if previous is not None:
            self._run(*previous)

    def flush(self) -> None:
        """Run the last queued job; the default stream then waits for the side stream."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._run(*pending)
        if self.stream is not None:
            torch.cuda.current_stream().wait_stream(self.stream)

    def _run(self, outputs: Sequence[Tensor], job: Job, event: torch.cuda.Event | None) -> None:
        if event is None:  # no side stream (CPU)
            job(outputs)
            return
        with torch.cuda.stream(self.stream):
            self.stream.wait_event(event)
            for t in outputs:
                t.record_stream(self.stream)  # allocated on the default stream, read here
            job(outputs)
