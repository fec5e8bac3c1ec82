"""predict_inputs: rows back in input order, cut to their own length, however many batches run at once."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from core.batches import ModelInput, predict_inputs


class EchoBackend:
    """logits (B, T, 1) = the input ids; records the threads its batches ran on."""

    def __init__(self):
        self.threads: set[int] = set()

    def run(self, feeds):
        self.threads.add(threading.get_ident())
        time.sleep(0.005)  # long enough for the other workers to take the next batches
        return {"logits": feeds["input_ids"][..., None].astype(np.float32)}


@pytest.mark.parametrize("workers", [1, 3])
def test_rows_come_back_in_input_order(workers):
    rng = np.random.default_rng(0)
    inputs = [ModelInput([int(i)] * int(n)) for i, n in enumerate(rng.integers(1, 20, size=50))]
    seen = []
    backend = EchoBackend()
    outputs = predict_inputs(backend, inputs, 0, token_level=True, batch_size=4, progress=seen.append, workers=workers)
    assert [o["logits"][:, 0].tolist() for o in outputs] == [x.ids for x in inputs]  # no padding left on a row
    assert sum(seen) == len(inputs)
    assert (len(backend.threads) > 1) == (workers > 1)
