"""The fake Discord against the real discord.py client: gateway, commands, interactions, messages, errors."""

from __future__ import annotations

import asyncio
import io
import re
import struct
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

import discord
import pytest
from discord import app_commands
from discord.ext import commands

from tests.support.fake_discord import (
    APPLICATION_ID,
    CHANNEL_ID,
    GUILD_ID,
    OWNER_ID,
    USER_ID,
    FakeDiscord,
    FakeFile,
    FakeInteraction,
    FakeTeam,
    FakeTeamMember,
    FakeUser,
    NotOffered,
)

Responder = Callable[[discord.Interaction], Awaitable[None]]


def tiny_png(width: int = 3, height: int = 2) -> bytes:
    """A valid greyscale PNG, small enough to inline."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


async def say_done(interaction: discord.Interaction) -> None:
    """Default behaviour of the test command."""
    await interaction.response.send_message("done")


class ProbeBot(commands.Bot):
    """A bot with one guild slash command whose behaviour each test sets."""

    def __init__(self) -> None:
        # guild_ready_timeout: on_ready fires this long after the last GUILD_CREATE (2 s by default).
        super().__init__(
            command_prefix=commands.when_mentioned, intents=discord.Intents.default(), guild_ready_timeout=0.05
        )
        self.calls: list[dict[str, Any]] = []
        self.respond: Responder = say_done

    async def setup_hook(self) -> None:
        guild = discord.Object(GUILD_ID)
        self.tree.add_command(imagine, guild=guild)
        self.tree.add_command(palette, guild=guild)
        await self.tree.sync(guild=guild)


@app_commands.command(description="Draw a picture")
@app_commands.describe(prompt="What to draw")
async def imagine(
    interaction: discord.Interaction[ProbeBot],
    prompt: app_commands.Range[str, 1, 500],
    steps: app_commands.Range[int, 1, 50] = 20,
    cfg: app_commands.Range[float, 1.0, 30.0] = 7.0,
    sampler: Literal["euler", "dpm++ 2m"] = "euler",
    private: bool = False,
    image: discord.Attachment | None = None,
) -> None:
    """Record the options, then run the test's behaviour."""
    interaction.client.calls.append(
        {"prompt": prompt, "steps": steps, "cfg": cfg, "sampler": sampler, "private": private, "image": image}
    )
    await interaction.client.respond(interaction)


class PaletteView(discord.ui.View):
    """One button that rewrites its message."""

    @discord.ui.button(label="Shuffle", custom_id="palette:shuffle")
    async def shuffle(self, interaction: discord.Interaction, button: discord.ui.Button[PaletteView]) -> None:
        await interaction.response.edit_message(content=f"shuffled by {interaction.user.id}", view=None)


class PromptModal(discord.ui.Modal, title="Prompt"):
    """A one-field modal."""

    text: discord.ui.TextInput[PromptModal] = discord.ui.TextInput(label="Prompt", custom_id="modal:prompt")

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"modal said {self.text.value}")


@app_commands.command(description="Show a palette")
async def palette(interaction: discord.Interaction[ProbeBot], modal: bool = False) -> None:
    """Answer with a button, or open a modal."""
    if modal:
        await interaction.response.send_modal(PromptModal())
    else:
        await interaction.response.send_message("palette", view=PaletteView(timeout=None))


@pytest.fixture
async def bot(fake: FakeDiscord) -> AsyncIterator[ProbeBot]:
    client = ProbeBot()
    async with fake.connected(client):
        yield client


async def test_client_connects_and_sees_configured_guild(fake: FakeDiscord, bot: ProbeBot) -> None:
    assert bot.is_ready() and fake.identifies == 1
    assert bot.user is not None and bot.user.id == APPLICATION_ID and bot.application_id == APPLICATION_ID
    guild = bot.get_guild(GUILD_ID)
    assert guild is not None and not guild.unavailable
    assert guild.filesize_limit == 10 * 1024 * 1024
    channel = bot.get_channel(CHANNEL_ID)
    assert isinstance(channel, discord.TextChannel) and not channel.is_nsfw()
    assert guild.me is not None and channel.permissions_for(guild.me).attach_files
    identify = next(f["d"] for f in fake.gateway_received if f["op"] == 2)
    assert identify["intents"] == discord.Intents.default().value


async def test_guild_sync_stores_option_constraints(fake: FakeDiscord, bot: ProbeBot) -> None:
    assert fake.commands[GUILD_ID] and None not in fake.commands
    command = fake.command("imagine", GUILD_ID)
    assert command is not None and command["guild_id"] == str(GUILD_ID)
    options = {o["name"]: o for o in command["options"]}
    assert options["prompt"]["required"] and options["prompt"]["max_length"] == 500
    assert (options["steps"]["type"], options["steps"]["min_value"], options["steps"]["max_value"]) == (4, 1, 50)
    assert (options["cfg"]["type"], options["cfg"]["min_value"]) == (10, 1.0)
    assert [c["value"] for c in options["sampler"]["choices"]] == ["euler", "dpm++ 2m"]
    assert options["image"]["type"] == 11


async def test_slash_reaches_callback_with_typed_values(fake: FakeDiscord, bot: ProbeBot) -> None:
    inter = await fake.slash(
        "imagine", {"prompt": "a cat", "steps": 30, "cfg": 6, "sampler": "dpm++ 2m", "private": True}
    )
    callback = await inter.wait_response()
    assert callback.type == 4 and callback.data is not None and callback.data["content"] == "done"
    assert bot.calls == [
        {"prompt": "a cat", "steps": 30, "cfg": 6.0, "sampler": "dpm++ 2m", "private": True, "image": None}
    ]
    assert type(bot.calls[0]["cfg"]) is float
    original = inter.original
    assert original is not None and original.content == "done" and not original.ephemeral
    assert fake.messages(CHANNEL_ID) == [original] and original.created_via == "interaction"


async def test_slash_rejects_values_discord_would_reject(fake: FakeDiscord, bot: ProbeBot) -> None:
    with pytest.raises(ValueError, match="outside 1..50"):
        await fake.slash("imagine", {"prompt": "a cat", "steps": 51})
    with pytest.raises(ValueError, match="required"):
        await fake.slash("imagine", {"steps": 5})
    with pytest.raises(ValueError, match="not one of"):
        await fake.slash("imagine", {"prompt": "x", "sampler": "ddim"})


async def test_attachment_option_arrives_readable(fake: FakeDiscord, bot: ProbeBot) -> None:
    png = tiny_png()
    inter = await fake.slash("imagine", {"prompt": "redo", "image": FakeFile("in.png", png)})
    await inter.wait_response()
    image = bot.calls[0]["image"]
    assert isinstance(image, discord.Attachment)
    assert (image.filename, image.content_type, image.size, image.width) == ("in.png", "image/png", len(png), 3)
    assert await image.read() == png


async def test_defer_then_edit_original_response_with_file(fake: FakeDiscord, bot: ProbeBot) -> None:
    png = tiny_png()

    async def defer_then_edit(interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True, ephemeral=True)
        await interaction.edit_original_response(content="here", attachments=[discord.File(io.BytesIO(png), "out.png")])
        await interaction.followup.send("extra", ephemeral=True)

    bot.respond = defer_then_edit
    inter = await fake.slash("imagine", {"prompt": "a dog"})
    original = await inter.wait_original(lambda m: m.content == "here")
    assert inter.response is not None and inter.response.type == 5 and inter.ephemeral
    assert not original.loading and original.ephemeral and original.edits == 1
    assert [(a.filename, a.content_type, a.data) for a in original.attachments] == [("out.png", "image/png", png)]
    followup = (await fake.wait_for(lambda: inter.followups))[0]
    assert followup.content == "extra" and followup.ephemeral and followup.created_via == "webhook"


async def test_channel_send_with_file_and_embed_keeps_bytes(fake: FakeDiscord, bot: ProbeBot) -> None:
    channel = bot.get_channel(CHANNEL_ID)
    assert isinstance(channel, discord.TextChannel)
    png = tiny_png(4, 4)
    embed = discord.Embed(title="result").set_image(url="attachment://out.png")
    sent = await channel.send(file=discord.File(io.BytesIO(png), "out.png"), embed=embed)
    stored = fake.message(sent.id)
    assert stored is not None and stored.created_via == "channel" and stored.author_id == APPLICATION_ID
    attachment = stored.attachments[0]
    assert (attachment.filename, attachment.content_type, attachment.size, attachment.data) == (
        "out.png",
        "image/png",
        len(png),
        png,
    )
    assert stored.embeds[0]["title"] == "result" and stored.embeds[0]["image"]["url"] == attachment.url
    assert sent.attachments[0].id == attachment.id and await sent.attachments[0].read() == png
    assert sent.embeds[0].image.width == 4


def embed_with(**parts: Any) -> discord.Embed:
    """An embed of one field and a footer and author, any part replaced."""
    embed = discord.Embed(title=parts.get("title", "t"), description=parts.get("description", "d"))
    embed.add_field(name=parts.get("name", "n"), value=parts.get("value", "v"))
    embed.set_footer(text=parts.get("footer", "f")).set_author(name=parts.get("author", "a"))
    return embed


@pytest.mark.parametrize(
    ("parts", "where", "message"),
    [
        ({"title": "t" * 257}, "title", "Must be 256 or fewer in length."),
        ({"description": "d" * 4097}, "description", "Must be 4096 or fewer in length."),
        ({"name": "n" * 257}, "fields.0.name", "Must be 256 or fewer in length."),
        ({"value": "v" * 1025}, "fields.0.value", "Must be 1024 or fewer in length."),
        ({"name": " "}, "fields.0.name", "This field is required"),
        ({"value": ""}, "fields.0.value", "This field is required"),
        ({"footer": "f" * 2049}, "footer.text", "Must be 2048 or fewer in length."),
        ({"author": "a" * 257}, "author.name", "Must be 256 or fewer in length."),
    ],
)
async def test_embeds_past_discords_limits_are_refused(
    fake: FakeDiscord, bot: ProbeBot, parts: dict[str, str], where: str, message: str
) -> None:
    channel = bot.get_channel(CHANNEL_ID)
    assert isinstance(channel, discord.TextChannel)
    with pytest.raises(discord.HTTPException) as refused:
        await channel.send(embed=embed_with(**parts))
    assert (refused.value.status, refused.value.code) == (400, 50035)
    assert f"In embeds.0.{where}: {message}" in str(refused.value)
    at_limits = {"title": "t" * 256, "name": "n" * 256, "value": "v" * 1024, "footer": "f" * 2048, "author": "a" * 256}
    await channel.send(embed=embed_with(**at_limits, description="d" * (6000 - 256 * 3 - 1024 - 2048)))
    with pytest.raises(discord.HTTPException, match="Embed size exceeds maximum size of 6000"):
        await channel.send(embed=embed_with(**at_limits, description="d" * (6001 - 256 * 3 - 1024 - 2048)))


async def test_edit_channel_message_keeps_history(fake: FakeDiscord, bot: ProbeBot) -> None:
    channel = bot.get_channel(CHANNEL_ID)
    assert isinstance(channel, discord.TextChannel)
    sent = await channel.send("queued")
    edited = await sent.edit(content="50%")
    stored = fake.message(sent.id)
    assert stored is not None and edited.content == "50%" and edited.edited_at is not None
    assert (stored.content, stored.edits, stored.history[0]["content"]) == ("50%", 1, "queued")
    await edited.delete()
    assert stored.deleted
    with pytest.raises(discord.NotFound):
        await channel.fetch_message(sent.id)


async def test_fail_next_unknown_interaction_raises_not_found(fake: FakeDiscord, bot: ProbeBot) -> None:
    outcome: asyncio.Future[discord.HTTPException | None] = asyncio.get_running_loop().create_future()

    async def respond(interaction: discord.Interaction) -> None:
        try:
            await interaction.response.send_message("late")
        except discord.HTTPException as exc:
            outcome.set_result(exc)
        else:
            outcome.set_result(None)

    bot.respond = respond
    failure = fake.fail_next("POST", r"^/interactions/\d+/[^/]+/callback$", 404, 10062)
    inter = await fake.slash("imagine", {"prompt": "x"})
    error = await asyncio.wait_for(outcome, 5)
    assert isinstance(error, discord.NotFound) and error.code == 10062
    assert failure.remaining == 0 and inter.response is None


async def test_rate_limit_429_is_retried_by_the_client(fake: FakeDiscord, bot: ProbeBot) -> None:
    channel = bot.get_channel(CHANNEL_ID)
    assert isinstance(channel, discord.TextChannel)
    failure = fake.fail_next("POST", rf"^/channels/{CHANNEL_ID}/messages$", 429, retry_after=0.01)
    sent = await channel.send("after a 429")
    statuses = [r.status for r in fake.requests if r.method == "POST" and r.path.endswith("/messages")]
    assert statuses == [429, 200] and failure.remaining == 0 and fake.message(sent.id) is not None


async def test_expired_token_answers_401_50027(fake: FakeDiscord, bot: ProbeBot) -> None:
    outcome: asyncio.Future[discord.HTTPException] = asyncio.get_running_loop().create_future()

    async def respond(interaction: discord.Interaction) -> None:
        await interaction.response.defer()
        fake.expire(fake.interactions[-1])  # as if 15 minutes passed
        try:
            await interaction.edit_original_response(content="too late")
        except discord.HTTPException as exc:
            outcome.set_result(exc)

    bot.respond = respond
    await fake.slash("imagine", {"prompt": "x"})
    error = await asyncio.wait_for(outcome, 5)
    assert (error.status, error.code) == (401, 50027)


async def test_button_press_updates_message(fake: FakeDiscord, bot: ProbeBot) -> None:
    inter = await fake.slash("palette", {})
    message = await inter.wait_original()
    assert message.custom_ids() == ["palette:shuffle"]
    press = await fake.press(message, "palette:shuffle")
    callback = await press.wait_response()
    assert callback.type == 7
    assert message.content == f"shuffled by {USER_ID}" and message.components == [] and message.edits == 1


async def test_modal_round_trip(fake: FakeDiscord, bot: ProbeBot) -> None:
    opened = await fake.slash("palette", {"modal": True})
    callback = await opened.wait_response()
    assert callback.type == 9 and callback.data is not None and callback.data["title"] == "Prompt"
    submitted = await fake.submit_modal(opened, {"modal:prompt": "a fox"})
    await submitted.wait_response()
    assert submitted.original is not None and submitted.original.content == "modal said a fox"


async def test_unknown_route_is_recorded(fake: FakeDiscord, bot: ProbeBot) -> None:
    with pytest.raises(discord.NotFound):
        await bot.fetch_guild(GUILD_ID)
    assert [(r.method, r.path) for r in fake.unhandled] == [("GET", f"/guilds/{GUILD_ID}")]
    fake.unhandled.clear()  # expected here; the fixture asserts nothing else was unhandled


async def test_resume_after_reconnect_keeps_working(fake: FakeDiscord, bot: ProbeBot) -> None:
    await fake.reconnect_client()
    assert (fake.identifies, fake.resumes) == (1, 1)
    inter = await fake.slash("imagine", {"prompt": "still here"})
    assert (await inter.wait_response()).type == 4


class RerollButton(discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=r"job:(?P<id>\d+):reroll"):
    """A restart-proof button: everything it needs is in its custom_id."""

    def __init__(self, job_id: int) -> None:
        super().__init__(discord.ui.Button(label="Reroll", custom_id=f"job:{job_id}:reroll"))
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> RerollButton:
        return cls(int(match["id"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer()  # type 6: the button's own message becomes @original
        await interaction.edit_original_response(content=f"rerolled {self.job_id}")


async def test_fresh_client_handles_buttons_sent_before_restart(fake: FakeDiscord) -> None:
    first = ProbeBot()
    async with fake.connected(first):
        channel = first.get_channel(CHANNEL_ID)
        assert isinstance(channel, discord.TextChannel)
        view = discord.ui.View(timeout=None).add_item(RerollButton(42))
        sent = await channel.send("result", view=view)
    second = ProbeBot()
    second.add_dynamic_items(RerollButton)
    async with fake.connected(second):
        press = await fake.press(sent.id, "job:42:reroll")
        assert (await press.wait_response()).type == 6
        stored = fake.message(sent.id)
        assert stored is not None
        await fake.wait_for(lambda: stored.edits, what="the edit of the button's message")
        assert stored.content == "rerolled 42" and fake.identifies == 2


class GlobalBot(ProbeBot):
    """Syncs globally: one command for servers only, one also for the bot's DM, one that says nothing."""

    async def setup_hook(self) -> None:
        async def ping(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("pong")

        places: list[tuple[str, app_commands.AppCommandContext | None]] = [
            ("servers", app_commands.AppCommandContext(guild=True)),
            ("anywhere", app_commands.AppCommandContext(guild=True, dm_channel=True)),
            ("unsaid", None),
        ]
        for name, contexts in places:
            self.tree.add_command(
                app_commands.Command(name=name, description="Ping", callback=ping, allowed_contexts=contexts)
            )
        await self.tree.sync()


async def pong(inter: Awaitable[FakeInteraction]) -> str:
    callback = await (await inter).wait_response()
    assert callback.data is not None
    return str(callback.data["content"])


async def test_a_global_command_is_offered_where_its_contexts_say(fake: FakeDiscord) -> None:
    async with fake.connected(GlobalBot()):
        contexts = [(fake.command(name) or {})["contexts"] for name in ("servers", "anywhere", "unsaid")]
        assert contexts == [[0], [0, 1], None]
        with pytest.raises(NotOffered, match=r"Discord does not offer /servers in the bot's DM: its contexts are"):
            await fake.slash("servers", {}, guild_id=None)
        for name in ("anywhere", "unsaid"):  # without contexts, Discord offers a server and the bot's DM
            assert await pong(fake.slash(name, {}, guild_id=None)) == "pong"
        assert await pong(fake.slash("servers", {})) == "pong"


async def test_sync_refuses_contexts_discord_does_not_know(fake: FakeDiscord, bot: ProbeBot) -> None:
    for field, value in (("contexts", [0, 3]), ("contexts", "guild"), ("integration_types", [0, 2])):
        with pytest.raises(discord.HTTPException) as refused:
            payload = [{"name": "xy", "description": "z", field: value}]
            await bot.http.bulk_upsert_global_commands(APPLICATION_ID, payload)
        assert refused.value.status == 400 and field in refused.value.text


async def test_the_application_has_an_owner_or_a_team(fake: FakeDiscord, bot: ProbeBot) -> None:
    app = await bot.application_info()
    assert app.owner.id == OWNER_ID and app.team is None
    boss, dev = FakeUser(id=USER_ID + 50, username="boss"), FakeUser(id=USER_ID + 51, username="dev")
    fake.team = FakeTeam(id=USER_ID + 60, owner=boss, members=(FakeTeamMember(dev, "read_only", accepted=False),))
    app = await bot.application_info()
    assert app.team is not None and app.team.owner_id == boss.id and app.owner.id == USER_ID + 60
    roles = {(m.id, m.role, m.membership_state) for m in app.team.members}
    assert roles == {
        (boss.id, discord.TeamMemberRole.admin, discord.TeamMembershipState.accepted),
        (dev.id, discord.TeamMemberRole.read_only, discord.TeamMembershipState.invited),
    }
