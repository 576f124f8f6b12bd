"""What to draw: the plain-data parameters of one generation, shared by the bot and the engine (no torch)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

# Named as A1111 names them, so members and infotext readers recognise them.
SAMPLERS: tuple[str, ...] = ("Euler a", "Euler", "DPM++ 2M", "DPM++ 2M Karras", "DPM++ SDE Karras", "DDIM", "UniPC")
DEFAULT_SAMPLER = "DPM++ 2M Karras"
DEFAULT_STEPS = 30
DEFAULT_CFG = 7.0

MIN_SIZE, MAX_SIZE, SIZE_MULTIPLE = 64, 1536, 8
MIN_STEPS, MAX_STEPS = 1, 100
MIN_CFG, MAX_CFG = 1.0, 30.0
MAX_SEED = 2**32 - 1
MIN_COUNT, MAX_COUNT = 1, 4
MAX_PROMPT_CHARS = 1500


class InvalidParams(ValueError):
    """Parameters a member can fix; the message is a sentence saying what to change."""


@dataclass(frozen=True)
class GenerationParams:
    """One request: `count` images, the i-th drawn from seed `seed + i` (as A1111 numbers a batch)."""

    prompt: str
    negative_prompt: str = ""
    width: int = 512
    height: int = 512
    steps: int = DEFAULT_STEPS
    cfg: float = DEFAULT_CFG
    sampler: str = DEFAULT_SAMPLER
    seed: int = 0
    count: int = 1

    def seeds(self) -> tuple[int, ...]:
        """The seed of each image, wrapping at 2³²."""
        return tuple((self.seed + i) % (MAX_SEED + 1) for i in range(self.count))

    @property
    def pixels(self) -> int:
        """Pixels drawn at once: every image of the job shares one denoising batch."""
        return self.width * self.height * self.count

    def with_seed(self, seed: int) -> GenerationParams:
        """The same request from another seed."""
        return replace(self, seed=seed)

    def validate(self) -> GenerationParams:
        """Return self, or raise InvalidParams with a sentence saying what to change."""
        if not self.prompt.strip():
            raise InvalidParams("The prompt is empty: describe what you want to see.")
        for name, text in (("prompt", self.prompt), ("negative prompt", self.negative_prompt)):
            if len(text) > MAX_PROMPT_CHARS:
                raise InvalidParams(
                    f"The {name} is {len(text)} characters long: shorten it to {MAX_PROMPT_CHARS} or fewer."
                )
        for name, value in (("width", self.width), ("height", self.height)):
            if not MIN_SIZE <= value <= MAX_SIZE:
                raise InvalidParams(f"The {name} must be between {MIN_SIZE} and {MAX_SIZE} pixels, not {value}.")
            if value % SIZE_MULTIPLE:
                lower = value - value % SIZE_MULTIPLE
                raise InvalidParams(
                    f"The {name} must be a multiple of {SIZE_MULTIPLE}: try {lower} or {lower + SIZE_MULTIPLE}"
                    f" instead of {value}."
                )
        if not MIN_STEPS <= self.steps <= MAX_STEPS:
            raise InvalidParams(f"Steps must be between {MIN_STEPS} and {MAX_STEPS}, not {self.steps}.")
        if not MIN_CFG <= self.cfg <= MAX_CFG:
            raise InvalidParams(f"CFG scale must be between {MIN_CFG:g} and {MAX_CFG:g}, not {self.cfg:g}.")
        if self.sampler not in SAMPLERS:
            raise InvalidParams(f"Unknown sampler {self.sampler!r}: choose one of {', '.join(SAMPLERS)}.")
        if not 0 <= self.seed <= MAX_SEED:
            raise InvalidParams(f"The seed must be between 0 and {MAX_SEED}, not {self.seed}.")
        if not MIN_COUNT <= self.count <= MAX_COUNT:
            raise InvalidParams(f"You can ask for {MIN_COUNT} to {MAX_COUNT} images at once, not {self.count}.")
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, for SQLite and the engine wire."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationParams:
        """Inverse of to_dict; unknown keys (from a newer version) are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
