"""The training batches of a trial, optionally sampled ahead in background threads.

On CUDA the patch sampler (``study.data.sampling``, augmentation included) runs ``prefetch``
batches ahead of the training step, into pinned memory, so that the GPU does not wait for the
CPU; on the CPU batches are sampled when asked for. Ahead of the step, one thread draws every
random choice of each batch in order (``PatchSampler.plan``: cheap) and ``producers`` threads
cut the planned batches side by side (``PatchSampler.cut``: NumPy and SciPy release the GIL
while they copy and filter), so the cutting scales with the cores while the stream still hands
out exactly the batches the sampler draws, in order, and knows the sampler's state after the
last batch it handed out, which is what a checkpoint records. Batches are cut into recycled
memory (:class:`RecycledArrays`). With ``deferred`` the sampler
only cuts each sample's region and draws the nnunet regime's parameters
(``PatchSampler.sample_deferred``); the training step applies them on the device
(``study.data.device_augmentation``).
"""

from __future__ import annotations

import math
import os
import queue
import threading
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from study.data import sampling
from study.data.augmentation import Deferred

Batch = tuple[torch.Tensor, torch.Tensor, Deferred | None]


class RecycledArrays:
    """Batch arrays in memory that is used again (``np.empty``'s signature): an array handed
    out by :meth:`empty` gives its block back once it is garbage (the batch's tensors are
    gone), so producers write each batch into pages already mapped instead of fresh ones,
    which the kernel (and a virtual machine's host) zeroes and maps a fault at a time: for a
    paper U-Net batch that costs more than the cut, and more still with several producers
    faulting at once. Blocks are made a power of two bytes large, at least the largest made so
    far per dtype (as PyTorch's pinned-memory cache rounds), so the deferred regions, which
    vary per batch, soon fit every block; at most ``keep`` free blocks per dtype are kept (the
    largest). ``made``: the blocks made so far (a stream in its steady state makes none)."""

    def __init__(self, keep: int):
        self.keep, self.made = keep, 0
        self._free: dict[np.dtype, list[np.ndarray]] = {}  # flat byte blocks
        self._size: dict[np.dtype, int] = {}  # of the blocks made now
        self._lock = threading.Lock()

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = int(math.prod(shape)) * dtype.itemsize
        with self._lock:
            free = self._free.setdefault(dtype, [])
            fits = [i for i, block in enumerate(free) if block.nbytes >= nbytes]
            block = free.pop(fits[0]) if fits else None
            size = self._size[dtype] = max(self._size.get(dtype, 0),
                                           1 << max(nbytes - 1, 0).bit_length())
            if block is None:
                self.made += 1
        if block is None:
            block = np.empty(size, np.uint8)
        array = block[:nbytes].view(dtype).reshape(shape)
        weakref.finalize(array, self._give_back, dtype, block)
        return array

    def _give_back(self, dtype: np.dtype, block: np.ndarray) -> None:
        with self._lock:
            free = self._free[dtype]
            free.append(block)
            if len(free) > self.keep:  # the smallest goes
                free.pop(min(range(len(free)), key=lambda i: free[i].nbytes))


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity (macOS)
        return os.cpu_count() or 1


class BatchStream:
    """Training batches from a sampler, optionally sampled ``prefetch`` batches ahead in
    background threads (``pin``: into pinned memory, for asynchronous copies to a GPU).

    :meth:`next` returns ``(images, labels, state, deferred)``: a batch of ``batch_size``
    patches as tensors (labels as ``label_dtype``), the sampler's state right after it was
    drawn, and the augmentation left to the device (a ``Deferred``; None unless the stream
    was made with ``deferred=True``), so
    that a checkpoint records where the sampler stood after the last batch *trained on*,
    however far the threads have run ahead (the resumed run draws exactly the same batches).
    :meth:`close` stops the threads and rewinds the sampler to that state.

    ``producers``: threads cutting planned batches side by side when prefetching (the batches
    are the same for any number); default ``min(prefetch, usable_cores())``. ``arrays``: the
    memory batches are cut into, kept across :meth:`close` (default: the stream's own; streams
    may share one).
    """

    def __init__(self, sampler: sampling.PatchSampler, batch_size: int, prefetch: int,
                 pin: bool, label_dtype: type[np.integer], deferred: bool = False,
                 producers: int | None = None, arrays: RecycledArrays | None = None):
        if producers is not None and producers < 1:
            raise ValueError(f"producers: expected an integer >= 1, got {producers}")
        self.sampler, self.batch_size, self.deferred = sampler, batch_size, deferred
        self.prefetch, self.pin, self.label_dtype = prefetch, pin, label_dtype
        self.producers = producers or max(1, min(prefetch, usable_cores()))
        self._queue: queue.Queue | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        # the batches in the queue, being cut, waiting to be pinned and trained on
        self._arrays = (arrays if arrays is not None
                        else RecycledArrays(keep=prefetch + self.producers + 2))

    def _plan(self) -> tuple[list, dict]:
        """The next batch's plan and the sampler's state after it."""
        plans = self.sampler.plan(self.batch_size)
        return plans, self.sampler.state()

    def _cut(self, plans: list) -> Batch:
        draws: Deferred | None = None
        if self.deferred:
            images, labels, draws = self.sampler.cut_deferred(plans, self._arrays.empty)
        else:
            images, labels = self.sampler.cut(plans, self._arrays.empty)
        if labels.dtype != self.label_dtype:
            converted = self._arrays.empty(labels.shape, np.dtype(self.label_dtype))
            converted[...] = labels
            labels = converted
        x, y = torch.from_numpy(images), torch.from_numpy(labels)
        if self.pin:
            x, y = x.pin_memory(), y.pin_memory()
        return x, y, draws

    def _run(self, batches: queue.Queue, pool: ThreadPoolExecutor) -> None:
        """Plan batches in order and hand each, with the state after it, to the producers."""
        while not self._stop.is_set():
            try:
                plans, state = self._plan()
                item: Any = (pool.submit(self._cut, plans), state)
            except Exception as error:  # handed to the consumer, raised there
                item = error
            while not self._stop.is_set():
                try:
                    batches.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if isinstance(item, Exception):
                return

    def next(self) -> tuple[torch.Tensor, torch.Tensor, dict, Deferred | None]:
        """The next batch, the sampler's state after it and its deferred augmentation (an
        error of a sampling thread is raised here)."""
        if not self.prefetch:
            plans, state = self._plan()
            images, labels, draws = self._cut(plans)
            return images, labels, state, draws
        if self._queue is None:
            self._consumed = self.sampler.state()
            self._queue = queue.Queue(maxsize=self.prefetch)
            self._stop = threading.Event()
            self._pool = ThreadPoolExecutor(self.producers, thread_name_prefix="batch-cut")
            self._thread = threading.Thread(target=self._run, args=(self._queue, self._pool),
                                            name="batch-plan", daemon=True)
            self._thread.start()
        item = self._queue.get()
        if isinstance(item, Exception):
            raise item
        cutting: Future[Batch]
        cutting, state = item
        images, labels, draws = cutting.result()
        self._consumed = state
        return images, labels, state, draws

    def close(self) -> None:
        """Stop the threads and rewind the sampler to just after the last batch handed out
        (batches sampled ahead are dropped), so that sampling can continue exactly."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
        self._thread, self._queue, self._pool = None, None, None
        self.sampler.set_state(self._consumed)
