"""/describe's captioner: the owner's model (SDBOT_DESCRIBE_MODEL) turns an image into prompts.

The folder holds either a BLIP captioning model (transformers), which writes captions, or a WD14 tagger (`model.onnx`
and `selected_tags.csv`, run by engine.tagger), whose tags above a threshold make a prompt.

Run by the bot as a short-lived child per request, so the model takes memory only while it is used:
`python -m engine.describe --model FOLDER [--device cpu|cuda|cuda:N] [--count 4]`, the image's bytes on stdin.
It prints `{"prompts": [...]}` on stdout and exits 0, or prints one line on stderr and exits 2 (the model or the
device cannot be used), 3 (stdin is not an image) or 1 (describing failed).
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime
import torch
from PIL import Image

from core.errors import first_line
from engine.tagger import Tagger, TaggerError, is_tagger_folder, load_tagger

SETTING = "SDBOT_DESCRIBE_MODEL"
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_PROMPT_CHARS = 1000
MAX_COUNT = 10
# BLIP's own captioning settings: at least 5 tokens; a caption is a sentence, far under 40 tokens.
MIN_NEW_TOKENS = 5
MAX_NEW_TOKENS = 40
# Beams are returned best first; twice as many as wanted leaves spares for captions that clean up alike.
SPARE_FACTOR = 2
SAMPLING_ROUNDS = 3
SAMPLING_SEED = 0
# A caption or a tagging is a second's work: leave the machine's cores to the engine generating images beside it.
CPU_THREADS = 4

EXIT_FAILED, EXIT_MODEL, EXIT_IMAGE = 1, 2, 3

# BLIP-large's "arafed", "araffe", … are artefacts of its training captions with no meaning; "there is a dog"
# draws as well as "a dog".
_ARAFED = re.compile(r"\bar+af+\w*", re.IGNORECASE)
_PREAMBLE = re.compile(r"^(?:there (?:is|are)|this is)\s+", re.IGNORECASE)


class DescribeError(ValueError):
    """The model, device or image cannot be used; the message is one line for the operator or member."""


def as_prompt(caption: str) -> str:
    """A caption as a Stable Diffusion prompt: BLIP's filler words dropped, spaces collapsed, at most 1000 chars."""
    text = " ".join(_ARAFED.sub(" ", caption).split())
    return _PREAMBLE.sub("", text)[:MAX_PROMPT_CHARS].strip()


@dataclass(frozen=True)
class Captioner:
    """A loaded BLIP captioning model and its processor, on one device."""

    model: Any  # a BlipForConditionalGeneration
    processor: Any  # its BlipProcessor
    device: torch.device
    dtype: torch.dtype

    def describe(self, image: Image.Image, count: int) -> list[str]:
        """Up to `count` distinct prompts for an RGB image: the best beams first, then seeded samples until there are
        `count`; fewer (even none) only when sampling too runs out of new captions."""
        pixels = self.processor(images=image, return_tensors="pt").pixel_values.to(self.device, self.dtype)
        wanted = SPARE_FACTOR * count
        prompts: dict[str, str] = {}  # casefolded → prompt, in the order found
        with torch.inference_mode():
            self._take(self._generate(pixels, num_beams=wanted, num_return_sequences=wanted), prompts, count)
            for round_ in range(SAMPLING_ROUNDS):
                if len(prompts) >= count:
                    break
                # Seeded, so the same image gets the same prompts; forked, so the caller's random state is untouched.
                with torch.random.fork_rng(devices=self._rng_devices(), device_type=self.device.type):
                    torch.manual_seed(SAMPLING_SEED + round_)
                    samples = self._generate(pixels, do_sample=True, top_p=0.9, num_return_sequences=wanted)
                self._take(samples, prompts, count)
        return list(prompts.values())

    def _generate(self, pixels: torch.Tensor, **how: Any) -> torch.Tensor:
        return self.model.generate(
            pixel_values=pixels,
            min_new_tokens=MIN_NEW_TOKENS,
            max_new_tokens=MAX_NEW_TOKENS,
            # BLIP loops ("a man in a suit and a tie and a tie"): a repeated phrase only wastes prompt tokens.
            no_repeat_ngram_size=3,
            **how,
        )

    def _take(self, sequences: torch.Tensor, prompts: dict[str, str], count: int) -> None:
        # generate returns the decoder's start token ([DEC]) first; it is no part of the caption.
        for caption in self.processor.batch_decode(sequences[:, 1:], skip_special_tokens=True):
            prompt = as_prompt(caption)
            if prompt and len(prompts) < count:
                prompts.setdefault(prompt.casefold(), prompt)

    def _rng_devices(self) -> list[int]:
        if self.device.type != "cuda":
            return []
        return [torch.cuda.current_device() if self.device.index is None else self.device.index]


def load_captioner(folder: Path, device: torch.device) -> Captioner:
    """Load a BLIP captioning folder offline; DescribeError naming the folder and SDBOT_DESCRIBE_MODEL otherwise."""
    # Here, not at the top: transformers' BLIP takes seconds to import, which a tagger's requests need not wait for.
    import transformers
    from transformers import AutoConfig, BlipForConditionalGeneration, BlipProcessor

    # stderr carries one line for the bot's log: no progress bars or load reports.
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    not_blip = f"{SETTING}: {folder} is not a BLIP captioning model folder"
    if not folder.is_dir():
        raise DescribeError(f"{not_blip} (no such folder)")
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
    except Exception as exc:
        raise DescribeError(f"{not_blip} ({first_line(exc)})") from exc
    # Another model's config would load as BLIP with random weights in place of its own, and caption gibberish.
    architectures = getattr(config, "architectures", None) or []
    if config.model_type != "blip" or (architectures and "BlipForConditionalGeneration" not in architectures):
        found = architectures[0] if architectures else config.model_type
        raise DescribeError(f"{not_blip} (it holds a {found}, not a BlipForConditionalGeneration)")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    try:
        # Pickle weights (Salesforce/blip-image-captioning-base has no safetensors) load through transformers'
        # weights-only unpickler, which runs no code.
        model, info = BlipForConditionalGeneration.from_pretrained(
            folder, local_files_only=True, dtype=dtype, output_loading_info=True
        )
        processor = BlipProcessor.from_pretrained(folder, local_files_only=True)
    except Exception as exc:
        raise DescribeError(f"{not_blip} ({first_line(exc)})") from exc
    if info["missing_keys"]:
        missing = sorted(info["missing_keys"])
        raise DescribeError(f"{not_blip} (its weights lack {len(missing)} tensors, such as {missing[0]})")
    return Captioner(model.to(device).eval(), processor, device, dtype)


def load_model(folder: Path, device: torch.device) -> Captioner | Tagger:
    """A tagger where the folder holds a tagger's files, else a BLIP captioning model; DescribeError naming the folder
    and SDBOT_DESCRIBE_MODEL when it cannot be used."""
    if not is_tagger_folder(folder):
        return load_captioner(folder, device)
    gpu = (device.index or 0) if device.type == "cuda" else None
    try:
        # torch's thread count, once main has bounded it to CPU_THREADS.
        return load_tagger(folder, gpu=gpu, threads=torch.get_num_threads(), max_chars=MAX_PROMPT_CHARS)
    except TaggerError as exc:
        raise DescribeError(f"{SETTING}: {folder} is not a WD14 tagger folder ({exc})") from exc


def read_image(data: bytes) -> Image.Image:
    """The bytes as an RGB image, or DescribeError."""
    if len(data) > MAX_IMAGE_BYTES:
        raise DescribeError(f"the image is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MiB")
    try:
        with Image.open(io.BytesIO(data)) as opened:
            return opened.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DescribeError(f"not an image Pillow can read ({first_line(exc)})") from exc


def resolve_device(name: str) -> torch.device:
    """`cpu`, `cuda` or `cuda:N`, where torch sees that GPU; DescribeError otherwise."""
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise DescribeError(f"--device {name}: {first_line(exc)}") from exc
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise DescribeError(f"--device {name}: torch {torch.__version__} sees {torch.cuda.device_count()} CUDA GPUs")
    if device.type not in ("cpu", "cuda"):
        raise DescribeError(f"--device {name}: only cpu and cuda are supported")
    return device


def _count(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_COUNT:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_COUNT}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine.describe", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a BLIP captioning model or WD14 tagger folder")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--count", type=_count, default=4, help=f"how many prompts, 1 to {MAX_COUNT} (default 4)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Describe the image on stdin; see the module's docstring for the exit codes."""
    args = _parser().parse_args(argv)
    onnxruntime.set_default_logger_severity(3)  # errors only: stderr carries one line for the bot's log
    torch.set_num_threads(min(torch.get_num_threads(), CPU_THREADS))
    try:
        image = read_image(sys.stdin.buffer.read(MAX_IMAGE_BYTES + 1))
    except DescribeError as exc:
        print(exc, file=sys.stderr)
        return EXIT_IMAGE
    try:
        model = load_model(args.model, resolve_device(args.device))
    except DescribeError as exc:
        print(exc, file=sys.stderr)
        return EXIT_MODEL
    try:
        prompts = model.describe(image, args.count)
    except Exception as exc:  # an out-of-memory GPU, a broken model: one line for the log, not a traceback
        print(f"describing failed: {first_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps({"prompts": prompts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
