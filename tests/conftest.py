import pytest
import torch


@pytest.fixture
def torch_one_thread():
    """Tiny models and matrices: one intra-op thread is as fast as two and does not thrash
    when the machine is busy. Restores the previous setting afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
