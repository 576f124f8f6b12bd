"""The face fix (the ADetailer approach): find faces, redraw each one at the model's native size, paste it back.

Small faces come out of Stable Diffusion smeared because they cover few latent pixels. Cropping a square
around each face, scaling it up to the model's native size and redrawing it at low strength gives the model
the resolution it needs; a feathered mask then blends the redrawn face in so only pixels near it change.
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
        if not model.is_file():
            raise FaceDetectorError(f"The face detector model {model} does not exist.")
        try:
            self._net = cv2.FaceDetectorYN.create(str(model), "", (64, 64))
            # Any ONNX network loads; only running it shows whether it has YuNet's outputs.
            self._net.detect(np.zeros((64, 64, 3), dtype=np.uint8))
        except cv2.error as error:
            raise FaceDetectorError(f"The face detector model {model} is not a YuNet ONNX model.") from error

    def find(self, rgb: np.ndarray, smallest: int) -> list[Face]:
        height, width = rgb.shape[:2]
        self._net.setInputSize((width, height))
        _, rows = self._net.detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        faces = []
        # Each row is x, y, w, h, five landmarks, score; boxes may reach past the image's edges.
        for x, y, w, h in [] if rows is None else rows[:, :4]:
            left, top = max(0, round(x)), max(0, round(y))
            right, bottom = min(width, round(x + w)), min(height, round(y + h))
            if min(right - left, bottom - top) >= smallest:
                faces.append(Face(left, top, right - left, bottom - top))
        return faces


class FaceDetector:
    """Finds faces: OpenCV's Haar cascade by default, or a YuNet ONNX model when the owner provides one."""

    def __init__(self, model: Path | None = None) -> None:
        self._backend = _Haar() if model is None else _YuNet(model)

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
