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


@pytest.fixture
def registered():
    """`registered(registry, name, obj)`: register for one test (replacing what the name held);
    afterwards the registry holds again what it held before."""
    undo = []

    def register(registry, name, obj):
        undo.append((registry, name, registry.get(name)))
        return registry.register(name, obj, replace=True)

    yield register
    for registry, name, previous in reversed(undo):
        if previous is None:
            registry.unregister(name)
        else:
            registry.register(name, previous, replace=True)
