"""Test-wide settings: no W&B network path, deterministic seeds, bounded threads."""

import os

import pytest
import torch

os.environ["WANDB_MODE"] = "disabled"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
