"""Shared fixtures: tiny backbones and deterministic seeds."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "support"))
os.environ.setdefault("PYTHONHASHSEED", "0")
# One thread: the models here are tiny, and several threads on a shared 2-core machine
# spin-wait against each other (measured 10x slower than one thread under load).
torch.set_num_threads(1)


@pytest.fixture
def tiny_backbone():
    from brainalign.models import create_backbone

    torch.manual_seed(0)
    return create_backbone("vit_tiny_test").eval()
