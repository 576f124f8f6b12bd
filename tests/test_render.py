"""What members read stays within Discord's limits whatever the engine says."""

from __future__ import annotations

from bot.interactions.adapter import DiscordResponder
from bot.results.render import failed_text


def test_a_failure_sentence_of_any_length_fits_one_message_with_its_ping() -> None:
    text = failed_text("x" * 5000)
    assert len(f"<@{2**64 - 1}> {text}") <= 2000 and text.endswith("…")
    assert failed_text("Cancelled.") == "❌ Cancelled."


async def test_a_private_answer_of_any_length_is_cut_to_what_discord_accepts() -> None:
    sent: list[str] = []

    class Response:
        def is_done(self) -> bool:
            return False

        async def send_message(self, content: str, *, ephemeral: bool) -> None:
            assert ephemeral
            sent.append(content)

    class Interaction:
        response = Response()

    await DiscordResponder(Interaction()).reply_privately("y" * 2500)  # type: ignore[arg-type]
    (text,) = sent
    assert len(text) == 2000 and text.endswith("…")
