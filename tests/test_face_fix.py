"""The face fix on a real photograph (skimage's astronaut) with OpenCV's real detectors and PIL's real paste."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from engine.face_fix import (
    DEFAULT_MARGIN,
    MIN_MARGIN,
    Face,
    FaceDetector,
    FaceDetectorError,
    face_mask,
    face_regions,
    fix_faces,
)

# Eileen Collins' face in the 512×512 photograph, hairline to chin and cheek to cheek (left, top, right, bottom).
ASTRONAUT_FACE = (170, 60, 265, 170)
GREEN = (0, 255, 0)


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(data.astronaut())


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


def _box(face: Face) -> tuple[int, int, int, int]:
    return face.x, face.y, face.x + face.width, face.y + face.height


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    width = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area - inter)


def _solid(colour: tuple[int, int, int], calls: list[tuple[Image.Image, Image.Image]] | None = None):
    """A redraw that paints the whole crop one colour, recording what it was given."""

    def redraw(crop: Image.Image, mask: Image.Image) -> Image.Image:
        if calls is not None:
            calls.append((crop.copy(), mask.copy()))
        return Image.new("RGB", crop.size, colour)

    return redraw


def test_the_haar_cascade_finds_the_astronauts_face(astronaut: Image.Image, detector: FaceDetector) -> None:
    faces = detector.detect(astronaut)

    assert len(faces) == 1
    assert _iou(_box(faces[0]), ASTRONAUT_FACE) > 0.6


def test_the_eye_check_ignores_the_helmet_highlight(astronaut: Image.Image, detector: FaceDetector) -> None:
    # At twice the size the face cascade alone also fires on the highlight on her helmet.
    faces = detector.detect(astronaut.resize((1024, 1024), Image.Resampling.BICUBIC))

    assert len(faces) == 1
    assert _iou(_box(faces[0]), tuple(2 * v for v in ASTRONAUT_FACE)) > 0.6  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["blank", "noise"])
def test_no_face_in_a_blank_or_noisy_image(detector: FaceDetector, kind: str) -> None:
    if kind == "blank":
        image = Image.new("RGB", (512, 512), (128, 128, 128))
    else:
        image = Image.fromarray(np.random.default_rng(7).integers(0, 256, (512, 512, 3), dtype=np.uint8))

    assert detector.detect(image) == []


def test_fix_faces_changes_only_the_pixels_near_the_face(astronaut: Image.Image, detector: FaceDetector) -> None:
    (face,) = detector.detect(astronaut)
    calls: list[tuple[Image.Image, Image.Image]] = []

    fixed = fix_faces(astronaut, [face], _solid(GREEN, calls), native=512)

    ((crop, mask),) = calls
    assert crop.size == mask.size == (512, 512) and crop.mode == "RGB" and mask.mode == "L"
    before = np.asarray(astronaut, dtype=np.float64)
    after = np.asarray(fixed, dtype=np.float64)
    assert fixed.size == astronaut.size
    centre_x, centre_y = face.x + face.width // 2, face.y + face.height // 2
    assert tuple(after[centre_y, centre_x]) == GREEN
    ys, xs = np.mgrid[: astronaut.height, : astronaut.width]
    far = np.hypot(xs - centre_x, ys - centre_y) > 0.9 * max(face.width, face.height)
    assert np.array_equal(after[far], before[far])
    assert np.any(after[~far] != before[~far], axis=-1).mean() > 0.3

    # How much of the green went into each pixel, along a ray from the face's centre to the crop's edge.
    ray = slice(centre_x, centre_x + max(face.width, face.height))
    towards = np.array(GREEN, dtype=np.float64) - before[centre_y, ray]
    alpha = ((after[centre_y, ray] - before[centre_y, ray]) * towards).sum(-1) / (towards**2).sum(-1)
    assert alpha[0] == pytest.approx(1, abs=0.01) and alpha[-1] == pytest.approx(0, abs=0.01)
    assert np.all(np.diff(alpha) < 0.01)  # it only fades
    assert ((alpha > 0.1) & (alpha < 0.9)).sum() >= 5  # over several pixels: a soft seam, not a cut


@pytest.mark.parametrize("margin", [MIN_MARGIN, DEFAULT_MARGIN])
def test_the_mask_is_a_feathered_patch_inside_the_crop(astronaut: Image.Image, margin: float) -> None:
    face = Face(177, 66, 95, 95)
    (region,) = face_regions(astronaut.size, [face], margin)

    mask = face_mask(region, 512)

    pixels = np.asarray(mask)
    assert mask.mode == "L" and mask.size == (512, 512)
    left, top = region.crop[:2]
    scale = 512 / region.side
    centre = round((face.x + face.width / 2 - left) * scale), round((face.y + face.height / 2 - top) * scale)
    assert pixels[centre[1], centre[0]] == 255
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    assert border.max() == 0  # no seam where the crop meets the rest of the image
    assert ((pixels > 0) & (pixels < 255)).mean() > 0.05


def _field(number: int, value: int | str | bytes) -> bytes:
    """One protobuf field: a varint or a length-delimited payload."""

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(out)

    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    payload = value.encode() if isinstance(value, str) else value
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def _identity_onnx(path: Path) -> Path:
    """A valid ONNX model (one Identity node over a 1×3×64×64 float tensor) that is not a face detector."""

    def tensor(name: str) -> bytes:
        shape = b"".join(_field(1, _field(1, dim)) for dim in (1, 3, 64, 64))
        return _field(1, name) + _field(2, _field(1, _field(1, 1) + _field(2, shape)))

    node = _field(1, "x") + _field(2, "y") + _field(4, "Identity")
    graph = _field(1, node) + _field(2, "g") + _field(11, tensor("x")) + _field(12, tensor("y"))
    path.write_bytes(_field(1, 8) + _field(8, _field(2, 13)) + _field(7, graph))
    return path


@pytest.mark.parametrize("kind", ["missing", "text", "other onnx model"])
def test_a_yunet_path_that_is_not_a_model_is_named(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "face_detection_yunet.onnx"
    if kind == "text":
        path.write_text("not a model\n")
    elif kind == "other onnx model":
        _identity_onnx(path)

    with pytest.raises(FaceDetectorError) as raised:
        FaceDetector(path)

    message = str(raised.value)
    assert str(path) in message and "\n" not in message


def test_a_face_at_the_image_edge(astronaut: Image.Image, detector: FaceDetector) -> None:
    # Cut so her face sits a few pixels from the top-left corner: the square around it must move inside.
    cornered = astronaut.crop((165, 50, 512, 512))
    (face,) = detector.detect(cornered)
    calls: list[tuple[Image.Image, Image.Image]] = []

    (region,) = face_regions(cornered.size, [face], DEFAULT_MARGIN)
    fixed = fix_faces(cornered, [face], _solid(GREEN, calls), native=512)

    left, top, right, bottom = region.crop
    assert (left, top) == (0, 0) and right <= cornered.width and bottom <= cornered.height
    assert right - left == bottom - top == round(DEFAULT_MARGIN * face.width)
    assert fixed.size == cornered.size and calls[0][0].size == (512, 512)
    outside = np.ones((cornered.height, cornered.width), dtype=bool)
    outside[top:bottom, left:right] = False
    assert np.array_equal(np.asarray(fixed)[outside], np.asarray(cornered)[outside])


def test_a_crop_wider_than_the_image_is_tall_is_padded_to_a_square(
    astronaut: Image.Image, detector: FaceDetector
) -> None:
    strip = astronaut.crop((0, 40, 512, 160))  # 120 pixels tall, her face nearly fills that
    (face,) = detector.detect(strip)
    calls: list[tuple[Image.Image, Image.Image]] = []

    (region,) = face_regions(strip.size, [face], DEFAULT_MARGIN)
    fixed = fix_faces(strip, [face], _solid(GREEN, calls), native=512)

    left, top, right, bottom = region.crop
    assert top == 0 and bottom == strip.height and right - left > strip.height and 0 <= left and right <= strip.width
    assert calls[0][0].size == calls[0][1].size == (512, 512)
    assert fixed.size == strip.size
    assert tuple(np.asarray(fixed)[face.y + face.height // 2, face.x + face.width // 2]) == GREEN


@pytest.mark.parametrize(
    ("size", "face"),
    [
        ((512, 512), Face(0, 0, 60, 60)),
        ((512, 512), Face(470, 480, 42, 32)),
        ((640, 256), Face(300, 10, 200, 200)),
        ((100, 400), Face(10, 300, 80, 90)),
    ],
)
def test_regions_stay_inside_the_image_and_hold_the_face(size: tuple[int, int], face: Face) -> None:
    (region,) = face_regions(size, [face], DEFAULT_MARGIN)

    left, top, right, bottom = region.crop
    assert 0 <= left and 0 <= top and right <= size[0] and bottom <= size[1]
    assert left <= face.x and top <= face.y and face.x + face.width <= right and face.y + face.height <= bottom
    wanted = round(DEFAULT_MARGIN * max(face.width, face.height))
    assert (right - left, bottom - top) == (min(wanted, size[0]), min(wanted, size[1]))


def test_faces_go_largest_first_and_overlapping_ones_build_on_each_other() -> None:
    grey = Image.new("RGB", (512, 512), (128, 128, 128))
    small, large = Face(200, 200, 60, 60), Face(240, 220, 90, 90)
    calls: list[tuple[Image.Image, Image.Image]] = []
    colours = iter([(255, 0, 0), (0, 0, 255)])

    def redraw(crop: Image.Image, mask: Image.Image) -> Image.Image:
        calls.append((crop.copy(), mask))
        return Image.new("RGB", crop.size, next(colours))

    fixed = fix_faces(grey, [small, large], redraw, native=256)

    regions = face_regions(grey.size, [small, large], DEFAULT_MARGIN)
    assert [r.face for r in regions] == [_box(large), _box(small)]
    # The small face's crop already shows the large face's red.
    assert np.asarray(calls[1][0])[..., 0].max() > 200
    assert tuple(np.asarray(fixed)[230, 230]) == (0, 0, 255)


def test_bad_margin_or_native_size_are_refused(astronaut: Image.Image) -> None:
    face = Face(177, 66, 95, 95)
    with pytest.raises(ValueError, match="margin"):
        face_regions(astronaut.size, [face], MIN_MARGIN - 0.1)
    with pytest.raises(ValueError, match="native"):
        fix_faces(astronaut, [face], _solid(GREEN), native=500)
