"""What members read stays within Discord's limits whatever the engine says."""

from __future__ import annotations

from bot.render import failed_text


def test_a_failure_sentence_of_any_length_fits_one_message_with_its_ping() -> None:
    text = failed_text("x" * 5000)
    assert len(f"<@{2**64 - 1}> {text}") <= 2000 and text.endswith("…")
    assert failed_text("Cancelled.") == "❌ Cancelled."
