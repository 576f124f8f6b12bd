"""Discord's fixed values as the fake uses them: ids, message flags, intents, upload limits, permissions, errors."""

from __future__ import annotations

import discord

# Fixed, snowflake-sized ids so tests can name them without plumbing.
APPLICATION_ID = 1_100_000_000_000_000_001  # also the bot user's id, as for every modern bot
GUILD_ID = 1_100_000_000_000_000_100
CHANNEL_ID = 1_100_000_000_000_000_200
USER_ID = 1_100_000_000_000_000_300
OWNER_ID = 1_100_000_000_000_000_301

DISCORD_EPOCH_MS = 1_420_070_400_000
EPOCH = "2015-01-01T00:00:00+00:00"
API_PREFIX = "/api/v10"
JSON_HEADERS = {"Content-Type": "application/json"}  # exact: discord.py compares the whole header

EPHEMERAL = 1 << 6
LOADING = 1 << 7
SUPPRESS_EMBEDS = 1 << 2
COMPONENTS_V2 = 1 << 15
GUILD_MESSAGES_INTENT = 1 << 9
DIRECT_MESSAGES_INTENT = 1 << 12

# Per-file upload limit by boost tier (discord.py's Guild._PREMIUM_GUILD_LIMITS).
FILESIZE_BY_TIER = {0: 10 * 1024 * 1024, 1: 10 * 1024 * 1024, 2: 50 * 1024 * 1024, 3: 100 * 1024 * 1024}
DM_FILESIZE_LIMIT = 10 * 1024 * 1024

DEFAULT_EVERYONE_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    embed_links=True,
    attach_files=True,
    read_message_history=True,
    add_reactions=True,
    use_external_emojis=True,
    use_application_commands=True,
).value
DEFAULT_BOT_PERMISSIONS = DEFAULT_EVERYONE_PERMISSIONS | discord.Permissions(manage_messages=True).value
ALL_PERMISSIONS = discord.Permissions.all().value

ERROR_MESSAGES = {
    0: "General error",
    10003: "Unknown Channel",
    10008: "Unknown Message",
    10015: "Unknown Webhook",
    10062: "Unknown interaction",
    30046: "Maximum number of edits to messages older than 1 hour reached. Try again later.",
    40005: "Request entity too large",
    40060: "Interaction has already been acknowledged.",
    50006: "Cannot send an empty message",
    50013: "Missing Permissions",
    50027: "Invalid Webhook Token",
    50035: "Invalid Form Body",
}
