"""Read parameters, image prompts on /imagine and /history, end to end against the fake Discord."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import MAX_TEXT_CHUNK, PngInfo

from bot.app import SdBot
from bot.community.read_params import DRAFT_GONE, NO_IMAGE, NO_METADATA, TOO_LONG
from bot.community.store import DRAFT_KEEP_S
from core.params import fit_aspect
from core.pngmeta import MAX_INFOTEXT_CHARS, encode_png, user_comment
from tests.support.bots import make_bot, results
from tests.support.community import content, first_result, job_id_of, private_followup
from tests.support.fake_discord import CHANNEL_ID, USER_ID, FakeDiscord, FakeFile, FakeMessage
from tests.support.fake_engine import FakeEngine

STRANGER = USER_ID + 7
A1111 = (
    "masterpiece, a red fox in the snow\n"
    "Negative prompt: blurry, (watermark:1.2)\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 3141592653, Size: 640x448, "
    'Model hash: c0d1994c73, Model: realisticVisionV20, Lora hashes: "fox: 1234abcd, snow: 99ff00aa", '
    "Version: v1.10.1"
)


def noise(width: int, height: int, seed: int = 1) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_with_infotext(image: Image.Image, infotext: str) -> bytes:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = user_comment(infotext)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    return buffer.getvalue()


def fields_of(message: FakeMessage) -> dict[str, str]:
    (embed,) = message.embeds
    return {f["name"]: f["value"] for f in embed["fields"]}


async def read(fake: FakeDiscord, message: FakeMessage, user_id: int = USER_ID) -> FakeMessage:
    return await private_followup(fake, await fake.context_menu("Read parameters", message, user_id=user_id))


async def test_an_uploaded_png_is_read_back_exactly_and_its_settings_run(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    upload = FakeFile("fox.png", encode_png(noise(64, 48), A1111), "image/png")
    posted = await fake.post_files_as_user(CHANNEL_ID, [upload], user_id=STRANGER)
    answer = await read(fake, posted)
    (embed,) = answer.embeds
    assert embed["title"] == "Parameters of fox.png"
    assert embed["description"] == "masterpiece, a red fox in the snow"
    assert fields_of(answer) == {
        "Negative prompt": "blurry, (watermark:1.2)",
        "Steps": "28",
        "Sampler": "DPM++ 2M",
        "Schedule type": "Karras",
        "CFG scale": "6.5",
        "Seed": "3141592653",
        "Size": "640x448",
        "Model hash (not used here)": "c0d1994c73",
        "Model (not used here)": "realisticVisionV20",
        "Lora hashes (not used here)": "fox: 1234abcd, snow: 99ff00aa",
        "Version (not used here)": "v1.10.1",
    }
    (run,) = answer.custom_ids()
    assert run.startswith("sdbot:run:")

    queued = await fake.press(answer, run)
    assert content(await queued.wait_response()).startswith("⏳ Queued")
    await engine.wait_calls(1)
    ((_, params),) = engine.calls
    assert (params.prompt, params.negative_prompt) == ("masterpiece, a red fox in the snow", "blurry, (watermark:1.2)")
    assert (params.steps, params.sampler, params.cfg, params.seed) == (28, "DPM++ 2M Karras", 6.5, 3141592653)
    assert (params.width, params.height, params.mode) == (640, 448, "txt2img")


async def test_read_settings_are_forgotten_a_day_later(fake: FakeDiscord, engine: FakeEngine, tmp_path: Path) -> None:
    now = [1_800_000_000.0]
    client = make_bot(tmp_path, engine, clock=lambda: now[0])
    async with fake.connected(client):
        upload = FakeFile("fox.png", encode_png(noise(64, 48), A1111), "image/png")
        answer = await read(fake, await fake.post_files_as_user(CHANNEL_ID, [upload], user_id=STRANGER))
        (run,) = answer.custom_ids()
        now[0] += DRAFT_KEEP_S + 1
        await client.run_chores()
        gone = await fake.press(answer, run)
        assert content(await gone.wait_response()) == DRAFT_GONE
        assert gone.ephemeral and engine.calls == []


async def test_the_bots_own_results_and_jpegs_with_exif_are_read(fake: FakeDiscord, bot: SdBot) -> None:
    grid = await first_result(fake, {"prompt": "fox, snow", "negative_prompt": "x", "count": 2, "seed": 40, "steps": 3})
    fields = fields_of(await read(fake, grid))
    assert (fields["Seed"], fields["Steps"], fields["Negative prompt"], fields["Size"]) == ("40", "3", "x", "512x512")

    jpeg = FakeFile("fox.jpg", jpeg_with_infotext(noise(32, 32), A1111), "image/jpeg")
    posted = await fake.post_files_as_user(CHANNEL_ID, [jpeg])
    assert fields_of(await read(fake, posted))["Seed"] == "3141592653"


@pytest.mark.parametrize(
    ("files", "sentence"),
    [
        ([FakeFile("plain.png", png_bytes(noise(16, 16)), "image/png")], NO_METADATA),
        ([FakeFile("caption.png", encode_png(noise(16, 16), "just a caption"), "image/png")], NO_METADATA),
        ([FakeFile("notes.txt", b"Steps: 20, Sampler: Euler, CFG scale: 7", "text/plain")], NO_IMAGE),
        ([], NO_IMAGE),
    ],
)
async def test_images_without_parameters_get_a_sentence(
    fake: FakeDiscord, bot: SdBot, files: list[FakeFile], sentence: str
) -> None:
    posted = await fake.post_files_as_user(CHANNEL_ID, files, content="look")
    inter = await fake.context_menu("Read parameters", posted)
    answer = await inter.wait_response()
    text = content(answer) if answer.type == 4 else (await private_followup(fake, inter)).content
    assert text == sentence


async def test_unsupported_settings_are_shown_with_a_sentence_and_no_run_button(fake: FakeDiscord, bot: SdBot) -> None:
    text = A1111.replace("Sampler: DPM++ 2M, Schedule type: Karras", "Sampler: LMS")
    posted = await fake.post_files_as_user(
        CHANNEL_ID, [FakeFile("lms.png", encode_png(noise(8, 8), text), "image/png")]
    )
    answer = await read(fake, posted)
    assert answer.content.startswith("I can't run these settings here: I can't run the sampler LMS")
    assert fields_of(answer)["Sampler"] == "LMS" and answer.custom_ids() == []


def ztxt_png(text: str) -> bytes:
    """A 1×1 PNG whose `parameters` is a zTXt chunk: a kilobyte can inflate to a megabyte."""
    info = PngInfo()
    info.add_text("parameters", text, zip=True)
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "text",
    [
        "a" * MAX_TEXT_CHUNK,  # within Pillow's limit: A1111's pattern spent hours on it, on the event loop
        "a" * (MAX_TEXT_CHUNK + 1),  # past it: Pillow raises "Decompressed Data Too Large"
        "fox\nSteps: 20, Seed: 1, CFG scale: 7, Model: " + "m" * MAX_INFOTEXT_CHARS,  # past the bot's own cap
    ],
)
async def test_text_past_any_real_infotext_gets_a_sentence(fake: FakeDiscord, bot: SdBot, text: str) -> None:
    posted = await fake.post_files_as_user(CHANNEL_ID, [FakeFile("bomb.png", ztxt_png(text), "image/png")])
    answer = await read(fake, posted)
    assert answer.content == TOO_LONG and answer.embeds == [] and answer.custom_ids() == []


async def test_numbers_too_long_for_int_get_a_sentence(fake: FakeDiscord, bot: SdBot) -> None:
    text = "fox\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 1x" + "9" * 5000
    posted = await fake.post_files_as_user(CHANNEL_ID, [FakeFile("size.png", ztxt_png(text), "image/png")])
    answer = await read(fake, posted)
    assert answer.content.startswith("I can't run these settings here: Size must be written as WIDTHxHEIGHT")
    assert len(fields_of(answer)["Size"]) == 1024 and fields_of(answer)["Size"].endswith("9…")
    assert answer.custom_ids() == []


async def test_the_longest_infotext_is_shown_within_discords_embed_limits(fake: FakeDiscord, bot: SdBot) -> None:
    pairs = ", ".join(f"Key {i}: {chr(65 + i % 26) * 200}" for i in range(30))
    text = "p" * 6000 + "\nNegative prompt: " + "n" * 2000 + "\nSteps: 20, Sampler: Euler, " + pairs
    posted = await fake.post_files_as_user(CHANNEL_ID, [FakeFile("long.png", ztxt_png(text), "image/png")])
    answer = await read(fake, posted)
    assert answer.content.startswith("I can't run these settings here: The prompt is 6000 characters long")
    (embed,) = answer.embeds
    fields = embed["fields"]
    assert embed["description"].endswith("p…") and len(embed["description"]) >= 1024
    assert fields[0] == {"name": "Negative prompt", "value": "n" * 1023 + "…", "inline": False}
    assert [f["name"] for f in fields[1:3]] == ["Steps", "Sampler"]
    assert fields[3]["name"] == "Key 0 (not used here)" and fields[3]["value"] == "A" * 200
    left_out = 3 + 30 - len(fields)
    assert left_out > 0 and embed["footer"]["text"] == f"({left_out} more not shown)"
    size = len(embed["title"]) + len(embed["description"]) + len(embed["footer"]["text"])
    assert size + sum(len(f["name"]) + len(f["value"]) for f in fields) <= 6000


async def test_an_image_prompt_draws_img2img_at_the_attachments_aspect(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    source = noise(300, 150, seed=4)
    options = {"prompt": "fox", "image": FakeFile("src.png", png_bytes(source), "image/png"), "strength": 0.5}
    result = await first_result(fake, {**options, "steps": 4, "seed": 3})
    ((job_id, params),) = engine.calls
    assert (params.mode, params.strength, params.steps) == ("img2img", 0.5, 4)
    assert (params.width, params.height) == fit_aspect((300, 150), 512 * 512, (1536, 1536)) == (728, 360)
    drawn_from = Image.open(io.BytesIO(engine.sources[job_id] or b""))
    assert np.array_equal(np.asarray(drawn_from.convert("RGB")), np.asarray(source)), "the attachment, unchanged"
    image = Image.open(io.BytesIO(result.attachments[0].data))
    assert image.size == (728, 360) and "Denoising strength: 0.5" in image.text["parameters"]
    job = await bot.store.get(job_id)
    assert job is not None and (job.parent_id, job.source_index) == (job_id, 0)

    # Kept like any button's source: a reroll draws over the same attachment, from the bot's own copy.
    await (await fake.press(result, f"sdbot:reroll:{job_id_of(result)}")).wait_response()
    await fake.wait_for(lambda: len(results(fake)) == 2 or None)
    reroll_id, reroll = engine.calls[-1]
    assert reroll.mode == "img2img" and reroll.seed != 3 and engine.sources[reroll_id] == engine.sources[job_id]
    downloads = [r for r in fake.requests if r.path.startswith("/attachments/")]
    assert len(downloads) == 1


def png_header(width: int, height: int) -> bytes:
    """The first bytes of a PNG claiming a size; nothing behind them."""
    return (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", width, height) + b"\x08\x02\0\0\0"
    )


@pytest.mark.parametrize(
    ("upload", "sentence"),
    [
        (FakeFile("notes.txt", b"a fox", "text/plain"), "notes.txt is not a PNG, JPEG or WebP image: attach one"),
        (FakeFile("anim.gif", b"GIF89a" + b"\0" * 20, "image/gif"), "anim.gif is not a PNG, JPEG or WebP image"),
        (FakeFile("huge.png", png_header(10000, 10000), "image/png"), "huge.png is 10000×10000 pixels: attach one"),
        (FakeFile("big.png", png_header(512, 512) + bytes(21 * 2**20), "image/png"), "big.png is 21.0 MiB"),
    ],
)
async def test_non_image_or_oversize_attachments_are_refused_before_downloading(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine, upload: FakeFile, sentence: str
) -> None:
    inter = await fake.slash("imagine", {"prompt": "fox", "image": upload})
    assert content(await inter.wait_response()).startswith(sentence) and inter.ephemeral
    assert not [r for r in fake.requests if r.path.startswith("/attachments/")], "not downloaded"
    assert engine.calls == [] and await bot.store.history(USER_ID, limit=1) == []


@pytest.mark.parametrize(
    "broken",
    [
        FakeFile("broken.png", png_header(64, 64) + b"not really", "image/png"),
        # Pillow refuses to open a PNG whose text chunk inflates past its limit ("Decompressed Data Too Large").
        FakeFile("broken.png", ztxt_png("a" * (MAX_TEXT_CHUNK + 1)), "image/png"),
    ],
)
async def test_an_attachment_that_does_not_decode_is_refused(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine, broken: FakeFile
) -> None:
    inter = await fake.slash("imagine", {"prompt": "fox", "image": broken})
    # Deferred before the download (Discord allows 3 s for an answer); the refusal replaces the "thinking…".
    refusal = await private_followup(fake, inter)
    assert refusal.content == "broken.png could not be read as an image: attach a PNG, JPEG or WebP."
    assert inter.original is not None and inter.original.deleted
    assert engine.calls == []


async def test_strength_without_an_image_is_refused(fake: FakeDiscord, bot: SdBot) -> None:
    inter = await fake.slash("imagine", {"prompt": "fox", "strength": 0.5})
    assert content(await inter.wait_response()).startswith("Strength only applies to an image prompt")


async def test_history_pages_through_results_with_redo_and_upscale(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    made = [await first_result(fake, {"prompt": f"fox {i}", "steps": 1, "count": 1 + i % 2}) for i in range(5)]
    await bot.dispatcher.handover.drain()  # each result is recorded as delivered once its post returns
    inter = await fake.slash("history")
    await inter.wait_response()
    page = inter.original
    assert page is not None and page.ephemeral
    lines = page.embeds[0]["description"].split("\n")
    assert [line for line in lines if line.startswith("“")] == ["“fox 4”", "“fox 3”", "“fox 2”", "“fox 1”"]
    assert f"[result](https://discord.com/channels/{made[4].guild_id}/{CHANNEL_ID}/{made[4].id})" in lines[0]
    newest, second = job_id_of(made[4]), job_id_of(made[3])
    assert page.custom_ids()[:4] == [
        f"sdbot:reroll:{newest}",
        f"sdbot:upscale:{newest}:1",
        f"sdbot:reroll:{second}",
        f"sdbot:upscale:{second}:1",
    ]
    assert f"sdbot:upscale:{second}:2" in page.custom_ids() and page.custom_ids()[-1].startswith("sdbot:history-next:")
    assert len(page.components) <= 5

    older = await fake.press(page, page.custom_ids()[-1])
    assert (await older.wait_response()).type == 7
    assert "“fox 0”" in page.embeds[0]["description"] and "fox 4" not in page.embeds[0]["description"]
    assert [c.split(":")[1] for c in page.custom_ids()] == ["reroll", "upscale", "history-prev"]
    newer = await fake.press(page, page.custom_ids()[-1])
    await newer.wait_response()
    assert "“fox 4”" in page.embeds[0]["description"]

    redo = await fake.press(page, f"sdbot:reroll:{newest}")
    assert content(await redo.wait_response()).startswith("⏳ Queued")
    reply = await fake.wait_for(lambda: next((m for m in results(fake) if m not in made), None))
    assert reply.reference is not None and int(reply.reference["message_id"]) == made[4].id, "answers the result"
    assert engine.calls[-1][1].prompt == "fox 4"


async def test_history_of_a_member_without_results(fake: FakeDiscord, bot: SdBot) -> None:
    inter = await fake.slash("history", user_id=STRANGER)
    assert content(await inter.wait_response()) == "You have no results yet: try `/imagine`."
