"""The interaction port without Discord: a Caller built in the test, and a Responder that records every answer.

The fake keeps to Discord's rules for answering one interaction, so a service that breaks them fails here as it
would there: one initial response (a reply, "thinking…", the acknowledgement, a modal or an in-place update); a
modal or an update only as that response; the public acknowledgement only first or after a public "thinking…";
nothing private after it (the adapter would delete the acknowledgement to make room).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum
from types import SimpleNamespace
from typing import Any

import discord

from bot.interactions.port import Caller, ResponseFailed

GUILD_ID = 810_000_000_000_000_001
CHANNEL_ID = 810_000_000_000_000_002
USER_ID = 810_000_000_000_000_003
UPLOAD_LIMIT = 10 * 1024 * 1024


def discord_error(status: int, reason: str, message: str) -> discord.HTTPException:
    """The error discord.py raises when Discord refuses a request (it reads only these of aiohttp's response)."""
    return discord.HTTPException(SimpleNamespace(status=status, reason=reason), message)  # type: ignore[arg-type]


def custom_ids(view: discord.ui.View | None) -> list[str]:
    """The custom_ids of a view's buttons, in order."""
    assert view is not None
    return [item.custom_id for item in view.children]  # type: ignore[attr-defined]


def member(**changes: Any) -> Caller:
    """A member of the test server asking in its channel, where the bot has every permission it needs."""
    caller = Caller(
        user_id=USER_ID,
        user_name="Member",
        guild_id=GUILD_ID,
        channel_id=CHANNEL_ID,
        upload_limit=UPLOAD_LIMIT,
    )
    return replace(caller, **changes)


class Kind(str, Enum):
    """What a service did through the port."""

    PRIVATE = "private"
    THINKING = "thinking"
    ACKNOWLEDGED = "acknowledged"
    MODAL = "modal"
    UPDATED = "updated"
    DELETED = "deleted"
    NOTE = "note"


@dataclass(frozen=True)
class Answer:
    """One call a service made through the port, as it made it."""

    kind: Kind
    text: str | None = None
    embed: discord.Embed | None = None
    view: discord.ui.View | None = None
    modal: discord.ui.Modal | None = None
    private: bool = False
    quiet: bool = False
    message_id: int | None = None


@dataclass
class FakeResponder:
    """A Responder that records; `refuse` names the kinds Discord refuses (ResponseFailed) this time."""

    refuse: frozenset[Kind] = frozenset()
    answers: list[Answer] = field(default_factory=list)
    next_message_id: int = 900_000_000_000_000_001

    @property
    def kinds(self) -> list[Kind]:
        """What the service did, in order."""
        return [a.kind for a in self.answers]

    def _initial(self, kind: Kind) -> None:
        # Deleting the pressed message goes through the channel, not the interaction: it answers nothing.
        responded = [a for a in self.answers if a.kind is not Kind.DELETED]
        assert not responded, f"{kind.value} after the initial response: {self.kinds}"

    async def reply_privately(
        self,
        text: str | None = None,
        *,
        embed: discord.Embed | None = None,
        view: discord.ui.View | None = None,
        quiet: bool = False,
    ) -> None:
        assert text is not None or embed is not None, "an empty reply"
        assert Kind.ACKNOWLEDGED not in self.kinds, "a private reply would delete the acknowledgement"
        self.answers.append(Answer(Kind.PRIVATE, text, embed, view, private=True, quiet=quiet))

    async def note_privately(self, text: str) -> None:
        assert [a for a in self.answers if a.kind is not Kind.DELETED], "a note before any answer"
        self.answers.append(Answer(Kind.NOTE, text, private=True))

    async def think(self, *, private: bool) -> None:
        self._initial(Kind.THINKING)
        self.answers.append(Answer(Kind.THINKING, private=private))

    async def acknowledge(self, text: str, view: discord.ui.View) -> int:
        if self.answers != [Answer(Kind.THINKING, private=False)]:
            # Only a public "thinking…" can become the public acknowledgement.
            self._initial(Kind.ACKNOWLEDGED)
        if Kind.ACKNOWLEDGED in self.refuse:
            raise ResponseFailed("404 Not Found (error code: 10062): Unknown interaction")
        message_id, self.next_message_id = self.next_message_id, self.next_message_id + 1
        self.answers.append(Answer(Kind.ACKNOWLEDGED, text, view=view, message_id=message_id))
        return message_id

    async def open_modal(self, modal: discord.ui.Modal) -> None:
        self._initial(Kind.MODAL)
        self.answers.append(Answer(Kind.MODAL, modal=modal))

    async def update_pressed(self, *, embed: discord.Embed, view: discord.ui.View) -> None:
        self._initial(Kind.UPDATED)
        self.answers.append(Answer(Kind.UPDATED, embed=embed, view=view))

    async def delete_pressed(self) -> None:
        if Kind.DELETED in self.refuse:
            raise ResponseFailed("403 Forbidden (error code: 50013): Missing Permissions")
        self.answers.append(Answer(Kind.DELETED))

    @property
    def private_texts(self) -> list[str]:
        """The texts only the member saw, in order."""
        return [a.text for a in self.answers if a.kind is Kind.PRIVATE and a.text is not None]

    @property
    def only_text(self) -> str:
        """The one private sentence the service answered with (and nothing else said or done)."""
        (answer,) = self.answers
        assert answer.kind is Kind.PRIVATE and answer.text is not None, self.kinds
        return answer.text

    @property
    def acknowledgement(self) -> Answer:
        """The public acknowledgement the service posted."""
        (answer,) = [a for a in self.answers if a.kind is Kind.ACKNOWLEDGED]
        return answer
