"""The training batches of a trial, optionally sampled ahead in a background thread.

On CUDA the patch sampler (``study.data.sampling``, augmentation included) runs ``prefetch``
batches ahead of the training step in a thread, into pinned memory, so that the GPU does not
wait for the CPU; on the CPU batches are sampled when asked for. Either way the stream hands
out exactly the batches the sampler draws, in order, and knows the sampler's state after the
last batch it handed out, which is what a checkpoint records. With ``deferred`` the sampler
only cuts each sample's region and draws the nnunet regime's parameters
(``PatchSampler.sample_deferred``); the training step applies them on the device
(``study.data.device_augmentation``).
"""

from __future__ import annotations

import queue
import threading
from typing import Any

import numpy as np
import torch

from study.data import sampling
from study.data.augmentation import Deferred


class BatchStream:
    """Training batches from a sampler, optionally sampled ``prefetch`` batches ahead in a
    background thread (``pin``: into pinned memory, for asynchronous copies to a GPU).

    :meth:`next` returns ``(images, labels, state, deferred)``: a batch of ``batch_size``
    patches as tensors (labels as ``label_dtype``), the sampler's state right after it was
    drawn, and the augmentation left to the device (a ``Deferred``; None unless the stream
    was made with ``deferred=True``), so
    that a checkpoint records where the sampler stood after the last batch *trained on*,
    however far the thread has run ahead (the resumed run draws exactly the same batches).
    :meth:`close` stops the thread and rewinds the sampler to that state.
    """

    def __init__(self, sampler: sampling.PatchSampler, batch_size: int, prefetch: int,
                 pin: bool, label_dtype: type[np.integer], deferred: bool = False):
        self.sampler, self.batch_size, self.deferred = sampler, batch_size, deferred
        self.prefetch, self.pin, self.label_dtype = prefetch, pin, label_dtype
        self._queue: queue.Queue | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _draw(self) -> tuple[torch.Tensor, torch.Tensor, dict, Deferred | None]:
        draws: Deferred | None = None
        if self.deferred:
            images, labels, draws = self.sampler.sample_deferred(self.batch_size)
        else:
            images, labels = self.sampler.sample(self.batch_size)
        state = self.sampler.state()
        x = torch.from_numpy(images)
        y = torch.from_numpy(labels.astype(self.label_dtype, copy=False))
        if self.pin:
            x, y = x.pin_memory(), y.pin_memory()
        return x, y, state, draws

    def _run(self, batches: queue.Queue) -> None:
        while not self._stop.is_set():
            try:
                item: Any = self._draw()
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
        error of the sampling thread is raised here)."""
        if not self.prefetch:
            return self._draw()
        if self._queue is None:
            self._consumed = self.sampler.state()
            self._queue = queue.Queue(maxsize=self.prefetch)
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._run, args=(self._queue,),
                                            name="batch-prefetch", daemon=True)
            self._thread.start()
        item = self._queue.get()
        if isinstance(item, Exception):
            raise item
        self._consumed = item[2]
        return item

    def close(self) -> None:
        """Stop the thread and rewind the sampler to just after the last batch handed out
        (batches sampled ahead are dropped), so that sampling can continue exactly."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread, self._queue = None, None
        self.sampler.set_state(self._consumed)
