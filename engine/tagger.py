"""/describe's other kind of model: a WD14 tagger (SmilingWolf's wd-*-tagger ONNX models) scores an image's tags.

The folder holds `model.onnx` and `selected_tags.csv`, as the Hugging Face repositories ship them; onnxruntime runs
the model. The image is prepared as SmilingWolf's wd-tagger Space prepares it: padded to a square on white, resized
bicubic to the model's side, BGR float pixels in 0..255, NHWC; the model's one output is already sigmoid scores.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image

from core.errors import first_line

MODEL_FILE = "model.onnx"
TAGS_FILE = "selected_tags.csv"
WHITE = (255, 255, 255)
# The tagger Space's and ComfyUI-WD14-Tagger's default for characters: a wrongly named character redraws the picture
# as someone else, so only sure ones go in, and in every prompt.
CHARACTER_THRESHOLD = 0.85
# A tagger gives one set of scores, so the prompts differ by how unsure a general tag may be: 0.5 keeps the tags the
# model is sure of, 0.35 is the taggers' own default, 0.25 and 0.15 add detail that is often right and costs a stray
# tag when not; below 0.15 the extra tags are mostly noise.
GENERAL_THRESHOLDS = (0.5, 0.35, 0.25, 0.15)
# Faces whose underscore is the mouth (the tagger Space's list): the underscore is the tag, not a space.
KAOMOJIS = frozenset(
    {
        "0_0",
        "(o)_(o)",
        "+_+",
        "+_-",
        "._.",
        "<o>_<o>",
        "<|>_<|>",
        "=_=",
        ">_<",
        "3_3",
        "6_9",
        ">_o",
        "@_@",
        "^_^",
        "o_o",
        "u_u",
        "x_x",
        "|_|",
        "||_||",
    }
)
# Brackets the prompt parser reads as emphasis, and its escape character: `star_(symbol)` must stay text.
_ESCAPED = str.maketrans({char: "\\" + char for char in "\\()[]"})


class Category(IntEnum):
    """selected_tags.csv's category column (Danbooru's tag categories; WD14 taggers use these three)."""

    GENERAL = 0
    CHARACTER = 4
    RATING = 9


class TaggerError(ValueError):
    """The folder holds no tagger onnxruntime can run; the message is why, in one line."""


def prompt_tag(name: str) -> str:
    """A tag as prompt text: underscores as spaces (a kaomoji's kept), brackets and backslashes escaped."""
    text = name if name in KAOMOJIS else name.replace("_", " ")
    return text.translate(_ESCAPED)


def is_tagger_folder(folder: Path) -> bool:
    """Whether the folder holds either of a tagger's files (load_tagger then names the one missing)."""
    return any((folder / name).is_file() for name in (MODEL_FILE, TAGS_FILE))


@dataclass(frozen=True)
class Tagger:
    """A loaded WD14 tagger: its onnxruntime session and its tags, one per score."""

    session: Any  # an onnxruntime.InferenceSession
    input_name: str
    size: tuple[int, int]  # the model's input (width, height)
    tags: tuple[str, ...]  # as prompt text
    categories: tuple[int, ...]
    max_chars: int

    def scores(self, image: Image.Image) -> np.ndarray:
        """One probability per tag for an RGB image."""
        side = max(image.size)
        square = Image.new("RGB", (side, side), WHITE)
        square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
        if square.size != self.size:
            square = square.resize(self.size, Image.Resampling.BICUBIC)
        bgr = np.asarray(square, dtype=np.float32)[:, :, ::-1]
        (scores,) = self.session.run(None, {self.input_name: np.ascontiguousarray(bgr[np.newaxis])})
        if scores.shape != (1, len(self.tags)):
            raise TaggerError(f"{MODEL_FILE} gave scores shaped {list(scores.shape)} for {len(self.tags)} tags")
        return scores[0]

    def describe(self, image: Image.Image, count: int) -> list[str]:
        """Up to `count` distinct prompts for an RGB image, the surest first: sure characters, then the general tags
        above each of GENERAL_THRESHOLDS, most likely first; fewer (even none) when the thresholds give no more."""
        scores = self.scores(image)
        order = np.argsort(-scores, kind="stable")  # most likely first; ties in the csv's order, so deterministic
        categories = np.asarray(self.categories)[order]
        ranked = scores[order]
        characters = order[(categories == Category.CHARACTER) & (ranked > CHARACTER_THRESHOLD)]
        prompts: list[str] = []
        for threshold in GENERAL_THRESHOLDS:
            general = order[(categories == Category.GENERAL) & (ranked > threshold)]
            prompt = self._joined([*characters, *general])
            if prompt and prompt not in prompts:
                prompts.append(prompt)
        return prompts[:count]

    def _joined(self, indices: Sequence[int]) -> str:
        # Cut at a tag, not inside one: half a tag is another word.
        prompt = ""
        for index in indices:
            longer = f"{prompt}, {self.tags[index]}" if prompt else self.tags[index]
            if len(longer) > self.max_chars:
                break
            prompt = longer
        return prompt


def load_tagger(folder: Path, *, gpu: int | None, threads: int, max_chars: int) -> Tagger:
    """Load a tagger folder on the CPU, or on CUDA GPU `gpu` first where onnxruntime offers CUDA; TaggerError with
    the reason otherwise. `threads` bounds the CPU threads, `max_chars` each prompt."""
    for name in (MODEL_FILE, TAGS_FILE):
        if not (folder / name).is_file():
            raise TaggerError(f"it has no {name}")
    tags, categories = _read_tags(folder / TAGS_FILE)
    session = _session(folder / MODEL_FILE, gpu, threads)
    inputs, outputs = session.get_inputs(), session.get_outputs()
    size = _pixel_size(inputs[0]) if len(inputs) == 1 else None
    if size is None:
        taken = ", ".join(f"{node.type} {node.shape}" for node in inputs)
        raise TaggerError(f"{MODEL_FILE} takes {taken}, not one [batch, height, width, 3] float image")
    shape = outputs[0].shape
    if len(shape) != 2:
        raise TaggerError(f"{MODEL_FILE} gives {shape}, not [batch, tags] scores")
    if isinstance(shape[1], int) and shape[1] != len(tags):
        raise TaggerError(f"{TAGS_FILE} lists {len(tags)} tags but {MODEL_FILE} gives {shape[1]} scores")
    return Tagger(session, inputs[0].name, size, tags, categories, max_chars)


def _read_tags(path: Path) -> tuple[tuple[str, ...], tuple[int, ...]]:
    try:
        with path.open(encoding="utf-8", newline="") as file:
            reader = csv.DictReader(file)
            if not {"name", "category"} <= set(reader.fieldnames or ()):
                raise TaggerError(f"{TAGS_FILE} has no name and category columns")
            rows = [(reader.line_num, row["name"], row["category"]) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TaggerError(f"{TAGS_FILE} cannot be read ({first_line(exc)})") from exc
    if not rows:
        raise TaggerError(f"{TAGS_FILE} lists no tags")
    tags, categories = [], []
    for line, name, category in rows:
        # A short row leaves its missing columns None.
        if not name or category is None or not category.strip().isdigit():
            raise TaggerError(f"{TAGS_FILE} line {line} is not a tag with a numeric category")
        tags.append(prompt_tag(name))
        categories.append(int(category))
    return tuple(tags), tuple(categories)


def _session(path: Path, gpu: int | None, threads: int) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: the caller's stderr is one line for the bot's log
    providers: list[Any] = ["CPUExecutionProvider"]
    if gpu is not None and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": gpu}))
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises a class of its own for each way a file is bad
        raise TaggerError(f"onnxruntime {ort.__version__} cannot load {MODEL_FILE} ({first_line(exc)})") from exc


def _pixel_size(node: Any) -> tuple[int, int] | None:
    """The (width, height) of a [batch, height, width, 3] float input, or None for any other input."""
    shape = node.shape
    if node.type != "tensor(float)" or len(shape) != 4 or shape[3] != 3:
        return None
    height, width = shape[1], shape[2]
    if not (isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0):
        return None
    return width, height
