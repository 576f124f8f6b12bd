"""Read parameters, ⭐ Share's refusals and /history as services, through the fake interaction port (real SQLite;
images a member posted are served by a local HTTP server, as Discord's CDN would)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web
from PIL import Image

from bot.community.history import NO_HISTORY, PAGE_SIZE, HistoryService
from bot.community.read_params import DRAFT_GONE, NO_IMAGE, NO_METADATA, ReadParamsService
from bot.community.sharing import FLAGGED, NO_ART_CHANNEL, ShareService
from bot.imagine.attachments import MAX_IMAGE_BYTES, AttachmentInfo
from bot.pipeline.intake import ENGINE_STARTING
from bot.results.buttons import ImageAction, JobAction, Press
from bot.results.presses import UNKNOWN_JOB
from core.jobs import Flagged
from core.pngmeta import encode_png
from tests.support.fake_port import GUILD_ID, USER_ID, FakeResponder, Kind, custom_ids, member
from tests.support.service_kit import Kit, job_for, png, service_kit

STRANGER = USER_ID + 5
INFOTEXT = (
    "a red fox in the snow\nNegative prompt: blurry\nSteps: 12, Sampler: Euler a, CFG scale: 5, Seed: 42, Size: 256x192"
)
Serve = Callable[[str, bytes, str], AttachmentInfo]


@pytest.fixture
async def kit(tmp_path: Path) -> AsyncIterator[Kit]:
    async with service_kit(tmp_path) as kit:
        yield kit


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Serve files over HTTP on localhost; each call returns what Discord would say of the attachment."""
    files: dict[str, bytes] = {}

    async def get(request: web.Request) -> web.Response:
        return web.Response(body=files[request.match_info["name"]])

    app = web.Application()
    app.router.add_get("/{name}", get)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]

    def attach(name: str, data: bytes, content_type: str) -> AttachmentInfo:
        files[name] = data
        return AttachmentInfo(name, f"http://127.0.0.1:{port}/{name}", content_type, len(data), 256, 192)

    yield attach
    await runner.cleanup()


async def test_read_parameters_answers_privately_with_the_settings_and_a_run_button(kit: Kit, serve: Serve) -> None:
    service = ReadParamsService(intake=kit.intake, community=kit.community, engine_ready=kit.engine_ready)
    text = serve("notes.txt", b"hello", "text/plain")
    image = serve("fox.png", encode_png(Image.new("RGB", (256, 192)), INFOTEXT), "image/png")
    read = FakeResponder()
    await service.read(member(user_id=STRANGER), read, [text, image])
    assert read.kinds == [Kind.THINKING, Kind.PRIVATE] and read.answers[0].private
    answer = read.answers[1]
    assert answer.text is None and answer.embed is not None and answer.embed.title == "Parameters of fox.png"
    assert answer.embed.description == "a red fox in the snow"
    (run,) = custom_ids(answer.view)
    press = Press.parse(run)
    draft = await kit.community.draft(press.job_id)
    assert draft is not None and (draft.steps, draft.sampler, draft.seed, draft.width) == (12, "Euler a", 42, 256)

    # Whoever presses Run gets the job, acknowledged in the channel they pressed in.
    ran = FakeResponder()
    job = await service.run(member(), ran, press)
    assert job is not None and ran.kinds == [Kind.ACKNOWLEDGED] and job.user_id == USER_ID
    assert job.params.prompt == "a red fox in the snow" and job.params.negative_prompt == "blurry"


async def test_read_parameters_says_what_is_missing(kit: Kit, serve: Serve) -> None:
    service = ReadParamsService(intake=kit.intake, community=kit.community, engine_ready=kit.engine_ready)
    no_image = FakeResponder()
    await service.read(member(), no_image, [serve("notes.txt", b"hello", "text/plain")])
    assert no_image.only_text == NO_IMAGE
    plain = FakeResponder()
    await service.read(member(), plain, [serve("plain.png", png(64, 48), "image/png")])
    assert plain.kinds == [Kind.THINKING, Kind.PRIVATE] and plain.private_texts == [NO_METADATA]
    # Too large by Discord's own word: refused before a byte is downloaded.
    huge = replace(serve("huge.png", b"", "image/png"), size=MAX_IMAGE_BYTES + 1)
    refused = FakeResponder()
    await service.read(member(), refused, [huge])
    assert refused.kinds == [Kind.THINKING, Kind.PRIVATE]
    assert refused.private_texts[0].startswith("huge.png is 20.0 MiB: attach an image of at most 20 MiB")


async def test_running_read_settings_needs_the_draft_and_the_engine(kit: Kit) -> None:
    service = ReadParamsService(intake=kit.intake, community=kit.community, engine_ready=kit.engine_ready)
    gone = FakeResponder()
    assert await service.run(member(), gone, Press(JobAction.RUN, "abcdef")) is None
    assert gone.only_text == DRAFT_GONE
    draft = await kit.community.add_draft(USER_ID, job_for(member()).params, kit.clock())
    kit.engine.started = False  # still loading the model
    starting = FakeResponder()
    assert await service.run(member(), starting, Press(JobAction.RUN, draft)) is None
    assert starting.only_text == ENGINE_STARTING and len(kit.queue) == 0


async def test_share_refuses_from_sqlite_and_the_caller_before_calling_discord(kit: Kit) -> None:
    # The kit's client never connects: a refusal here must not need Discord.
    share = ShareService(
        store=kit.store,
        community=kit.community,
        policy=kit.policy,
        sources=kit.shared.sources,
        client=kit.shared.client,
        clock=kit.clock,
    )
    job = await kit.delivered(replace(job_for(member(), count=2), on_flagged=Flagged.SPOILER), flagged=(2,))

    async def refusal(press: Press, **caller: object) -> str:
        responder = FakeResponder()
        await share.press(member(**caller), responder, press)
        return responder.only_text

    assert await refusal(Press(ImageAction.SHARE, "abcdef", 1)) == UNKNOWN_JOB
    assert await refusal(Press(ImageAction.SHARE, job.id, 3)) == UNKNOWN_JOB
    assert await refusal(Press(ImageAction.SHARE, job.id, 1), guild_id=GUILD_ID + 1) == (
        "Images can only be shared in the server they were made in."
    )
    assert await refusal(Press(ImageAction.SHARE, job.id, 1), user_id=STRANGER) == (
        f"Only <@{USER_ID}> or someone with Manage Messages can share this."
    )
    assert await refusal(Press(ImageAction.SHARE, job.id, 2)) == FLAGGED
    assert await refusal(Press(ImageAction.SHARE, job.id, 1), user_id=STRANGER, manage_messages=True) == NO_ART_CHANNEL


async def test_history_shows_pages_privately_and_turns_them_in_place(kit: Kit) -> None:
    history = HistoryService(kit.store)
    empty = FakeResponder()
    await history.show(member(), empty)
    assert empty.only_text == NO_HISTORY
    jobs = [await kit.delivered(job_for(member(), f"fox {i}"), result_message_id=1000 + i) for i in range(6)]
    # Someone else's results are not in anyone's history but theirs; failed ones in no one's.
    await kit.delivered(job_for(member(user_id=STRANGER), "owl"))
    failed = job_for(member(), "cat")
    await kit.store.add(failed)
    await kit.store.mark_failed(failed.id, "no", kit.clock())

    shown = FakeResponder()
    await history.show(member(), shown)
    (page,) = shown.answers
    assert page.kind is Kind.PRIVATE and page.embed is not None and page.text is None
    newest = [job.id for job in reversed(jobs)][:PAGE_SIZE]
    assert [Press.parse(c).job_id for c in custom_ids(page.view) if c.startswith("sdbot:reroll")] == newest
    older = next(c for c in custom_ids(page.view) if c.startswith("sdbot:history-next"))

    turned = FakeResponder()
    await history.turn(member(), turned, Press.parse(older))
    (second,) = turned.answers
    assert second.kind is Kind.UPDATED
    rerolls = [Press.parse(c).job_id for c in custom_ids(second.view) if c.startswith("sdbot:reroll")]
    assert rerolls == [jobs[1].id, jobs[0].id]
    assert any(c.startswith("sdbot:history-prev") for c in custom_ids(second.view))
