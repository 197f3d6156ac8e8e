"""Decoding gates: every odd or broken file becomes RGB with a note, or a rejection with its reason."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embedding.align import AlignRejected, decode_image, read_source

MAX = 40_000_000


def _rgb(h=60, w=80, seed=0) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height and that holds no pixel data at all."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _reject(data: bytes, reason: str, match: str, max_pixels: int = MAX) -> AlignRejected:
    with pytest.raises(AlignRejected, match=match) as info:
        decode_image(data, max_pixels=max_pixels)
    assert info.value.reason == reason
    return info.value


def test_plain_rgb_passes_untouched() -> None:
    arr = _rgb()
    d = decode_image(_save(Image.fromarray(arr), "PNG"), max_pixels=MAX)
    np.testing.assert_array_equal(d.rgb, arr)
    assert d.notes == () and d.format == "PNG" and d.mode == "RGB"


@pytest.mark.parametrize(("orientation", "stored"), [
    (3, Image.Transpose.ROTATE_180), (6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270),
    (2, Image.Transpose.FLIP_LEFT_RIGHT),
])
def test_exif_orientation_is_applied(orientation, stored) -> None:
    upright = _rgb(40, 70)
    im = Image.fromarray(upright).transpose(stored)
    exif = Image.Exif()
    exif[0x0112] = orientation
    d = decode_image(_save(im, "PNG", exif=exif), max_pixels=MAX)
    np.testing.assert_array_equal(d.rgb, upright)
    assert f"exif_orientation={orientation}" in d.notes


def test_an_invalid_exif_orientation_is_noted_and_ignored() -> None:
    arr = _rgb(40, 70)
    exif = Image.Exif()
    exif[0x0112] = 9
    d = decode_image(_save(Image.fromarray(arr), "PNG", exif=exif), max_pixels=MAX)
    np.testing.assert_array_equal(d.rgb, arr)
    assert d.notes == ("exif_orientation_invalid=9",)


def test_grayscale_and_bilevel_become_three_equal_channels() -> None:
    gray = _rgb()[:, :, 0]
    d = decode_image(_save(Image.fromarray(gray, "L"), "PNG"), max_pixels=MAX)
    assert d.rgb.shape == (60, 80, 3) and "grayscale" in d.notes
    np.testing.assert_array_equal(d.rgb[:, :, 2], gray)
    d = decode_image(_save(Image.fromarray(gray > 128), "PNG"), max_pixels=MAX)
    assert "bilevel" in d.notes and set(np.unique(d.rgb)) <= {0, 255}


def test_palette_with_and_without_transparency() -> None:
    im = Image.fromarray(_rgb()).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    d = decode_image(_save(im, "PNG"), max_pixels=MAX)
    assert "palette" in d.notes
    np.testing.assert_array_equal(d.rgb, np.asarray(im.convert("RGB")))
    transparent_index = int(np.asarray(im)[0, 0])
    d = decode_image(_save(im, "PNG", transparency=transparent_index), max_pixels=MAX)
    assert "alpha_composited_on_white" in d.notes
    assert tuple(d.rgb[0, 0]) == (255, 255, 255)


def test_alpha_is_composited_on_white() -> None:
    rgba = np.dstack([_rgb(), np.full((60, 80), 255, np.uint8)])
    rgba[:10, :10, 3] = 0
    rgba[10:20, :10, 3] = 128
    d = decode_image(_save(Image.fromarray(rgba, "RGBA"), "PNG"), max_pixels=MAX)
    assert "alpha_composited_on_white" in d.notes
    assert (d.rgb[:10, :10] == 255).all()
    half = rgba[15, 5, :3].astype(float) * 128 / 255 + 255 * (1 - 128 / 255)
    np.testing.assert_allclose(d.rgb[15, 5], half, atol=1.5)
    np.testing.assert_array_equal(d.rgb[30:, 30:], rgba[30:, 30:, :3])
    opaque = decode_image(_save(Image.fromarray(_rgb()).convert("RGBA"), "PNG"), max_pixels=MAX)
    assert "alpha_opaque" in opaque.notes


def test_cmyk_converts_to_rgb() -> None:
    arr = _rgb()
    cmyk = Image.fromarray(arr).convert("CMYK")
    d = decode_image(_save(cmyk, "TIFF"), max_pixels=MAX)
    assert d.mode == "CMYK" and "cmyk" in d.notes
    np.testing.assert_array_equal(d.rgb, arr)
    d = decode_image(_save(cmyk, "JPEG", quality=95), max_pixels=MAX)    # Adobe CMYK JPEG
    assert np.abs(d.rgb.astype(int) - arr).mean() < 20


def test_16_bit_is_scaled_to_8_bit() -> None:
    gray16 = (_rgb()[:, :, 0].astype(np.uint16) * 257)
    d = decode_image(_save(Image.fromarray(gray16), "PNG"), max_pixels=MAX)
    assert "16bit" in d.notes and d.rgb.dtype == np.uint8
    np.testing.assert_array_equal(d.rgb[:, :, 0], _rgb()[:, :, 0])


def test_pixel_limit_is_checked_from_the_header_before_decoding() -> None:
    # 8000 x 8000 claimed, no pixel data: decoding would fail, so only a header check can say too_large
    rej = _reject(_png_header_only(8000, 8000), "too_large", r"64000000 pixels exceeds align\.max_pixels")
    assert rej.details == {"width": 8000, "height": 8000}
    # far past Pillow's own bomb limit: still our reason, never an exception
    _reject(_png_header_only(50_000, 50_000), "too_large", "refused before decoding")
    # a real small image under a small limit
    _reject(_save(Image.fromarray(_rgb()), "PNG"), "too_large", r"80x60 = 4800 pixels", max_pixels=4000)


def test_truncated_files() -> None:
    jpg = _save(Image.fromarray(_rgb(120, 160)), "JPEG")
    _reject(jpg[: len(jpg) // 2], "truncated", "ends before the image data does")
    png = _save(Image.fromarray(_rgb(120, 160)), "PNG")
    _reject(png[: len(png) // 2], "truncated", "ends before the image data does")


def test_corrupt_files() -> None:
    png = _save(Image.fromarray(_rgb(120, 160)), "PNG")
    noise = np.random.default_rng(1).integers(0, 255, 500, dtype=np.uint8).tobytes()
    _reject(png[:200] + noise + png[700:], "corrupt", "cannot be decoded")
    _reject(png[:40], "corrupt", "starts like a PNG file but its header is damaged")


@pytest.mark.parametrize(("data", "match"), [
    (b"", "the file is empty"),
    (b"this is a text file with a .jpg name\n" * 20, "not an image in a supported format"),
    (b"%PDF-1.4\n" + bytes(300), "not an image in a supported format"),
])
def test_non_images(data, match) -> None:
    _reject(data, "not_an_image", match)


def test_unreadable_paths(tmp_path: Path) -> None:
    (tmp_path / "folder.jpg").mkdir()
    os.symlink(tmp_path / "gone.jpg", tmp_path / "dangling.jpg")
    with pytest.raises(AlignRejected, match="is a directory") as info:
        read_source(tmp_path / "folder.jpg")
    assert info.value.reason == "unreadable"
    with pytest.raises(AlignRejected, match="does not exist") as info:
        read_source(tmp_path / "dangling.jpg")
    assert info.value.reason == "unreadable"


def test_multi_frame_takes_the_first_frame() -> None:
    frames = [Image.fromarray(_rgb(seed=s)).convert("P") for s in (1, 2)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    d = decode_image(buf.getvalue(), max_pixels=MAX)
    assert "first_of_2_frames" in d.notes
    np.testing.assert_array_equal(d.rgb, np.asarray(frames[0].convert("RGB")))


def test_embedded_colour_profiles() -> None:
    from PIL import ImageCms

    arr = _rgb()
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    plain = decode_image(_save(Image.fromarray(arr), "PNG", icc_profile=srgb), max_pixels=MAX)
    assert plain.notes == ()                                    # already sRGB: nothing to do
    # the same profile under another name goes through LittleCMS (an identity here)
    renamed = srgb.replace("sRGB".encode("utf-16-be"), "xRGB".encode("utf-16-be"))
    converted = decode_image(_save(Image.fromarray(arr), "PNG", icc_profile=renamed), max_pixels=MAX)
    assert converted.notes == ("icc_to_srgb=xRGB built-in",)
    assert np.abs(converted.rgb.astype(int) - arr).max() <= 1
    broken = decode_image(_save(Image.fromarray(arr), "PNG", icc_profile=b"not a profile" * 10), max_pixels=MAX)
    assert broken.notes == ("icc_profile_ignored",)
    np.testing.assert_array_equal(broken.rgb, arr)
