"""Button custom_ids: each is claimed by exactly one of the DynamicItems the client registers (discord.py runs every
item whose template matches, so two would answer one press twice), and the family that claims it agrees with the
press it stands for."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from bot.results.buttons import (
    BUTTON_ITEMS,
    BadButton,
    ImageAction,
    ImageButton,
    JobAction,
    JobButton,
    Press,
    UnknownButton,
    button_item,
)

ACTIONS = [action.value for action in (*ImageAction, *JobAction)]
custom_ids = st.one_of(
    # Discord sends custom_ids of 1 to 100 characters.
    st.text(min_size=1, max_size=100),
    st.builds(
        lambda action, job, index: f"sdbot:{action}:{job}{index}",
        st.sampled_from([*ACTIONS, "zoom-3", "pan", "Reroll", ""]),
        st.text(alphabet="0123456789abcdefg", max_size=34),
        st.sampled_from(["", ":0", ":1", ":9", ":10", ":x", ":1\n", "\n"]),
    ),
)


def claimed_by(custom_id: str) -> list[type]:
    """The registered items whose template discord.py would fullmatch against this custom_id."""
    return [item for item in BUTTON_ITEMS if item.__discord_ui_compiled_template__.fullmatch(custom_id)]


@given(custom_ids)
@example("sdbot:reroll:abcd:1")
@example("sdbot:upscale:abcd")
@example("sdbot:reroll:abcd\n")
def test_every_custom_id_is_claimed_by_exactly_one_item(custom_id: str) -> None:
    (item,) = claimed_by(custom_id)
    try:
        press = Press.parse(custom_id)
    except BadButton:
        assert item is UnknownButton
    else:
        assert item is (ImageButton if isinstance(press.action, ImageAction) else JobButton)
        assert press.custom_id == custom_id


def test_every_action_makes_a_button_of_its_own_family_that_reads_back() -> None:
    for action in ImageAction:
        button = button_item(Press(action, "ab12cd", 3), label="x")
        assert isinstance(button, ImageButton) and claimed_by(button.custom_id) == [ImageButton]
        assert Press.parse(button.custom_id) == Press(action, "ab12cd", 3)
    for job_action in JobAction:
        button = button_item(Press(job_action, "ab12cd"), label="x")
        assert isinstance(button, JobButton) and claimed_by(button.custom_id) == [JobButton]
        assert Press.parse(button.custom_id) == Press(job_action, "ab12cd")


def test_a_press_with_the_other_familys_shape_cannot_be_made() -> None:
    for action, index in ((ImageAction.UPSCALE, None), (JobAction.REROLL, 1)):
        try:
            Press(action, "ab12cd", index)
        except BadButton:
            continue
        raise AssertionError(f"{action} with index {index} was accepted")
