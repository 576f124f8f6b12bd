"""The one adapter over discord.Interaction: which of discord.py's calls each answer makes, in order (the
end-to-end tests run the same calls against the fake Discord)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import discord
import pytest

from bot.interactions.adapter import DiscordResponder, submitted_values
from bot.interactions.port import ResponseFailed
from tests.support.fake_port import discord_error

Call = tuple[str, tuple[Any, ...], dict[str, Any]]


class Recorder:
    """Stands in for discord.py's interaction, its response and its webhook: records every call."""

    def __init__(self, *, callback_message_id: int | None = 11, fail: str | None = None) -> None:
        self.calls: list[Call] = []
        self.done = False
        self.callback_message_id = callback_message_id
        self.fail = fail
        self.response = self
        self.followup = SimpleNamespace(send=self._recorded("followup.send"))
        self.message = SimpleNamespace(delete=self._recorded("message.delete"))

    def _recorded(self, name: str, result: Any = None) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            if name == self.fail:
                raise discord_error(404, "Not Found", "Unknown interaction")
            if name.startswith("response."):
                self.done = True
            return result

        return call

    def is_done(self) -> bool:
        return self.done

    def __getattr__(self, name: str) -> Any:
        results = {
            "send_message": SimpleNamespace(message_id=self.callback_message_id),
            "edit_original_response": SimpleNamespace(id=12),
            "original_response": SimpleNamespace(id=13),
        }
        prefix = "response." if name in ("send_message", "defer", "send_modal", "edit_message") else ""
        return self._recorded(prefix + name, results.get(name))

    def names(self) -> list[str]:
        return [name for name, _, _ in self.calls]


def adapter(recorder: Recorder) -> DiscordResponder:
    return DiscordResponder(recorder)  # type: ignore[arg-type]


async def test_a_private_reply_is_the_response_or_replaces_a_public_thinking() -> None:
    first = Recorder()
    await adapter(first).reply_privately("No.")
    assert first.calls == [("response.send_message", (), {"content": "No.", "ephemeral": True})]

    public = Recorder()
    responder = adapter(public)
    await responder.think(private=False)
    await responder.reply_privately("No.", quiet=True)
    mentions = public.calls[-1][2].pop("allowed_mentions")
    assert public.calls == [
        ("response.defer", (), {"ephemeral": False, "thinking": True}),
        ("delete_original_response", (), {}),
        ("followup.send", (), {"content": "No.", "ephemeral": True}),
    ]
    assert mentions.to_dict() == discord.AllowedMentions.none().to_dict()


async def test_after_a_private_thinking_the_reply_follows_up_in_its_place() -> None:
    recorder = Recorder()
    responder = adapter(recorder)
    embed, view = discord.Embed(title="t"), discord.ui.View()
    await responder.think(private=True)
    await responder.reply_privately(embed=embed, view=view)
    assert recorder.calls == [
        ("response.defer", (), {"ephemeral": True, "thinking": True}),
        ("followup.send", (), {"embed": embed, "view": view, "ephemeral": True}),
    ]


async def test_the_acknowledgement_is_the_response_or_edits_the_public_thinking() -> None:
    view = discord.ui.View()
    first = Recorder()
    assert await adapter(first).acknowledge("⏳ Queued.", view) == 11
    assert first.calls == [("response.send_message", ("⏳ Queued.",), {"view": view})]
    # Without the with_response callback's message, the original response is fetched.
    unknown = Recorder(callback_message_id=None)
    assert await adapter(unknown).acknowledge("⏳ Queued.", view) == 13
    assert unknown.names() == ["response.send_message", "original_response"]
    deferred = Recorder()
    responder = adapter(deferred)
    await responder.think(private=False)
    assert await responder.acknowledge("⏳ Queued.", view) == 12
    assert deferred.calls[1] == ("edit_original_response", (), {"content": "⏳ Queued.", "view": view})


@pytest.mark.parametrize("failing", ["response.send_message", "original_response", "edit_original_response"])
async def test_discord_refusing_the_acknowledgement_is_a_response_failed(failing: str) -> None:
    recorder = Recorder(callback_message_id=None, fail=failing)
    responder = adapter(recorder)
    if failing == "edit_original_response":
        await responder.think(private=False)
    with pytest.raises(ResponseFailed, match="Unknown interaction"):
        await responder.acknowledge("⏳ Queued.", discord.ui.View())


async def test_modals_updates_and_deletes_go_to_their_own_calls() -> None:
    recorder = Recorder()
    responder = adapter(recorder)
    modal, embed, view = discord.ui.Modal(title="Remix"), discord.Embed(), discord.ui.View()
    await responder.open_modal(modal)
    await responder.update_pressed(embed=embed, view=view)
    await responder.delete_pressed()
    assert recorder.calls == [
        ("response.send_modal", (modal,), {}),
        ("response.edit_message", (), {"embed": embed, "view": view}),
        ("message.delete", (), {}),
    ]
    refused = Recorder(fail="message.delete")
    with pytest.raises(ResponseFailed):
        await adapter(refused).delete_pressed()


def test_a_modal_submission_s_values_are_read_from_any_nesting() -> None:
    data = {
        "custom_id": "sdbot:remix:abcd",
        "components": [
            {"type": 1, "components": [{"type": 4, "custom_id": "prompt", "value": "a fox"}]},
            {"type": 18, "component": {"type": 4, "custom_id": "negative", "value": None}},
        ],
    }
    assert submitted_values(data) == {"prompt": "a fox", "negative": ""}
    assert submitted_values({"custom_id": "sdbot:reroll:abcd", "component_type": 2}) == {}
