"""The device the engine-level tests draw on: the CPU, or SDBOT_TEST_DEVICE on a box with a GPU (`cuda`), so the
same tests check the CUDA paths (half precision, free-memory tiling) where a GPU is at hand."""

from __future__ import annotations

import os

import torch

TEST_DEVICE = torch.device(os.environ.get("SDBOT_TEST_DEVICE", "cpu"))
