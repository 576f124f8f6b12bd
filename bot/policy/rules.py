"""The safe-content policy of a server and its channels, and what applies in one channel (pure, no I/O).

A server has a block list and settings; a channel may add words and override settings. Channels Discord marks
age-restricted have settings of their own, which by default apply neither the block list nor the checker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bot.policy.blocklist import BlockList
from core.jobs import Flagged

# Setting names as stored, with their defaults.
FLAGGED = "flagged"
AGE_BLOCKLIST = "age_blocklist"
AGE_FLAGGED = "age_flagged"
SETTING_NAMES = (FLAGGED, AGE_BLOCKLIST, AGE_FLAGGED)
DEFAULTS: dict[str, Any] = {FLAGGED: Flagged.SPOILER, AGE_BLOCKLIST: False, AGE_FLAGGED: Flagged.POST}


def parse_setting(name: str, raw: str) -> Flagged | bool:
    """A stored setting's value: a Flagged action, or on/off for the age-restricted block list."""
    if name == AGE_BLOCKLIST:
        return raw == "on"
    return Flagged(raw)


def format_setting(value: Flagged | bool) -> str:
    """A setting's value as stored and shown."""
    if isinstance(value, Flagged):
        return value.value
    return "on" if value else "off"


@dataclass(frozen=True)
class ScopePolicy:
    """One scope's own entries and settings (a server's, or a channel's on top of it)."""

    words: tuple[str, ...] = ()
    settings: dict[str, Flagged | bool] = field(default_factory=dict)


@dataclass(frozen=True)
class GuildPolicy:
    """A server's policy and its channels' own additions."""

    server: ScopePolicy = ScopePolicy()
    channels: dict[int, ScopePolicy] = field(default_factory=dict)

    def setting(self, name: str, channel_id: int | None) -> Flagged | bool:
        """The channel's own value, else the server's, else the default."""
        own = self.channels.get(channel_id, ScopePolicy()) if channel_id is not None else ScopePolicy()
        if name in own.settings:
            return own.settings[name]
        return self.server.settings.get(name, DEFAULTS[name])

    def words(self, channel_id: int | None) -> tuple[str, ...]:
        """The server's entries and the channel's own, without repeats."""
        own = self.channels.get(channel_id, ScopePolicy()).words if channel_id is not None else ()
        return tuple(dict.fromkeys((*self.server.words, *own)))

    def rules(self, channel_id: int | None, age_restricted: bool) -> ChannelRules:
        """What applies to a job in this channel."""
        if age_restricted:
            blocks = bool(self.setting(AGE_BLOCKLIST, channel_id))
            flagged = self.setting(AGE_FLAGGED, channel_id)
        else:
            blocks, flagged = True, self.setting(FLAGGED, channel_id)
        assert isinstance(flagged, Flagged)
        block_list = BlockList(self.words(channel_id) if blocks else ())
        return ChannelRules(block_list=block_list, on_flagged=flagged, age_restricted=age_restricted)


# A DM (SDBOT_ALLOW_DMS=1) has no server, so no block list and no admins to spoiler flagged images for: the safety
# checker (when installed) always runs there, and what it flags is withheld.
DIRECT_MESSAGES = GuildPolicy(server=ScopePolicy(settings={FLAGGED: Flagged.WITHHOLD}))


@dataclass(frozen=True)
class ChannelRules:
    """What applies to one job: the block list to check its prompt against, and what to do with flagged images."""

    block_list: BlockList
    on_flagged: Flagged
    age_restricted: bool


def blocked_sentence(found: str) -> str:
    """The member's ephemeral refusal: which words, and what to change."""
    return f"“{found}” is on this server's block list: take it out of your prompt and try again."
