"""Button presses and 🎛 Remix as services, through the fake interaction port: which presses are refused and how,
what a press derives, and a remix's modal and its refusals (real SQLite and image folder, no Discord)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from bot.interactions.port import MESSAGE_MAX
from bot.pipeline.intake import DMS_OFF
from bot.results.buttons import BadButton, JobAction, Press
from bot.results.presses import UNKNOWN_BUTTON, UNKNOWN_JOB, WITHHELD, PressService
from bot.results.remix import RemixService, echo
from core.jobs import Flagged, Job, JobState
from core.params import MAX_PROMPT_CHARS
from tests.support.fake_port import CHANNEL_ID, USER_ID, FakeResponder, Kind, member
from tests.support.service_kit import RESULT_MESSAGE_ID, Kit, job_for, service_kit

PRESSED_ID = RESULT_MESSAGE_ID + 1
STRANGER = USER_ID + 5


class Services:
    """The press and remix services over one kit; cancellations are recorded, not run."""

    def __init__(self, kit: Kit) -> None:
        self.kit = kit
        self.cancelled: list[tuple[str, int]] = []
        self.remix = RemixService(intake=kit.intake, engine_ready=kit.engine_ready, seed_source=random.Random(1))
        # Images are only fetched back from Discord when gone from disk, which no test here needs.
        self.presses = PressService(
            intake=kit.intake,
            sources=kit.shared.sources,
            engine_ready=kit.engine_ready,
            cancel=self._cancel,
            seed_source=random.Random(2),
            handlers={JobAction.REMIX: self.remix.press},
        )

    async def _cancel(self, job: Job, by_id: int) -> str:
        self.cancelled.append((job.id, by_id))
        return "Cancelled."

    async def press(self, custom_id: str, **caller: object) -> FakeResponder:
        """Press `custom_id` on the result message as a member (with `caller`'s changes), through the service its
        DynamicItem calls: `press` for the families' custom_ids, `unknown` for any other."""
        responder = FakeResponder()
        pressed_by = member(**{"message_id": PRESSED_ID, **caller})
        try:
            await self.presses.press(pressed_by, responder, Press.parse(custom_id))
        except BadButton:
            await self.presses.unknown(pressed_by, responder, custom_id)
        return responder


@pytest.fixture
async def kit(tmp_path: Path) -> AsyncIterator[Kit]:
    async with service_kit(tmp_path) as kit:
        yield kit


@pytest.fixture
def services(kit: Kit) -> Services:
    return Services(kit)


async def test_unknown_buttons_and_forgotten_jobs_get_a_sentence(services: Services) -> None:
    assert (await services.press("sdbot:explode:abcd")).only_text == UNKNOWN_BUTTON
    assert (await services.press("not ours")).only_text == UNKNOWN_BUTTON
    assert (await services.press("sdbot:reroll:abcd")).only_text == UNKNOWN_JOB
    assert (await services.press("sdbot:remix:abcd")).only_text == UNKNOWN_JOB


async def test_a_press_on_a_withheld_image_makes_nothing_and_says_why(kit: Kit, services: Services) -> None:
    job = await kit.delivered(replace(job_for(member(), count=2), on_flagged=Flagged.WITHHOLD), flagged=(1,))
    assert job.withheld == (1,)
    for custom_id in (f"sdbot:vary-subtle:{job.id}:1", f"sdbot:upscale:{job.id}:1", f"sdbot:zoom-2:{job.id}:1"):
        assert (await services.press(custom_id)).only_text == WITHHELD
    assert len(kit.queue) == 0
    # The image beside it is drawn over as usual.
    varied = await services.press(f"sdbot:vary-subtle:{job.id}:2")
    assert varied.kinds == [Kind.ACKNOWLEDGED]
    (child,) = kit.queue.order()
    assert (child.parent_id, child.source_index, child.params.mode) == (job.id, 2, "vary")


async def test_a_withheld_image_off_disk_is_refused_after_the_public_thinking(kit: Kit, services: Services) -> None:
    """Off disk, the image would come back from Discord: the press thinks first, and the refusal replaces that."""
    job = await kit.delivered(replace(job_for(member()), on_flagged=Flagged.WITHHOLD), flagged=(1,), kept=False)
    refused = await services.press(f"sdbot:upscale:{job.id}:1")
    assert refused.answers[0].kind is Kind.THINKING and not refused.answers[0].private
    assert refused.kinds == [Kind.THINKING, Kind.PRIVATE] and refused.private_texts == [WITHHELD]


async def test_a_press_answers_the_pressed_message_or_for_a_private_page_the_result(
    kit: Kit, services: Services
) -> None:
    job = await kit.delivered(job_for(member()))
    await services.press(f"sdbot:reroll:{job.id}", user_id=STRANGER, user_name="Stranger")
    # From a private message (a /history page), the job's own result, when it is in this channel.
    await services.press(f"sdbot:reroll:{job.id}", message_ephemeral=True, user_id=STRANGER + 1)
    await services.press(f"sdbot:reroll:{job.id}", message_ephemeral=True, channel_id=CHANNEL_ID + 1)
    first, from_page, elsewhere = kit.queue.order()
    assert (first.user_id, first.user_name, first.reply_to) == (STRANGER, "Stranger", PRESSED_ID)
    assert first.params.prompt == job.params.prompt and first.params.seed != job.params.seed
    assert from_page.reply_to == RESULT_MESSAGE_ID
    assert elsewhere.reply_to is None and elsewhere.channel_id == CHANNEL_ID + 1


async def test_in_dms_only_presses_that_take_away_still_work(tmp_path: Path) -> None:
    async with service_kit(tmp_path) as kit:
        services = Services(kit)
        job = await kit.delivered(job_for(member(guild_id=None)))
        assert (await services.press(f"sdbot:reroll:{job.id}", guild_id=None)).only_text == DMS_OFF
        assert (await services.press(f"sdbot:remix:{job.id}", guild_id=None)).only_text == DMS_OFF
        assert (await services.press(f"sdbot:cancel:{job.id}", guild_id=None)).only_text == "Cancelled."
        deleted = await services.press(f"sdbot:delete:{job.id}", guild_id=None)
        assert deleted.kinds == [Kind.DELETED, Kind.PRIVATE] and deleted.private_texts == ["Deleted."]


async def test_only_its_member_or_manage_messages_may_delete_a_result(kit: Kit, services: Services) -> None:
    job = await kit.delivered(job_for(member()))
    refused = await services.press(f"sdbot:delete:{job.id}", user_id=STRANGER)
    assert refused.only_text == f"Only <@{USER_ID}> or someone with Manage Messages can delete this."
    assert refused.answers[0].quiet, "the sentence names the member without pinging them"
    moderated = await services.press(f"sdbot:delete:{job.id}", user_id=STRANGER, manage_messages=True)
    assert moderated.kinds == [Kind.DELETED, Kind.PRIVATE] and moderated.private_texts == ["Deleted."]
    # An admin (Manage Server) may cancel, but not delete.
    admin = await services.press(f"sdbot:delete:{job.id}", user_id=STRANGER, manage_guild=True)
    assert admin.only_text.startswith("Only ")


async def test_a_delete_discord_refuses_or_without_a_message_gets_a_sentence(kit: Kit, services: Services) -> None:
    job = await kit.delivered(job_for(member()))
    refusing = FakeResponder(refuse=frozenset({Kind.DELETED}))
    await services.presses.press(member(message_id=PRESSED_ID), refusing, Press(JobAction.DELETE, job.id))
    assert refusing.only_text == "Discord would not let me delete that message."
    assert (await services.press(f"sdbot:delete:{job.id}", message_id=None)).only_text == UNKNOWN_JOB


async def test_its_member_or_an_admin_may_cancel_a_job(kit: Kit, services: Services) -> None:
    job = job_for(member())
    await kit.store.add(job)
    refused = await services.press(f"sdbot:cancel:{job.id}", user_id=STRANGER)
    assert refused.only_text == f"Only <@{USER_ID}> or an admin can cancel this." and refused.answers[0].quiet
    assert (await services.press(f"sdbot:cancel:{job.id}")).only_text == "Cancelled."
    assert (await services.press(f"sdbot:cancel:{job.id}", user_id=STRANGER, manage_guild=True)).only_text == (
        "Cancelled."
    )
    assert services.cancelled == [(job.id, USER_ID), (job.id, STRANGER)]


async def test_a_remix_press_opens_the_modal_prefilled_with_the_job(kit: Kit, services: Services) -> None:
    job = await kit.delivered(job_for(member(), negative_prompt="blurry", seed=9, width=256, height=192, steps=3))
    opened = await services.press(f"sdbot:remix:{job.id}", user_id=STRANGER)
    assert opened.kinds == [Kind.MODAL]
    modal = opened.answers[0].modal
    assert modal is not None and modal.custom_id == f"sdbot:remix:{job.id}"
    prefilled = {item.custom_id: item.default for item in modal.children}  # type: ignore[attr-defined]
    assert prefilled == {
        "prompt": "a red fox",
        "negative": "blurry",
        "size": "256x192",
        "settings": "Steps: 3, CFG scale: 7, Seed: 9, Sampler: DPM++ 2M, Schedule type: Karras",
    }


async def test_a_remix_submission_runs_the_edited_job_for_whoever_submitted(kit: Kit, services: Services) -> None:
    job = await kit.delivered(job_for(member(), steps=3))
    values = {"prompt": "a blue fox", "negative": "", "size": "320x256", "settings": "Steps: 4, Seed: -1"}
    submitted = FakeResponder()
    caller = member(user_id=STRANGER, message_id=PRESSED_ID, values=values)
    remixed = await services.remix.submit(caller, submitted, job.id)
    assert remixed is not None and submitted.kinds == [Kind.ACKNOWLEDGED]
    stored = await kit.store.get(remixed.id)
    assert stored is not None and stored.state is JobState.QUEUED and stored.user_id == STRANGER
    params = remixed.params
    assert (params.prompt, params.width, params.height, params.steps) == ("a blue fox", 320, 256, 4)
    assert params.seed == random.Random(1).randrange(2**32), "-1 draws a random seed"
    assert remixed.reply_to == PRESSED_ID


@pytest.mark.parametrize(
    ("edit", "sentence"),
    [
        ({"settings": "Steps: 500"}, "Steps must be between 1 and 100, not 500."),
        ({"settings": "Steps: 4, Clip skip: 2"}, "I don't know the setting 'Clip skip'"),
        ({"settings": "steps four"}, "Write the settings as A1111 does, e.g. `Steps: 30, CFG scale: 7"),
        ({"size": "huge"}, "Size must be written as WIDTHxHEIGHT"),
    ],
)
async def test_a_refused_remix_echoes_the_edit_back(
    kit: Kit, services: Services, edit: dict[str, str], sentence: str
) -> None:
    job = await kit.delivered(job_for(member()))
    values = {"prompt": "a green fox", "negative": "blurry", **edit}
    refused = FakeResponder()
    assert await services.remix.submit(member(values=values), refused, job.id) is None
    text = refused.only_text
    assert text.startswith(sentence)
    assert text.endswith(f"\nYour edit, to copy back:\n```\n{echo(values)}\n```")
    assert len(kit.queue) == 0


async def test_a_refused_remix_of_the_longest_prompts_fits_one_message(kit: Kit, services: Services) -> None:
    job = await kit.delivered(job_for(member()))
    values = {"prompt": "p" * MAX_PROMPT_CHARS, "negative": "n" * MAX_PROMPT_CHARS, "settings": "Steps: 500"}
    refused = FakeResponder()
    await services.remix.submit(member(values=values), refused, job.id)
    assert len(refused.only_text) <= MESSAGE_MAX and refused.only_text.endswith("\n```")
    assert ("p" * MAX_PROMPT_CHARS) in refused.only_text
