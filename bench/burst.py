"""What the benchmarks send: the burst's prompts and how long a burst may take (no torch)."""

from __future__ import annotations

# A job lost on the way (see the log) should end the run, not hang it.
BURST_TIMEOUT_S = 600
PROMPTS = (
    "a lighthouse on a cliff at dusk, oil painting",
    "portrait of an old sailor, detailed, 35mm",
    "a cat wearing a tiny crown, studio photo",
    "isometric cozy bedroom, soft light",
    "a dragon made of autumn leaves",
    "cyberpunk street market in the rain",
    "watercolor fox in a snowy forest",
    "a bowl of ramen, food photography",
)
