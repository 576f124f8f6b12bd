"""A tiny WD14-style tagger, built in code as an ONNX graph and saved as SDBOT_DESCRIBE_MODEL expects one.

The layout follows SmilingWolf/wd-vit-tagger-v3: `model.onnx` takes [batch, side, side, 3] BGR pixels in 0..255 and
gives one sigmoid score per row of `selected_tags.csv` (tag_id,name,category,count). In place of a vision transformer
each score is the sigmoid of the image's mean colour times the tag's weights plus its bias, so a test can work out
which tags a colour earns.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from engine.tagger import Category

SIDE = 32
# onnxruntime 1.17, the oldest pyproject allows, reads IR 9 and opset 17 (ReduceMean's axes still an attribute).
IR_VERSION = 9
OPSET = 17


def logit(probability: float) -> float:
    """The bias that gives a tag this score whatever the pixels."""
    return math.log(probability / (1 - probability))


@dataclass(frozen=True)
class TinyTag:
    """A row of selected_tags.csv and how its score follows the mean colour."""

    name: str
    category: Category
    bgr: tuple[float, float, float] = (0.0, 0.0, 0.0)  # a weight per mean channel (0..255), in the model's BGR order
    bias: float = 0.0


# Saturated channels give sigmoid(0.04 * 255 - 5) ≈ 0.994 (past every threshold), empty ones sigmoid(-5) ≈ 0.007.
_ON = 0.04
_OFF = -5.0
TAGS = (
    TinyTag("explicit", Category.RATING, bias=logit(0.99)),  # sure enough for any threshold, yet never in a prompt
    TinyTag("red_theme", Category.GENERAL, bgr=(0.0, 0.0, _ON), bias=_OFF),
    TinyTag("blue_theme", Category.GENERAL, bgr=(_ON, 0.0, 0.0), bias=_OFF),
    # Red and blue have no green; the white of padding has.
    TinyTag("white_background", Category.GENERAL, bgr=(0.0, _ON, 0.0), bias=_OFF),
    TinyTag("1girl", Category.GENERAL, bias=logit(0.6)),
    TinyTag("^_^", Category.GENERAL, bias=logit(0.4)),
    TinyTag("star_(symbol)", Category.GENERAL, bgr=(0.0, 0.0, (logit(0.3) - _OFF) / 255), bias=_OFF),  # 0.3 on red
    TinyTag("(o)_(o)", Category.GENERAL, bias=logit(0.2)),
    TinyTag("hatsune_miku", Category.CHARACTER, bgr=(_ON, 0.0, 0.0), bias=_OFF),
)


def tiny_scores(tags: Sequence[TinyTag], mean_bgr: np.ndarray) -> np.ndarray:
    """What the tiny model scores for an image whose mean BGR pixel is `mean_bgr`."""
    weights = np.array([tag.bgr for tag in tags], dtype=np.float64).T
    biases = np.array([tag.bias for tag in tags], dtype=np.float64)
    return 1 / (1 + np.exp(-(mean_bgr @ weights + biases)))


def save_tiny_tagger(folder: Path, tags: Sequence[TinyTag] = TAGS, *, channels_last: bool = True) -> Path:
    """Write `model.onnx` and `selected_tags.csv` for `tags` into `folder`; `channels_last=False` takes NCHW pixels,
    as no WD14 tagger does."""
    folder.mkdir(parents=True, exist_ok=True)
    pixels: list[str | int] = ["batch", SIDE, SIDE, 3] if channels_last else ["batch", 3, SIDE, SIDE]
    weights = np.array([tag.bgr for tag in tags], dtype=np.float32).T
    biases = np.array([tag.bias for tag in tags], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input"], ["mean"], axes=[1, 2] if channels_last else [2, 3], keepdims=0),
            helper.make_node("MatMul", ["mean", "weights"], ["logits"]),
            helper.make_node("Add", ["logits", "biases"], ["shifted"]),
            helper.make_node("Sigmoid", ["shifted"], ["output"]),
        ],
        "tiny_tagger",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, pixels)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", len(tags)])],
        initializer=[numpy_helper.from_array(weights, "weights"), numpy_helper.from_array(biases, "biases")],
    )
    model = helper.make_model(graph, ir_version=IR_VERSION, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, folder / "model.onnx")
    with (folder / "selected_tags.csv").open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["tag_id", "name", "category", "count"])
        writer.writerows([index, tag.name, int(tag.category), 1000 - index] for index, tag in enumerate(tags))
    return folder
