"""The face fix (the ADetailer approach): find faces, redraw each one at the model's native size, paste it back.

Small faces come out of Stable Diffusion smeared because they cover few latent pixels. Cropping a square
around each face, scaling it up to the model's native size and redrawing it at low strength gives the model
the resolution it needs; a feathered mask then blends the redrawn face in so only pixels near it change.

Faces are found by OpenCV's Haar cascade, or by a detector the owner installs as an ONNX file: YuNet, or a
YOLOv8 model such as ADetailer's face_yolov8n exported to ONNX, both run by OpenCV with no other dependency.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

NO_FACE = "I found no face in this image to fix."

MAX_FACES = 8
# The crop's side as a multiple of the face's longer side: room for hair, jaw and light around the face.
DEFAULT_MARGIN = 2.0
# Below this the feathered mask would reach the crop's edge and leave a hard seam there.
MIN_MARGIN = 1.5
# The mask covers an ellipse this much larger than the face box, so the jaw line and forehead blend in.
MASK_GROW = 1.2
# The feather's Gaussian radius as a fraction of the face's longer side.
FEATHER = 0.05

# Haar cascade parameters, checked on skimage's astronaut photograph: with 1.1 and 5 neighbours the cascade finds
# her face and nothing in noise; a finer step of 1.05 is slower and adds a false face on her suit's neck ring.
HAAR_CASCADE = "haarcascade_frontalface_default.xml"
HAAR_SCALE_FACTOR = 1.1
HAAR_MIN_NEIGHBORS = 5
# The face cascade alone also fires on reflections and fabric (her helmet's highlight at 2x, among 50 such hits
# in a sweep of crops and scales of the photograph); asking for an eye in the upper part of each box removed
# them all and kept every true face. The box is scaled to a fixed size so small faces' eyes are findable.
EYE_CASCADE = "haarcascade_eye.xml"
EYE_CHECK_SIDE = 120
EYE_BAND = 0.55  # the upper fraction of the face box where the eyes sit
EYE_SIZES = ((18, 18), (50, 50))  # an eye spans about a sixth to a third of the face's width
# The smallest face, as a fraction of the image's shorter side; 24 px is the cascade's own window.
MIN_FACE_FRACTION = 1 / 20
MIN_FACE_PIXELS = 24

# YuNet's outputs, the ones OpenCV's FaceDetectorYN reads: class, object, box and landmark maps at three strides.
YUNET_OUTPUTS = frozenset(f"{kind}_{stride}" for kind in ("cls", "obj", "bbox", "kps") for stride in (8, 16, 32))
# A YOLOv8 export's input side when the file leaves it open (a dynamic export): Ultralytics' default.
YOLO_SIDE = 640
# A YOLOv8 detector has an anchor at every cell of its grids at these strides: 8400 at 640×640.
YOLO_STRIDES = (8, 16, 32)
YOLO_CONFIDENCE = 0.3  # ADetailer's default detection confidence
# Two boxes overlapping more than this are one face: redrawing it twice would only soften it.
YOLO_IOU = 0.45
LETTERBOX_GRAY = 114  # Ultralytics pads the scaled image out to the input's size with this gray

Box = tuple[int, int, int, int]  # left, top, right, bottom in image pixels


class FaceDetectorError(ValueError):
    """The owner's face detector model cannot be used; the message names the file."""


@dataclass(frozen=True)
class Face:
    """A detected face's box in image pixels."""

    x: int
    y: int
    width: int
    height: int

    @property
    def area(self) -> int:
        return self.width * self.height


@dataclass(frozen=True)
class Region:
    """Where one face is redrawn: the crop taken from the image and the face inside it, both in image pixels."""

    crop: Box
    face: Box

    @property
    def side(self) -> int:
        """The side of the square the crop is padded to (right and bottom) when it is cut short by the image."""
        left, top, right, bottom = self.crop
        return max(right - left, bottom - top)


class _Haar:
    """OpenCV's bundled frontal-face cascade, each hit confirmed by its eye cascade."""

    def __init__(self) -> None:
        folder = cv2.data.haarcascades
        self._faces = cv2.CascadeClassifier(folder + HAAR_CASCADE)
        self._eyes = cv2.CascadeClassifier(folder + EYE_CASCADE)

    def find(self, rgb: np.ndarray, smallest: int) -> list[Face]:
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        boxes = self._faces.detectMultiScale(
            gray, scaleFactor=HAAR_SCALE_FACTOR, minNeighbors=HAAR_MIN_NEIGHBORS, minSize=(smallest, smallest)
        )
        return [
            Face(int(x), int(y), int(w), int(h)) for x, y, w, h in boxes if self._has_eye(gray[y : y + h, x : x + w])
        ]

    def _has_eye(self, face: np.ndarray) -> bool:
        shrinking = face.shape[1] > EYE_CHECK_SIDE
        scaled = cv2.resize(
            face, (EYE_CHECK_SIDE, EYE_CHECK_SIDE), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        )
        band = scaled[: round(EYE_CHECK_SIDE * EYE_BAND)]
        smallest, largest = EYE_SIZES
        eyes = self._eyes.detectMultiScale(band, scaleFactor=1.1, minNeighbors=5, minSize=smallest, maxSize=largest)
        return len(eyes) > 0


class _YuNet:
    """The owner's YuNet ONNX model (OpenCV's FaceDetectorYN), with its own score threshold."""

    def __init__(self, model: Path) -> None:
        try:
            self._net = cv2.FaceDetectorYN.create(str(model), "", (64, 64))
            # YuNet's output names are not proof enough: only running it shows whether their shapes are YuNet's too.
            self._net.detect(np.zeros((64, 64, 3), dtype=np.uint8))
        except cv2.error as error:
            raise FaceDetectorError(f"The face detector model {model} is not a YuNet ONNX model.") from error

    def find(self, rgb: np.ndarray, smallest: int) -> list[Face]:
        height, width = rgb.shape[:2]
        self._net.setInputSize((width, height))
        _, rows = self._net.detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        # Each row is x, y, w, h, five landmarks, score.
        return _inside([] if rows is None else rows[:, :4], (width, height), smallest)


class _Yolo:
    """The owner's YOLOv8 detector exported to ONNX (ADetailer's face_yolov8n and face_yolov8s), run by OpenCV's dnn.

    It sees the image letterboxed into its input as Ultralytics feeds it, and gives one row per anchor: the box's
    centre and size in input pixels, then each class's score; the best class's score counts, as for ADetailer.
    """

    def __init__(self, model: Path, net: cv2.dnn.Net) -> None:
        self._net = net
        self._size = _input_size(model)
        try:
            out = self._output(np.zeros((self._size[1], self._size[0], 3), dtype=np.uint8))
        except cv2.error as error:
            raise _neither(model) from error
        # The anchor count tells a YOLOv8 detector from other rank-3 outputs (an end-to-end export's 300 rows, say)
        # and which side its rows lie along: exports come as [1, 4 + classes, anchors] or transposed.
        anchors = sum((self._size[0] // stride) * (self._size[1] // stride) for stride in YOLO_STRIDES)
        if out.ndim != 3 or out.shape[0] != 1 or anchors not in out.shape[1:] or min(out.shape[1:]) < 5:
            raise _neither(model)
        self._transposed = out.shape[1] == anchors
        scores = self._rows(out)[:, 4:]
        # Past the box a detector has class probabilities; a pose or segmentation model has coordinates there.
        if not np.all((scores >= 0) & (scores <= 1)):
            raise _neither(model)

    def _output(self, canvas: np.ndarray) -> np.ndarray:
        self._net.setInput(cv2.dnn.blobFromImage(canvas, 1 / 255))
        return self._net.forward()

    def _rows(self, out: np.ndarray) -> np.ndarray:
        """The output as one row per anchor: centre x and y, width, height, then the classes' scores."""
        return out[0] if self._transposed else out[0].T

    def find(self, rgb: np.ndarray, smallest: int) -> list[Face]:
        height, width = rgb.shape[:2]
        size_w, size_h = self._size
        scale = min(size_w / width, size_h / height)
        scaled_w, scaled_h = round(width * scale), round(height * scale)
        left, top = (size_w - scaled_w) // 2, (size_h - scaled_h) // 2
        canvas = np.full((size_h, size_w, 3), LETTERBOX_GRAY, dtype=np.uint8)
        canvas[top : top + scaled_h, left : left + scaled_w] = cv2.resize(
            rgb, (scaled_w, scaled_h), interpolation=cv2.INTER_LINEAR
        )
        rows = self._rows(self._output(canvas))
        scores = rows[:, 4:].max(axis=1)
        rows, scores = rows[scores >= YOLO_CONFIDENCE], scores[scores >= YOLO_CONFIDENCE]
        # Centre and size in input pixels to corner and size in image pixels, the letterbox undone.
        boxes = np.column_stack([rows[:, :2] - rows[:, 2:4] / 2 - (left, top), rows[:, 2:4]]) / scale
        kept = cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), YOLO_CONFIDENCE, YOLO_IOU)
        return _inside(boxes[np.asarray(kept, dtype=int).reshape(-1)], (width, height), smallest)


def _inside(boxes: Sequence[Sequence[float]] | np.ndarray, size: tuple[int, int], smallest: int) -> list[Face]:
    """The boxes (x, y, w, h; they may reach past the image's edges) cut to the image, the smaller ones left out."""
    width, height = size
    faces = []
    for x, y, w, h in boxes:
        left, top = max(0, round(x)), max(0, round(y))
        right, bottom = min(width, round(x + w)), min(height, round(y + h))
        if min(right - left, bottom - top) >= smallest:
            faces.append(Face(left, top, right - left, bottom - top))
    return faces


def _onnx_detector(model: Path) -> _YuNet | _Yolo:
    """The backend for the owner's model file, told by the network's outputs rather than the file's name."""
    if not model.is_file():
        raise FaceDetectorError(f"The face detector model {model} does not exist.")
    if model.suffix.lower() == ".pt":
        raise FaceDetectorError(
            f"The face detector model {model} is a PyTorch file, which cannot be loaded without running its code: "
            f"export it to ONNX with `yolo export model={model} format=onnx` and use the .onnx file."
        )
    try:
        net = cv2.dnn.readNetFromONNX(str(model))
    except cv2.error as error:
        raise _neither(model) from error
    outputs = set(net.getUnconnectedOutLayersNames())
    if YUNET_OUTPUTS <= outputs:
        return _YuNet(model)
    if len(outputs) == 1:
        return _Yolo(model, net)
    raise _neither(model)


def _neither(model: Path) -> FaceDetectorError:
    return FaceDetectorError(f"The face detector model {model} is neither a YuNet nor a YOLO face detector (.onnx).")


def _input_size(model: Path) -> tuple[int, int]:
    """The width and height the ONNX file fixes for its first input ([1, 3, H, W]); YOLO_SIDE for a side it leaves
    open. OpenCV has no call for a network's input shape, and a YOLO export runs only at its own."""
    import onnxruntime

    try:
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: a warning about the file is not the operator's one line
        session = onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types for files it cannot read
        raise _neither(model) from error
    shape = session.get_inputs()[0].shape
    sides = [side if isinstance(side, int) and side > 0 else YOLO_SIDE for side in shape]
    return (sides[3], sides[2]) if len(sides) == 4 else (YOLO_SIDE, YOLO_SIDE)


class FaceDetector:
    """Finds faces: OpenCV's Haar cascade by default, or the owner's ONNX model (YuNet or a YOLOv8 face detector).

    Which of the two a file is comes from its network: YuNet has FaceDetectorYN's twelve named outputs, a YOLOv8
    export one output of rows of box and class scores. A file that is neither, or an Ultralytics .pt, is refused
    here with one line naming it.
    """

    def __init__(self, model: Path | None = None) -> None:
        self._backend = _Haar() if model is None else _onnx_detector(model)

    def detect(self, image: Image.Image) -> list[Face]:
        """The faces in the image, largest first, at most MAX_FACES."""
        rgb = np.asarray(image.convert("RGB"))
        height, width = rgb.shape[:2]
        smallest = max(MIN_FACE_PIXELS, round(min(width, height) * MIN_FACE_FRACTION))
        faces = self._backend.find(rgb, smallest)
        return sorted(faces, key=lambda face: face.area, reverse=True)[:MAX_FACES]


def face_regions(size: tuple[int, int], faces: Sequence[Face], margin: float = DEFAULT_MARGIN) -> list[Region]:
    """One region per face, largest face first: a square of `margin` times the face, moved inside the image.

    The crop stays square unless the image is narrower than it; then it spans that whole side.
    """
    if margin < MIN_MARGIN:
        raise ValueError(f"margin must be at least {MIN_MARGIN}, not {margin}")
    width, height = size
    regions = []
    for face in sorted(faces, key=lambda face: face.area, reverse=True):
        side = round(margin * max(face.width, face.height))
        crop_w, crop_h = min(side, width), min(side, height)
        centre_x, centre_y = face.x + face.width / 2, face.y + face.height / 2
        # Moved, not cut, at the image's edges: the model keeps a full-size view of the face's surroundings.
        left = min(max(0, round(centre_x - crop_w / 2)), width - crop_w)
        top = min(max(0, round(centre_y - crop_h / 2)), height - crop_h)
        crop = (left, top, left + crop_w, top + crop_h)
        regions.append(Region(crop, (face.x, face.y, face.x + face.width, face.y + face.height)))
    return regions


def face_mask(region: Region, native: int) -> Image.Image:
    """The redraw mask for the region's padded square at `native` pixels: a feathered white ellipse over the face."""
    scale = native / region.side
    left, top = region.crop[:2]
    face_left, face_top, face_right, face_bottom = region.face
    centre_x = (face_left + face_right) / 2 - left
    centre_y = (face_top + face_bottom) / 2 - top
    half_w = (face_right - face_left) * MASK_GROW / 2
    half_h = (face_bottom - face_top) * MASK_GROW / 2
    ellipse = [
        (centre_x - half_w) * scale,
        (centre_y - half_h) * scale,
        (centre_x + half_w) * scale,
        (centre_y + half_h) * scale,
    ]
    mask = Image.new("L", (native, native), 0)
    ImageDraw.Draw(mask).ellipse(ellipse, fill=255)
    feather = FEATHER * max(face_right - face_left, face_bottom - face_top) * scale
    return mask.filter(ImageFilter.GaussianBlur(radius=feather))


def _padded_crop(image: Image.Image, region: Region) -> Image.Image:
    """The crop, padded on the right and bottom to its square by repeating its edge pixels."""
    crop = np.asarray(image.crop(region.crop))
    pad_h, pad_w = region.side - crop.shape[0], region.side - crop.shape[1]
    return Image.fromarray(np.pad(crop, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge"))


def fix_faces(
    image: Image.Image,
    faces: Sequence[Face],
    redraw: Callable[[Image.Image, Image.Image], Image.Image],
    native: int,
    margin: float = DEFAULT_MARGIN,
) -> Image.Image:
    """The image with each face redrawn by `redraw(crop, mask)` at native×native and blended back in.

    Faces go largest first, each over the previous results, so overlapping regions build on one another.
    """
    if native <= 0 or native % 8:
        raise ValueError(f"native must be a positive multiple of 8, not {native}")
    result = image.convert("RGB")
    for region in face_regions(result.size, faces, margin):
        square = _padded_crop(result, region)
        redrawn = redraw(square.resize((native, native), Image.Resampling.LANCZOS), face_mask(region, native))
        redrawn = redrawn.convert("RGB").resize(square.size, Image.Resampling.LANCZOS)
        # The same feathered mask drawn at the crop's own scale: exactly 0 away from the face, so those pixels stay.
        blended = Image.composite(redrawn, square, face_mask(region, region.side))
        left, top, right, bottom = region.crop
        result.paste(blended.crop((0, 0, right - left, bottom - top)), (left, top))
    return result
