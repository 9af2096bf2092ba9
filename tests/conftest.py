"""Test-wide settings: no W&B network path, no data cache in the home folder, fixed seeds."""

import os

import pytest
import torch

os.environ["WANDB_MODE"] = "disabled"
os.environ["TVCONV_CACHE"] = "off"  # tests that exercise the cache point it at tmp_path


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
