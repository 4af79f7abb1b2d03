import pytest
import torch


@pytest.fixture(autouse=True)
def keep_threads():
    """Fault tests run the engine in-process, which sets torch's thread count: restore it after each."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
