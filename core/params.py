"""What to draw: the plain-data parameters of one generation, shared by the bot and the engine (no torch)."""

from __future__ import annotations

import enum
import math
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
# A prompt's structure: the LoRAs one job may apply (SDBOT_MAX_LORAS; each is an adapter loaded for the job), how
# far a LoRA's weight may go either way (far past what LoRAs are made for: beyond it images are noise, or NaN), and
# how many 75-token chunks a prompt or negative prompt may take (each is a pass of the text encoder and lengthens
# every step's cross-attention; BREAKs add them without adding text).
DEFAULT_MAX_LORAS = 5
MAX_LORA_WEIGHT = 10.0
MAX_PROMPT_CHUNKS = 8
# Clip skip as A1111 counts it: 1 is the text encoder's last layer, 2 the penultimate, …; 0 the model's default.
MAX_CLIP_SKIP = 12
# Upscales and outpaints may grow past what /imagine offers, up to this many pixels a side.
MAX_DERIVED_SIZE = 2048


class JobMode(str, enum.Enum):
    """What a job draws from: noise alone (txt2img), or a source image it varies, upscales, outpaints (zoom, pan)
    or redraws (img2img: a member's image prompt)."""

    TXT2IMG = "txt2img"
    VARY = "vary"
    UPSCALE = "upscale"
    ZOOM = "zoom"
    PAN = "pan"
    IMG2IMG = "img2img"
    FACES = "faces"

    @property
    def needs_source(self) -> bool:
        """Whether the job works from an earlier image rather than from noise alone."""
        return self is not JobMode.TXT2IMG

    @property
    def sized_by_source(self) -> bool:
        """Whether the image the job works from sets its size (a member's image prompt is fitted to the model)."""
        return self in (JobMode.VARY, JobMode.UPSCALE, JobMode.ZOOM, JobMode.PAN, JobMode.FACES)


PAN_DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
ZOOM_FACTORS: tuple[float, ...] = (1.5, 2.0)
VARY_STRENGTHS: dict[str, float] = {"subtle": 0.35, "strong": 0.7}
# The U button: a clean resize, then a light img2img pass that adds detail without changing the picture.
UPSCALE_FACTOR = 2
UPSCALE_STRENGTH = 0.3
# A1111's hires fix on txt2img: drawn at the base size, upscaled, then redrawn at this strength (A1111's default)
# over the job's steps unless hires steps are given.
HIRES_SCALES: tuple[float, ...] = (1.5, 2.0)
DEFAULT_HIRES_STRENGTH = 0.5
MIN_HIRES_STRENGTH, MAX_HIRES_STRENGTH = 0.05, 1.0
# The upscalers every engine has, as A1111 names them: "Latent" upscales the latents bilinearly (hires fix only),
# "Lanczos" resizes the decoded image. Any other name is a model in SDBOT_UPSCALERS_DIR.
LATENT, LANCZOS = "Latent", "Lanczos"
HIRES_UPSCALERS: tuple[str, ...] = (LATENT, LANCZOS)
DEFAULT_HIRES_UPSCALER = LATENT
MAX_UPSCALER_NAME = 100  # what Discord shows of a choice
TRAIN_TIMESTEPS = 1000  # every Stable Diffusion family's noise schedule
# What `hires:` offers in /imagine and /settings; "off" overrides a member's own hires fix.
HIRES_CHOICES: dict[str, float] = {"1.5×": 1.5, "2×": 2.0, "off": 0.0}
# An image prompt (/imagine with an attachment) redraws this much of it unless the member says otherwise,
# A1111's img2img default.
DEFAULT_IMAGE_STRENGTH = 0.75
MIN_IMAGE_STRENGTH, MAX_IMAGE_STRENGTH = 0.05, 1.0
# The face fix (the ADetailer approach) redraws each face's region at the model's native size this much.
FACE_FIX_STRENGTH = 0.4
# Outpainting redraws the new area almost from scratch, keeping only the colours pre-filled from the edge.
OUTPAINT_STRENGTH = 0.95


def half_side(side: int) -> int:
    """Half a side, rounded to the multiple of 8 that latents need."""
    return max(8, round(side / 2 / 8) * 8)


def fit_aspect(source: tuple[int, int], area: int, box: tuple[int, int]) -> tuple[int, int]:
    """The size with `source`'s aspect and about `area` pixels, within `box`, in multiples of 8 (at least 64)."""
    width, height = source
    scale = min(math.sqrt(area / (width * height)), box[0] / width, box[1] / height)

    def side(value: float, limit: int) -> int:
        rounded = max(MIN_SIZE, round(value * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE)
        return min(rounded, limit - limit % SIZE_MULTIPLE)

    return side(width, box[0]), side(height, box[1])


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
    mode: JobMode = JobMode.TXT2IMG
    strength: float = 1.0
    zoom: float = 1.0
    pan: str = ""
    clip_skip: int = 0
    model: str = ""  # the catalog name of the model; "" is the configured default (SDBOT_MODEL)
    # Hires fix (txt2img only): 0 is off, else the scale. `width` and `height` stay the first pass's size, as
    # A1111 keeps them (its infotext's Size); `output_size` is what comes out.
    hires: float = 0.0
    hires_strength: float = DEFAULT_HIRES_STRENGTH
    hires_steps: int = 0  # 0: the job's steps
    hires_upscaler: str = DEFAULT_HIRES_UPSCALER
    upscaler: str = LANCZOS  # the U button's: a model in SDBOT_UPSCALERS_DIR, or Lanczos
    face_fix: bool = False  # after drawing, redraw the faces found (the member's /settings)
    vae: str = ""  # a VAE file's name (in SDBOT_VAE_DIR, or beside the checkpoint); "": the checkpoint's own

    @property
    def needs_source(self) -> bool:
        """Whether the job works from an earlier image rather than from noise alone."""
        return self.mode.needs_source

    @property
    def upscaler_model(self) -> str | None:
        """The upscaler model file the job runs (the U button's, or its hires fix's); None for Latent and Lanczos."""
        if self.mode is JobMode.UPSCALE and self.upscaler != LANCZOS:
            return self.upscaler
        if self.hires and self.hires_upscaler not in HIRES_UPSCALERS:
            return self.hires_upscaler
        return None

    def seeds(self) -> tuple[int, ...]:
        """The seed of each image, wrapping at 2³²."""
        return tuple((self.seed + i) % (MAX_SEED + 1) for i in range(self.count))

    @property
    def output_size(self) -> tuple[int, int]:
        """The size of the images the job gives: with hires fix, the base size scaled as A1111 does (truncated),
        down to the multiple of 8 latents need."""
        if not self.hires:
            return self.width, self.height
        return (
            int(self.width * self.hires) // SIZE_MULTIPLE * SIZE_MULTIPLE,
            int(self.height * self.hires) // SIZE_MULTIPLE * SIZE_MULTIPLE,
        )

    @property
    def second_pass_steps(self) -> int:
        """The steps hires fix's second pass runs (0 without hires fix)."""
        return (self.hires_steps or self.steps) if self.hires else 0

    @property
    def pixels(self) -> int:
        """Pixels drawn at once (at the output size): every image of the job shares one denoising batch."""
        width, height = self.output_size
        return width * height * self.count

    def rerolled(self, seed: int) -> GenerationParams:
        """The same job, or the same pass over the same source image, from another seed."""
        return replace(self, seed=seed)

    def _from_source(
        self, mode: JobMode, size: tuple[int, int], strength: float, seed: int, zoom: float = 1.0, pan: str = ""
    ) -> GenerationParams:
        """One image drawn over a source image; img2img runs steps × strength steps, so keep at least one."""
        width, height = size
        steps = max(self.steps, math.ceil(1 / strength))
        return replace(
            self,
            mode=mode,
            width=width,
            height=height,
            strength=strength,
            seed=seed,
            count=1,
            steps=steps,
            zoom=zoom,
            pan=pan,
            hires=0.0,
        )

    def variation(self, source: tuple[int, int], strength: str, seed: int) -> GenerationParams:
        """img2img from one image with the same prompt: `subtle` keeps the composition, `strong` less so."""
        return self._from_source(JobMode.VARY, source, VARY_STRENGTHS[strength], seed)

    def upscaled(self, source: tuple[int, int], seed: int, upscaler: str = LANCZOS) -> GenerationParams:
        """One image at twice its size (enlarged by `upscaler`), redrawn lightly for detail."""
        size = (source[0] * UPSCALE_FACTOR, source[1] * UPSCALE_FACTOR)
        return replace(self._from_source(JobMode.UPSCALE, size, UPSCALE_STRENGTH, seed), upscaler=upscaler)

    def faces_fixed(self, source: tuple[int, int], seed: int) -> GenerationParams:
        """The image with each face found redrawn at the model's native size, from the image's own seed."""
        return replace(self._from_source(JobMode.FACES, source, FACE_FIX_STRENGTH, seed), face_fix=False)

    def zoomed_out(self, source: tuple[int, int], factor: float, seed: int) -> GenerationParams:
        """The image shrunk into the centre of a canvas of its own size; the border is drawn new."""
        return self._from_source(JobMode.ZOOM, source, OUTPAINT_STRENGTH, seed, zoom=factor)

    def panned(self, source: tuple[int, int], direction: str, seed: int) -> GenerationParams:
        """The canvas extended by half the image towards `direction`; the new strip is drawn."""
        width, height = source
        size = (
            (width + half_side(width), height)
            if direction in ("left", "right")
            else (width, height + half_side(height))
        )
        return self._from_source(JobMode.PAN, size, OUTPAINT_STRENGTH, seed, pan=direction)

    def validate(self) -> GenerationParams:
        """Return self, or raise InvalidParams with a sentence saying what to change."""
        if not self.prompt.strip():
            raise InvalidParams("The prompt is empty: describe what you want to see.")
        for name, text in (("prompt", self.prompt), ("negative prompt", self.negative_prompt)):
            if len(text) > MAX_PROMPT_CHARS:
                raise InvalidParams(
                    f"The {name} is {len(text)} characters long: shorten it to {MAX_PROMPT_CHARS} or fewer."
                )
        if self.needs_source and max(self.width, self.height) > MAX_DERIVED_SIZE:
            raise InvalidParams(
                f"That would make a {self.width}×{self.height} image, more than {MAX_DERIVED_SIZE} pixels a side:"
                " work from a smaller image instead."
            )
        largest = MAX_DERIVED_SIZE if self.needs_source else MAX_SIZE
        for name, value in (("width", self.width), ("height", self.height)):
            if not MIN_SIZE <= value <= largest:
                raise InvalidParams(f"The {name} must be between {MIN_SIZE} and {largest} pixels, not {value}.")
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
        if self.needs_source and not 0.0 < self.strength <= 1.0:
            raise InvalidParams(f"The strength must be above 0 and at most 1, not {self.strength:g}.")
        if self.needs_source and int(self.steps * self.strength) < 1:
            raise InvalidParams(
                f"{self.steps} steps at strength {self.strength:g} redraw nothing: use at least"
                f" {math.ceil(1 / self.strength)} steps."
            )
        if not 0 <= self.clip_skip <= MAX_CLIP_SKIP:
            raise InvalidParams(f"Clip skip must be between 1 and {MAX_CLIP_SKIP}, not {self.clip_skip}.")
        if self.mode is JobMode.ZOOM and self.zoom not in ZOOM_FACTORS:
            raise InvalidParams(f"Zoom out by {' or '.join(f'{z:g}' for z in ZOOM_FACTORS)}, not {self.zoom:g}.")
        if self.mode is JobMode.PAN and self.pan not in PAN_DIRECTIONS:
            raise InvalidParams(f"Pan {', '.join(PAN_DIRECTIONS)}, not {self.pan!r}.")
        if self.hires:
            self._validate_hires()
        return self

    def _validate_hires(self) -> None:
        if self.hires not in HIRES_SCALES:
            raise InvalidParams(
                f"Hires fix scales by {' or '.join(f'{h:g}' for h in HIRES_SCALES)}, not {self.hires:g}."
            )
        if self.needs_source:
            raise InvalidParams("Hires fix applies to drawing from a prompt: leave it out with an image.")
        if not MIN_HIRES_STRENGTH <= self.hires_strength <= MAX_HIRES_STRENGTH:
            raise InvalidParams(
                f"Hires denoising must be from {MIN_HIRES_STRENGTH:g} to {MAX_HIRES_STRENGTH:g},"
                f" not {self.hires_strength:g}."
            )
        if not 0 <= self.hires_steps <= MAX_STEPS:
            raise InvalidParams(f"Hires steps must be from 1 to {MAX_STEPS} (0 for the job's), not {self.hires_steps}.")
        if not self.hires_upscaler.strip() or len(self.hires_upscaler) > MAX_UPSCALER_NAME:
            raise InvalidParams(f"Name a hires upscaler: {', '.join(HIRES_UPSCALERS)} or an installed model.")
        if math.ceil(self.second_pass_steps / self.hires_strength) > TRAIN_TIMESTEPS:
            # The pass runs its steps out of steps ÷ strength scheduler steps, which cannot pass the model's 1,000.
            raise InvalidParams(
                f"{self.second_pass_steps} hires steps at denoising {self.hires_strength:g} are more than the model's"
                f" {TRAIN_TIMESTEPS} timesteps hold: use fewer hires steps or a higher hires denoising."
            )
        width, height = self.output_size
        if max(width, height) > MAX_DERIVED_SIZE:
            raise InvalidParams(
                f"Hires fix would make a {width}×{height} image, more than {MAX_DERIVED_SIZE} pixels a side:"
                " lower the width and height, or the hires scale."
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, for SQLite and the engine wire (the mode is a str enum: JSON writes its value)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationParams:
        """Inverse of to_dict; unknown keys (from a newer version) are ignored, an unknown mode is refused."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "mode" in values:
            try:
                values["mode"] = JobMode(values["mode"])
            except ValueError:
                raise InvalidParams(f"Unknown job mode {str(values['mode'])[:50]!r}.") from None
        return cls(**values)
