"""Tiny ONNX networks built in code: a YOLOv8-shaped face detector whose scores follow the input, a YuNet-shaped one,
and networks with other models' output shapes.

The YOLO graph has a real export's input and output ("images" [1, 3, S, S] → "output0" [1, 4 + 1, anchors]), but
its anchors are fixed boxes given by the test, each scored by how bright the input is inside it: a white patch
where a box sits lights that box, so a test places a face by painting the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SIDE = 64
OPSET = 13
# A box's score is sigmoid(SHARPNESS * (its mean brightness − LIT)): about 1 on white, under 0.05 on the letterbox's
# gray (114/255) and on black, and between the two on mid tones.
SHARPNESS = 20.0
LIT = 0.6

Box = tuple[float, float, float, float]  # left, top, right, bottom in input pixels


def anchor_count(side: int) -> int:
    """A real export's anchors: one per cell of its grids at strides 8, 16 and 32 (8400 at 640, 84 at 64)."""
    return sum((side // stride) ** 2 for stride in (8, 16, 32))


def _weights(anchors: Sequence[Box], side: int) -> np.ndarray:
    """[side², anchors]: each column averages the input's pixels inside its box (cut to the input)."""
    weights = np.zeros((side, side, len(anchors)), dtype=np.float32)
    for column, (left, top, right, bottom) in enumerate(anchors):
        x0, y0 = max(0, round(left)), max(0, round(top))
        x1, y1 = min(side, round(right)), min(side, round(bottom))
        if x1 > x0 and y1 > y0:
            weights[y0:y1, x0:x1, column] = 1 / ((x1 - x0) * (y1 - y0))
    return weights.reshape(side * side, len(anchors))


def save_tiny_yolo(path: Path, anchors: Sequence[Box], *, transposed: bool = False, side: int = SIDE) -> Path:
    """A YOLOv8 face detector (one class) with these anchor boxes; `transposed`: output [1, anchors, 5]."""
    # The test's boxes, then blind anchors (no box, a score of about zero) to make up a real export's count.
    anchors = [*anchors, *[(0.0, 0.0, 0.0, 0.0)] * (anchor_count(side) - len(anchors))]
    count = len(anchors)
    corners = np.array(anchors, dtype=np.float32).T  # [4, anchors]: left, top, right, bottom
    centres, sizes = (corners[:2] + corners[2:]) / 2, corners[2:] - corners[:2]
    boxes = np.concatenate([centres, sizes])[np.newaxis]
    constants = {
        "weights": _weights(anchors, side),
        "boxes": boxes,
        "sharpness": np.array(SHARPNESS, dtype=np.float32),
        "offset": np.array(-SHARPNESS * LIT, dtype=np.float32),
        "flat": np.array([1, side * side], dtype=np.int64),
        "row": np.array([1, 1, count], dtype=np.int64),
    }
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["gray"], axes=[1], keepdims=1),
        helper.make_node("Reshape", ["gray", "flat"], ["pixels"]),
        helper.make_node("MatMul", ["pixels", "weights"], ["means"]),
        helper.make_node("Mul", ["means", "sharpness"], ["scaled"]),
        helper.make_node("Add", ["scaled", "offset"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["probabilities"]),
        helper.make_node("Reshape", ["probabilities", "row"], ["scores"]),
        helper.make_node("Concat", ["boxes", "scores"], ["rows" if transposed else "output0"], axis=1),
    ]
    shape = [1, 5, count]
    if transposed:
        nodes.append(helper.make_node("Transpose", ["rows"], ["output0"], perm=[0, 2, 1]))
        shape = [1, count, 5]
    graph = helper.make_graph(
        nodes,
        "tiny_yolo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, side, side])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, shape)],
        initializer=[numpy_helper.from_array(value, name) for name, value in constants.items()],
    )
    return _save(graph, path)


def save_fixed_outputs(path: Path, outputs: Sequence[np.ndarray], side: int = SIDE) -> Path:
    """A network over a YOLO-style input whose outputs are these arrays, whatever the input: other models' shapes."""
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], axes=[1, 2, 3], keepdims=1),  # not 0: OpenCV crashes
        helper.make_node("Mul", ["mean", "nothing"], ["zero"]),
    ]
    constants = {"nothing": np.array(0, dtype=np.float32)}
    for i, value in enumerate(outputs):
        nodes += [
            helper.make_node("Reshape", ["zero", f"ones{i}"], [f"zero{i}"]),  # [1, 1, 1, 1] to the output's rank
            helper.make_node("Add", [f"zero{i}", f"value{i}"], [f"output{i}"]),
        ]
        constants |= {f"ones{i}": np.ones(value.ndim, dtype=np.int64), f"value{i}": value.astype(np.float32)}
    graph = helper.make_graph(
        nodes,
        "fixed_outputs",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, side, side])],
        [
            helper.make_tensor_value_info(f"output{i}", TensorProto.FLOAT, list(value.shape))
            for i, value in enumerate(outputs)
        ],
        initializer=[numpy_helper.from_array(value, name) for name, value in constants.items()],
    )
    return _save(graph, path)


def save_tiny_yunet(path: Path) -> Path:
    """A network with YuNet's inputs and outputs that OpenCV's FaceDetectorYN runs at any size.

    Every cell of each stride's grid scores the input's mean brightness there, for both its class and its object
    score, and has a box of the stride's own size: a white image is faces everywhere, a black one none.
    """
    nodes = []
    for stride in (8, 16, 32):
        lit, zero = f"lit_{stride}", f"zero_{stride}"
        nodes += [
            helper.make_node(
                "AveragePool", ["input"], [f"pooled_{stride}"], kernel_shape=[stride] * 2, strides=[stride] * 2
            ),
            helper.make_node("ReduceMean", [f"pooled_{stride}"], [f"mean_{stride}"], axes=[1], keepdims=1),
            helper.make_node("Mul", [f"mean_{stride}", "per_level"], [lit]),
            helper.make_node("Mul", [lit, "nothing"], [zero]),
        ]
        for output, source, count in (("cls", lit, 1), ("obj", lit, 1), ("bbox", zero, 4), ("kps", zero, 10)):
            name = f"{output}_{stride}"
            nodes += [
                helper.make_node("Concat", [source] * count, [f"{name}_maps"], axis=1),
                helper.make_node("Transpose", [f"{name}_maps"], [f"{name}_cells"], perm=[0, 2, 3, 1]),
                helper.make_node("Reshape", [f"{name}_cells", f"rows_of_{count}"], [name]),
            ]
    constants: dict[str, np.ndarray] = {
        "per_level": np.array(1 / 255, dtype=np.float32),  # FaceDetectorYN feeds 0..255
        "nothing": np.array(0, dtype=np.float32),
        **{f"rows_of_{count}": np.array([1, -1, count], dtype=np.int64) for count in (1, 4, 10)},
    }
    outputs = [
        helper.make_tensor_value_info(f"{output}_{stride}", TensorProto.FLOAT, [1, None, count])
        for output, count in (("cls", 1), ("obj", 1), ("bbox", 4), ("kps", 10))
        for stride in (8, 16, 32)
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_yunet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "height", "width"])],
        outputs,
        initializer=[numpy_helper.from_array(value, name) for name, value in constants.items()],
    )
    return _save(graph, path)


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path
