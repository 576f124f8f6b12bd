"""Aspect ratios as members give them (`16:9`): a size of about the model's native pixel count, in multiples of 8."""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.params import InvalidParams, fit_aspect

# What /imagine offers (Discord shows them as choices); Remix's `--ar W:H` takes any ratio within the bounds.
CHOICES = ("1:1", "4:5", "2:3", "9:16", "5:4", "3:2", "16:9", "21:9")
MOST_ELONGATED = 4  # from 1:4 to 4:1
_RATIO = re.compile(r"^\s*(\d{1,4})\s*:\s*(\d{1,4})\s*$")
# `--ar W:H` in a prompt, as Midjourney's members write it.
_AR_FLAG = re.compile(r"(?:^|\s)--ar\s+([^\s,]*)")


@dataclass(frozen=True)
class AspectRatio:
    """Width to height, as given (16:9 stays 16:9)."""

    width: int
    height: int

    @classmethod
    def parse(cls, text: str) -> AspectRatio:
        """`16:9` and the like; InvalidParams with a sentence for anything else or a ratio past 1:4 or 4:1."""
        match = _RATIO.match(text)
        if match is None or int(match[1]) == 0 or int(match[2]) == 0:
            raise InvalidParams(f"Write the aspect ratio as width:height, such as 16:9, not `{text.strip()[:20]}`.")
        ratio = cls(int(match[1]), int(match[2]))
        if not 1 / MOST_ELONGATED <= ratio.width / ratio.height <= MOST_ELONGATED:
            raise InvalidParams(f"An aspect ratio must lie between 1:4 and 4:1, not {ratio}.")
        return ratio

    def size(self, area: int, max_side: int) -> tuple[int, int]:
        """About `area` pixels in this shape, each side a multiple of 8 and at most `max_side`."""
        return fit_aspect((self.width, self.height), area, (max_side, max_side))

    def __str__(self) -> str:
        return f"{self.width}:{self.height}"


def take_ar_flag(prompt: str) -> tuple[str, AspectRatio | None]:
    """The prompt without a `--ar W:H` in it, and that ratio (None when there is none); InvalidParams for a bad one
    or for two."""
    found = _AR_FLAG.findall(prompt)
    if not found:
        return prompt, None
    if len(found) > 1:
        raise InvalidParams("Give one `--ar W:H` in the prompt, not several.")
    return _AR_FLAG.sub("", prompt).strip(), AspectRatio.parse(found[0])
