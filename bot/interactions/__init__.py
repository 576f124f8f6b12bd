"""The bot's one seam in front of Discord's interactions: the port services take, and its adapter over discord.py."""
