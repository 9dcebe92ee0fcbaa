"""Shared fixtures: tiny backbones and deterministic seeds."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("PYTHONHASHSEED", "0")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def tiny_backbone():
    from brainalign.models import create_backbone

    torch.manual_seed(0)
    return create_backbone("vit_tiny_test").eval()
