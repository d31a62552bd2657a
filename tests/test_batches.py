"""The trial's batch stream: batches sampled ahead by several threads are the batches drawn
in order, with the sampler's state after each; closing rewinds the sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from study.batches import BatchStream, RecycledArrays, usable_cores
from study.data import sampling
from study.data.case import Case


def _sampler(augmentation: str = "nnunet") -> sampling.PatchSampler:
    rng = np.random.default_rng(0)
    cases = []
    for i in range(3):
        label = np.zeros((20, 18, 16), np.uint8)
        label[5 + i:9 + i, 6:10, 4:9] = 1
        label[12:14, 3 + i:6 + i, 9:12] = 2
        cases.append(Case(case_id=str(i), image=rng.standard_normal((2, *label.shape),
                                                                     np.float32),
                          label=label, roi=np.ones(label.shape, bool), spacing=(1.0, 1.0, 1.0)))
    return sampling.PatchSampler(cases, (12, 10, 8), 0.33, seed=3, augmentation=augmentation,
                                 bg_aug_prob=0.5, oversampling="nnunet")


def _same(a, b) -> None:
    for x, y in zip(a[:2], b[:2], strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    assert a[2] == b[2]  # the sampler's state after the batch
    if a[3] is not None:
        np.testing.assert_array_equal(a[3].region, b[3].region)
        assert [d and d.seed for d in a[3].draws] == [d and d.seed for d in b[3].draws]


@pytest.mark.parametrize(("augmentation", "deferred"), [("deepmedic", False), ("nnunet", True)])
def test_producers_hand_out_the_drawn_batches_in_order_and_close_rewinds(augmentation, deferred):
    """prefetch with 1 or 3 cutting threads gives the batches (and states) of sampling when
    asked; after close the sampler continues right after the last batch handed out."""
    plain = BatchStream(_sampler(augmentation), 2, 0, pin=False, label_dtype=np.uint8,
                        deferred=deferred)
    expected = [plain.next() for _ in range(8)]
    for producers in (1, 3):
        stream = BatchStream(_sampler(augmentation), 2, 4, pin=False, label_dtype=np.uint8,
                             deferred=deferred, producers=producers)
        for batch in expected[:5]:
            _same(stream.next(), batch)
        stream.close()  # the threads ran ahead; the sampler is rewound to after batch 5
        assert stream.sampler.state() == expected[4][2]
        for batch in expected[5:]:
            _same(stream.next(), batch)
        stream.close()


def test_an_error_of_a_cutting_thread_is_raised_by_next():
    """A batch the producers cannot cut (deferred with a regime that cannot defer) raises
    in the consumer."""
    stream = BatchStream(_sampler("deepmedic"), 2, 2, pin=False, label_dtype=np.uint8,
                         deferred=True, producers=2)
    with pytest.raises(ValueError, match="nnunet"):
        stream.next()
    stream.close()


def test_producers_default_to_the_prefetch_depth_within_the_cores():
    sampler = _sampler()
    assert BatchStream(sampler, 2, 0, False, np.uint8).producers == 1
    assert BatchStream(sampler, 2, 64, False, np.uint8).producers == usable_cores()
    assert BatchStream(sampler, 2, 1, False, np.uint8).producers == 1
    with pytest.raises(ValueError, match="producers"):
        BatchStream(sampler, 2, 2, False, np.uint8, producers=0)


def test_recycled_memory_is_handed_out_again_only_once_its_tensors_are_gone():
    """A batch array's block returns when nothing refers to it any more (a tensor made of it,
    or a view of that tensor, keeps it); at most ``keep`` free blocks are kept per dtype."""
    arrays = RecycledArrays(keep=2)
    first = arrays.empty((4, 5), np.dtype(np.float32))
    address = first.ctypes.data
    view = torch.from_numpy(first)[1:]
    del first
    second = arrays.empty((4, 5), np.dtype(np.float32))
    assert second.ctypes.data != address  # the first is still in use (the view)
    del view
    assert arrays.empty((3, 5), np.dtype(np.float32)).ctypes.data == address  # back, reused
    assert arrays.empty((4, 5), np.dtype(np.uint8)).ctypes.data not in (address,
                                                                        second.ctypes.data)
    assert arrays.made == 3  # the first, the second, the uint8 one
    many = [arrays.empty((2, 2), np.dtype(np.float32)) for _ in range(5)]
    del many
    made = arrays.made
    again = [arrays.empty((2, 2), np.dtype(np.float32)) for _ in range(3)]
    assert arrays.made == made + 1  # two of the five blocks were kept, the third is new
    del again
