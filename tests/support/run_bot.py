"""`sdbot` pointed at a local fake Discord, as a process of its own, so tests can SIGKILL and SIGTERM it.

Usage: python -m tests.support.run_bot API_BASE GATEWAY_URL; every setting comes from the environment.
"""

from __future__ import annotations

import sys

import discord
import yarl

from bot.cli import main

if __name__ == "__main__":
    api, gateway = sys.argv[1:3]
    discord.http.Route.BASE = api
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway)
    sys.exit(main(["run"]))
