"""Bytes to an upright 8-bit RGB array, or a rejection that says what is wrong with the file.

The gates run in order of cost: read, identify the format from the header, check the pixel count
from the header (before any pixel is decoded, so a decompression bomb costs nothing), decode,
apply the EXIF orientation, then convert the pixel format (grayscale, palette, alpha, CMYK,
16-bit, float) to RGB. Each conversion that changes the data is noted, and the notes end up in
the manifest.
"""

from __future__ import annotations

import dataclasses
import io
import os
import struct
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from embedding.align import reasons as R
from embedding.align.reasons import AlignRejected
from embedding.fileio import UnsafeFileError, read_regular_file

# Formats decoded (JPEG includes the MPO variant phones write); anything else is refused even if Pillow could read it (smaller attack surface
# for uploads, and nobody photographs a patient as an .icns).
FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "PPM")
# Names treated as photos. Some (HEIC, AVIF, JPEG XL, JPEG 2000) are not decoded: listing them
# makes such files end quarantined with a reason instead of being passed over as "not a photo".
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                    ".ppm", ".pgm", ".pbm", ".pnm", ".mpo", ".heic", ".heif", ".avif", ".jxl", ".jp2")

_ORIENTATION_TAG = 0x0112
_WHITE = (255, 255, 255)


@dataclasses.dataclass(frozen=True)
class DecodedImage:
    """rgb: (H, W, 3) uint8, upright. notes: conversions applied, e.g. 'exif_orientation=6'."""

    rgb: np.ndarray
    format: str
    mode: str
    notes: tuple[str, ...]

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


def read_source(path: str | os.PathLike[str], *, root: str | os.PathLike[str] | None = None) -> bytes:
    """All bytes of `path`; raise AlignRejected('unreadable') on any OS error.

    Only a plain file inside `root` (default: its own folder) is opened: a link, hard link,
    device, FIFO or socket is refused unread (embedding.fileio.open_regular_file).
    """
    try:
        return read_regular_file(path, root=root)
    except UnsafeFileError as exc:
        raise AlignRejected(R.UNREADABLE, str(exc)) from None
    except IsADirectoryError:
        raise AlignRejected(R.UNREADABLE, f"{os.fspath(path)} is a directory, not a file") from None
    except FileNotFoundError:
        raise AlignRejected(R.UNREADABLE, f"{os.fspath(path)} does not exist (a dangling link?)") from None
    except PermissionError:
        raise AlignRejected(R.UNREADABLE, f"{os.fspath(path)}: permission denied") from None
    except OSError as exc:
        raise AlignRejected(R.UNREADABLE, f"{os.fspath(path)}: cannot read: {exc.strerror or exc}") from None


_SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
               (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))


def _signature(data: bytes) -> str:
    """The format a file claims by its first bytes ('' if none we know)."""
    for magic, kind in _SIGNATURES:
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return ""


def _open(data: bytes, max_pixels: int) -> Image.Image:
    if not data:
        raise AlignRejected(R.NOT_AN_IMAGE, "the file is empty")
    try:
        with warnings.catch_warnings():
            # our own limit (below) decides; Pillow's warning would only be noise
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        kind = _signature(data)
        if kind:
            raise AlignRejected(R.CORRUPT, f"starts like a {kind} file but its header is damaged or cut "
                                "short") from None
        raise AlignRejected(R.NOT_AN_IMAGE, "not an image in a supported format "
                            f"({', '.join(FORMATS)}), whatever its extension says") from None
    except Image.DecompressionBombError as exc:
        raise AlignRejected(R.TOO_LARGE, f"refused before decoding: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise AlignRejected(R.CORRUPT, f"damaged image header: {exc}") from None
    width, height = im.size
    if width < 1 or height < 1:
        raise AlignRejected(R.CORRUPT, f"image header gives an empty size {width}x{height}")
    if width * height > max_pixels:
        raise AlignRejected(
            R.TOO_LARGE, f"{width}x{height} = {width * height} pixels exceeds align.max_pixels "
            f"({max_pixels}); refused before decoding (decompression-bomb guard): downscale the photo",
            details={"width": width, "height": height})
    return im


def _load(im: Image.Image) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im.load()
    except EOFError as exc:
        raise AlignRejected(R.TRUNCATED, f"the file ends before the image data does: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - decoders raise OSError, ValueError, SyntaxError, ...
        text = str(exc)
        if "truncated" in text.lower() or "premature end" in text.lower():
            raise AlignRejected(R.TRUNCATED, f"the file ends before the image data does: {text}") from None
        raise AlignRejected(R.CORRUPT, f"the image data cannot be decoded: {type(exc).__name__}: {text}") from None


def _orient(im: Image.Image, notes: list[str]) -> Image.Image:
    try:
        orientation = im.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - broken EXIF blocks must not lose an otherwise good photo
        notes.append("exif_unreadable")
        return im
    if orientation in (None, 1):
        return im
    if orientation not in range(2, 9):
        notes.append(f"exif_orientation_invalid={orientation}")
        return im
    try:
        upright = ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001
        notes.append(f"exif_orientation_ignored={orientation}")
        return im
    notes.append(f"exif_orientation={orientation}")
    return upright if upright is not None else im


def _composite(im: Image.Image, notes: list[str]) -> Image.Image:
    rgba = im.convert("RGBA")
    alpha = np.asarray(rgba.getchannel("A"))
    if alpha.min() == 255:
        notes.append("alpha_opaque")
        return rgba.convert("RGB")
    notes.append("alpha_composited_on_white")
    background = Image.new("RGBA", rgba.size, _WHITE + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _scale_to_8bit(arr: np.ndarray, notes: list[str], label: str) -> np.ndarray:
    arr = arr.astype(np.float64)
    top = float(arr.max()) if arr.size else 0.0
    if label == "float":
        # float images are conventionally in [0, 1]; larger values are taken as 0..255
        scaled = arr * 255.0 if top <= 1.0 else arr
    elif top <= 255:
        scaled = arr
    elif top <= 65535:
        scaled = arr / 257.0
    else:
        scaled = arr / top * 255.0
    notes.append(label)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _icc_to_srgb(im: Image.Image, notes: list[str]) -> Image.Image | None:
    icc = im.info.get("icc_profile")
    if not icc:
        return None
    try:
        from PIL import ImageCms

        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        desc = (ImageCms.getProfileDescription(src) or "").strip()
        if im.mode == "RGB" and "srgb" in desc.lower().replace(" ", ""):
            return None
        converted = ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except Exception:  # noqa: BLE001 - a broken profile: fall back to the plain conversion
        notes.append("icc_profile_ignored")
        return None
    notes.append(f"icc_to_srgb={desc[:40]}" if desc else "icc_to_srgb")
    return converted


def _to_rgb(im: Image.Image, notes: list[str]) -> np.ndarray:
    mode = im.mode
    if mode == "RGB":
        out = _icc_to_srgb(im, notes) or im
    elif mode == "CMYK":
        notes.append("cmyk")
        out = _icc_to_srgb(im, notes) or im.convert("RGB")
    elif mode in ("L", "1"):
        notes.append("grayscale" if mode == "L" else "bilevel")
        out = im.convert("L").convert("RGB")
    elif mode == "P":
        notes.append("palette")
        has_alpha = "transparency" in im.info or im.palette is not None and im.palette.mode == "RGBA"
        out = _composite(im, notes) if has_alpha else im.convert("RGB")
    elif mode in ("RGBA", "RGBa", "LA", "La", "PA"):
        if mode in ("LA", "La"):
            notes.append("grayscale")
        out = _composite(im, notes)
    elif mode.startswith("I;16") or mode == "I":
        gray = _scale_to_8bit(np.asarray(im), notes, "16bit" if mode.startswith("I;16") else "32bit_int")
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    elif mode == "F":
        gray = _scale_to_8bit(np.asarray(im), notes, "float")
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    else:
        try:
            out = im.convert("RGB")
        except (ValueError, OSError) as exc:
            raise AlignRejected(R.UNSUPPORTED_MODE, f"pixel format {mode!r} has no RGB conversion: {exc}") from None
        notes.append(f"mode_{mode}")
    arr = np.asarray(out)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise AlignRejected(R.UNSUPPORTED_MODE, f"pixel format {mode!r} did not convert to 8-bit RGB")
    return np.ascontiguousarray(arr)


def decode_image(data: bytes, *, max_pixels: int) -> DecodedImage:
    """Decode image bytes to an upright (H, W, 3) uint8 RGB array with the quality gates.

    Raises AlignRejected with reason not_an_image, too_large (checked from the header, before
    decoding), truncated, corrupt or unsupported_mode.
    """
    im = _open(data, max_pixels)
    fmt = im.format or ""
    mode = im.mode
    notes: list[str] = []
    frames = getattr(im, "n_frames", 1)
    if frames > 1:
        notes.append(f"first_of_{frames}_frames")
    _load(im)
    im = _orient(im, notes)
    try:
        rgb = _to_rgb(im, notes)
    except AlignRejected:
        raise
    except Exception as exc:  # noqa: BLE001 - lazy decoders can fail during conversion too
        text = str(exc)
        code = R.TRUNCATED if "truncated" in text.lower() else R.CORRUPT
        raise AlignRejected(code, f"the image data cannot be decoded: {type(exc).__name__}: {text}") from None
    return DecodedImage(rgb=rgb, format=fmt, mode=mode, notes=tuple(notes))
