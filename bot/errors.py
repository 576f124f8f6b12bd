"""What a member hears when a command fails on the bot's side: a sentence, never "This interaction failed"."""

from __future__ import annotations

import logging

import discord
from discord import app_commands

log = logging.getLogger(__name__)

SOMETHING_WRONG = "Something went wrong on my side; the owner can find it in the bot's log. Please try again."


class Refused(app_commands.CheckFailure):
    """A command's check turned the member away; `sentence` tells them why."""

    def __init__(self, sentence: str) -> None:
        super().__init__(sentence)
        self.sentence = sentence


def command_error_sentence(command: str, user_id: int, error: app_commands.AppCommandError) -> str:
    """Log what went wrong with `/command` and say it in a sentence the member can act on."""
    if isinstance(error, Refused):
        log.info("/%s by %s refused: %s", command, user_id, error.sentence)
        return error.sentence
    if isinstance(error, app_commands.TransformerError):
        log.info("/%s by %s: unusable option value %r", command, user_id, error.value)
        return f"I can't use {str(error.value)[:50]!r} for one of the options: check it and try again."
    if isinstance(error, app_commands.CommandSignatureMismatch):
        log.warning("/%s is out of date on Discord's side", command)
        return "Discord sent an out-of-date version of this command: try again in a minute."
    log.error("/%s by %s failed", command, user_id, exc_info=error)
    return SOMETHING_WRONG


async def answer_command_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
    """The command tree's error handler: log, and tell the member privately."""
    command = interaction.command.name if interaction.command else "?"
    sentence = command_error_sentence(command, interaction.user.id, error)
    try:
        if interaction.response.is_done():
            await interaction.followup.send(sentence, ephemeral=True)
        else:
            await interaction.response.send_message(sentence, ephemeral=True)
    except discord.HTTPException:
        log.warning("could not tell %s that /%s failed", interaction.user.id, command)
