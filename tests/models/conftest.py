"""Fixtures for the model-zoo tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_intra_op_thread():
    """These tests run many tiny ops (batch ≤ 4, ≤ 75 px), where a second intra-op thread buys
    nothing and, on a loaded 2-core machine, costs up to 10× in synchronisation stalls. Restored after
    each test so other test folders keep torch's default."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
