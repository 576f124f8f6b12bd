"""`python -m engine.gpus`: how many CUDA GPUs torch sees, for SDBOT_DEVICE=all (the bot itself never imports torch)."""

from __future__ import annotations

import sys

import torch


def main() -> int:
    print(torch.cuda.device_count() if torch.cuda.is_available() else 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
