"""The face fix with a YOLOv8 face detector exported to ONNX, run by OpenCV's dnn on real tiny ONNX files.

The tiny detector's input is 64×64 and its anchors are fixed boxes scored by the input's brightness inside them,
so a white patch painted where a box lands after the letterbox lights that box (tests/support/tiny_yolo.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.face_fix import Face, FaceDetector, FaceDetectorError, fix_faces
from tests.support.tiny_yolo import Box, anchor_count, save_fixed_outputs, save_tiny_yolo, save_tiny_yunet

GREEN = (0, 255, 0)
WHITE = 255


def _detector(tmp_path: Path, anchors: list[Box], transposed: bool = False) -> FaceDetector:
    return FaceDetector(save_tiny_yolo(tmp_path / "face_yolov8n.onnx", anchors, transposed=transposed))


def _painted(size: tuple[int, int], patches: list[tuple[int, int, int, int]], level: int = WHITE) -> Image.Image:
    """A black image of `size` with each patch (left, top, right, bottom) filled at `level`."""
    pixels = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    for left, top, right, bottom in patches:
        pixels[top:bottom, left:right] = level
    return Image.fromarray(pixels)


@pytest.mark.parametrize("transposed", [False, True], ids=["rows of anchors", "anchors of rows"])
@pytest.mark.parametrize(
    ("size", "face"),
    [
        # 96×64 scales by 2/3 to 64×43, padded 10 above: input (22, 22)-(42, 42) is x 22·1.5, y (22 - 10)·1.5.
        ((96, 64), Face(33, 18, 30, 30)),
        # 64×128 scales by 1/2 to 32×64, padded 16 at the left: x (22 - 16)·2, y 22·2.
        ((64, 128), Face(12, 44, 40, 40)),
    ],
)
def test_the_letterbox_is_undone(tmp_path: Path, size: tuple[int, int], face: Face, transposed: bool) -> None:
    # The second box lies where the first is on neither image: it stays dark.
    detector = _detector(tmp_path, [(22, 22, 42, 42), (2, 2, 22, 22)], transposed)
    image = _painted(size, [(face.x, face.y, face.x + face.width, face.y + face.height)])

    assert detector.detect(image) == [face]


@pytest.mark.parametrize("transposed", [False, True], ids=["rows of anchors", "anchors of rows"])
def test_overlapping_boxes_are_one_face_the_best_scored(tmp_path: Path, transposed: bool) -> None:
    # At 128×128 the input is the image at half size. The first box is the second moved 4 pixels right: they overlap
    # by 2/3 (IoU), and a fifth of it dark, it scores a little lower. The third is a face of its own.
    detector = _detector(tmp_path, [(24, 20, 44, 40), (20, 20, 40, 40), (44, 44, 60, 60)], transposed)
    image = _painted((128, 128), [(40, 40, 80, 80), (88, 88, 120, 120)])

    assert detector.detect(image) == [Face(40, 40, 40, 40), Face(88, 88, 32, 32)]


@pytest.mark.parametrize(("level", "found"), [(136, False), (150, True)])
def test_weak_scores_are_left_out(tmp_path: Path, level: int, found: bool) -> None:
    # The box's score is about 0.21 over gray 136 and 0.44 over gray 150: either side of the 0.3 confidence.
    detector = _detector(tmp_path, [(20, 20, 44, 44)])
    image = _painted((128, 128), [(40, 40, 88, 88)], level)

    assert detector.detect(image) == ([Face(40, 40, 48, 48)] if found else [])


def test_boxes_past_the_edges_are_cut_to_the_image(tmp_path: Path) -> None:
    # Input (-10, 20)-(14, 44) is image (-20, 40)-(28, 88); input (50, 50)-(74, 74) is image (100, 100)-(148, 148).
    detector = _detector(tmp_path, [(-10, 20, 14, 44), (50, 50, 74, 74)])
    image = _painted((128, 128), [(0, 40, 28, 88), (100, 100, 128, 128)])

    assert detector.detect(image) == [Face(0, 40, 28, 48), Face(100, 100, 28, 28)]


def test_boxes_smaller_than_the_smallest_face_are_left_out(tmp_path: Path) -> None:
    # 20 image pixels, under the 24 that the face fix redraws at the least.
    detector = _detector(tmp_path, [(20, 20, 30, 30)])

    assert detector.detect(_painted((128, 128), [(40, 40, 60, 60)])) == []


@pytest.mark.parametrize("transposed", [False, True], ids=["rows of anchors", "anchors of rows"])
@pytest.mark.parametrize("size", [(96, 64), (64, 128), (128, 128)])
def test_no_face_in_a_dark_image(tmp_path: Path, size: tuple[int, int], transposed: bool) -> None:
    # Boxes over the image and over the letterbox's gray bands alike stay under the confidence.
    detector = _detector(tmp_path, [(0, 0, 64, 10), (0, 54, 64, 64), (0, 0, 10, 64), (54, 0, 64, 64)], transposed)

    assert detector.detect(_painted(size, [])) == []


def test_the_network_not_the_name_says_which_detector_runs(tmp_path: Path) -> None:
    yolo = FaceDetector(save_tiny_yolo(tmp_path / "face_detection_yunet_2023mar.onnx", [(8, 8, 56, 56)]))
    yunet = FaceDetector(save_tiny_yunet(tmp_path / "face_yolov8n.onnx"))
    white = Image.new("RGB", (64, 64), (WHITE,) * 3)

    assert yolo.detect(white) == [Face(8, 8, 48, 48)]
    # YuNet's boxes are its grid's cells; the stride-32 ones are the only ones as large as the smallest face.
    assert yunet.detect(white) == [Face(16, 16, 32, 32)]
    assert yunet.detect(Image.new("RGB", (64, 64))) == []


@pytest.mark.parametrize(
    "outputs",
    [
        pytest.param([np.zeros((1, 3, 64, 64))], id="an image"),
        pytest.param([np.zeros((1, 300, 6))], id="an end-to-end export with its own NMS"),
        pytest.param([np.zeros((1, 5, 100))], id="anchors that are not the input's grid"),
        pytest.param([np.full((1, 20, anchor_count(64)), 2.0)], id="a pose model's keypoints"),
        pytest.param([np.zeros((1, 37, anchor_count(64))), np.zeros((1, 32, 16, 16))], id="a segmentation model"),
    ],
)
def test_other_networks_are_refused_in_one_line(tmp_path: Path, outputs: list[np.ndarray]) -> None:
    path = save_fixed_outputs(tmp_path / "model.onnx", outputs)

    with pytest.raises(FaceDetectorError) as raised:
        FaceDetector(path)

    assert str(raised.value) == f"The face detector model {path} is neither a YuNet nor a YOLO face detector (.onnx)."


def test_an_ultralytics_pt_file_is_refused_with_the_export_command(tmp_path: Path) -> None:
    path = tmp_path / "face_yolov8n.pt"
    path.write_bytes(b"PK\x03\x04 a pickled Ultralytics model")

    with pytest.raises(FaceDetectorError) as raised:
        FaceDetector(path)

    message = str(raised.value)
    assert f"yolo export model={path} format=onnx" in message and "\n" not in message


def test_fix_faces_redraws_only_around_the_face_yolo_found(tmp_path: Path) -> None:
    # 128×96 scales by 1/2 to 64×48, padded 8 above: input (24, 24)-(44, 44) is image (48, 32)-(88, 72).
    detector = _detector(tmp_path, [(24, 24, 44, 44), (4, 40, 20, 56)])  # the second over the dim band: no face
    image = _painted((128, 96), [(48, 32, 88, 72)])
    image.paste((90, 60, 30), (0, 80, 128, 96))  # a dim band of colour away from the face, which must stay

    (face,) = detector.detect(image)
    fixed = fix_faces(image, [face], lambda crop, mask: Image.new("RGB", crop.size, GREEN), native=64)

    assert face == Face(48, 32, 40, 40)
    before, after = np.asarray(image), np.asarray(fixed)
    assert tuple(after[52, 68]) == GREEN
    ys, xs = np.mgrid[: image.height, : image.width]
    far = np.hypot(xs - 68, ys - 52) > 0.9 * 40
    assert np.array_equal(after[far], before[far])
    assert np.any(after[~far] != before[~far], axis=-1).mean() > 0.3
