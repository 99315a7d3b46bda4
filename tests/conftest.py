"""Fixtures shared by the tests that train the smoke encoder (a tiny random 2-layer BERT with the e5 tokenizer)."""
from __future__ import annotations

import pytest
import torch

from trainables.models import load_encoder


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run far faster on one thread than on two shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def smoke():
    return load_encoder("smoke")


@pytest.fixture(scope="module")
def tokenizer(smoke):
    return smoke[0]
