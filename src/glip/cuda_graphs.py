"""CUDA graphs for fixed input buckets: replay a whole forward as one launch.

At batch 1 GLIP-T issues thousands of small kernels; eager PyTorch spends more time launching them
than the GPU spends running them. :class:`GraphedFunction` captures a function of CUDA tensors once
per input signature (shapes, dtypes, strides: one "bucket") and afterwards copies the new inputs
into the captured buffers and replays the graph. The function must be free of host
synchronisation and data-dependent shapes (the backbone, tower and head are; post-processing is
not and stays outside).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor

from glip.errors import GLIPError

logger = logging.getLogger(__name__)

Signature = tuple[tuple[tuple[int, ...], torch.dtype, tuple[int, ...]], ...]


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    inputs: list[Tensor]
    outputs: tuple[Tensor, ...]


class GraphedFunction:
    """``fn(*tensors) -> tuple of tensors``, replayed from a CUDA graph per input signature.

    Args:
        fn: the function; called eagerly ``warmup`` times on a side stream, then captured.
        amp_dtype: autocast dtype to run ``fn`` under (None: no autocast). Autocast's weight-cast
            cache is disabled inside, as graph capture requires.
        max_graphs: graphs kept (least recently used ones are dropped with their memory).
        warmup: eager calls before capture (lets lazy initialisation and Triton autotuning happen).

    The returned tensors are the graph's own output buffers: they are overwritten by the next call
    with the same signature, so consume (or clone) them first.
    """

    def __init__(
        self,
        fn: Callable[..., Sequence[Tensor]],
        amp_dtype: torch.dtype | None = None,
        max_graphs: int = 4,
        warmup: int = 2,
    ) -> None:
        self.fn = fn
        self.amp_dtype = amp_dtype
        self.max_graphs = max(1, max_graphs)
        self.warmup = warmup
        self._graphs: OrderedDict[Signature, _Captured] = OrderedDict()

    def __len__(self) -> int:
        return len(self._graphs)

    def _call(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        ctx = (
            nullcontext()
            if self.amp_dtype is None
            else torch.autocast("cuda", dtype=self.amp_dtype, cache_enabled=False)
        )
        with ctx:
            return tuple(self.fn(*tensors))

    def __call__(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        """Run on ``tensors`` (all on one CUDA device); returns the captured output buffers."""
        key: Signature = tuple((tuple(t.shape), t.dtype, tuple(t.stride())) for t in tensors)
        captured = self._graphs.get(key)
        if captured is None:
            captured = self._capture(tensors)
            self._graphs[key] = captured
            if len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
        for static, new in zip(captured.inputs, tensors, strict=True):
            static.copy_(new)
        captured.graph.replay()
        return captured.outputs

    def _capture(self, tensors: Sequence[Tensor]) -> _Captured:
        if not all(t.is_cuda for t in tensors):
            raise GLIPError("CUDA graphs need CUDA tensors: run on a GPU or turn CUDA graphs off")
        static = [t.clone() for t in tensors]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self._call(*static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = self._call(*static)
        logger.info("captured a CUDA graph for inputs %s", [tuple(t.shape) for t in tensors])
        return _Captured(graph, static, outputs)
