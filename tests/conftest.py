"""Fixtures shared by several test files."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a whole test module (`pytestmark = usefixtures(...)`): small networks
    train faster on one thread than on two contended ones on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
