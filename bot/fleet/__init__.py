"""Engines on other machines: `sdbot worker` serves its engines to the bot through Redis Streams (no torch, no
discord)."""
