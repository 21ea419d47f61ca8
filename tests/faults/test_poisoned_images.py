"""Poisoned image folders: files that look like images and are not quite, read by the one loader every command uses
(`tofu_edge.image_file.read_rgb`): each becomes right RGB or one line naming the file, memory stays bounded, and a
symlink loop in an ImageFolder tree ends with each file listed once."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tofu_edge.cli import app
from tofu_edge.engine.preprocess import load_input
from tofu_edge.errors import TofuError
from tofu_edge.image_file import DRAFT_SIDE, read_rgb, to_rgb
from tofu_edge.measure.dataset import find_images

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)
JPEG_TOLERANCE = 8  # a flat colour through JPEG's lossy round trip
EXIF_ORIENTATION = 0x0112
ROTATE_90_CW = 6  # EXIF orientation: the picture must be turned 90 degrees clockwise to be upright


def close(pixel, colour, tolerance=0) -> bool:
    return all(abs(int(a) - int(b)) <= tolerance for a, b in zip(pixel, colour, strict=True))


def noise_jpeg(path, size=64) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, "JPEG", quality=95)


def huge_png(path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height`` pixels, holding a few bytes: what a bomb looks like."""
    Image.new("RGB", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    header = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])  # 8 signature + 4 length, then IHDR
    data[12:33] = header + struct.pack(">I", zlib.crc32(header))
    path.write_bytes(bytes(data))


def test_a_truncated_jpeg_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "cut.jpg"
    noise_jpeg(path)
    path.write_bytes(path.read_bytes()[:-400])
    with pytest.raises(TofuError, match=rf"^cannot read image {path}: image file is truncated"):
        read_rgb(path)


def test_a_text_file_named_jpg_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("not a picture\n")
    with pytest.raises(TofuError, match=rf"^cannot read image {path}: not an image file Pillow can read$"):
        read_rgb(path)


def test_cmyk_becomes_its_rgb_colour(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, "JPEG", quality=95)  # no black, full magenta+yellow
    assert close(read_rgb(path).getpixel((8, 8)), RED, JPEG_TOLERANCE)


def test_16_bit_grey_is_scaled_to_8_bits_not_clipped(tmp_path):
    path = tmp_path / "grey16.png"
    Image.fromarray(np.full((8, 8), 32896, dtype=np.uint16)).save(path)  # 128 * 257: mid grey in 16 bits
    assert read_rgb(path).getpixel((0, 0)) == (128, 128, 128)


def test_32_bit_integer_grey_holding_16_bit_values_is_scaled_too():
    grey = Image.fromarray(np.full((4, 4), 32896, dtype=np.int32), mode="I")  # how older Pillows open 16-bit PNGs
    assert to_rgb(grey).getpixel((0, 0)) == (128, 128, 128)


def test_8_bit_grey_becomes_three_equal_channels(tmp_path):
    path = tmp_path / "grey.png"
    Image.new("L", (8, 8), 77).save(path)
    assert read_rgb(path).getpixel((3, 3)) == (77, 77, 77)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparent_pixels_become_white_and_opaque_ones_keep_their_colour(tmp_path, mode):
    pixels = Image.new("RGBA", (8, 8), (0, 0, 255, 255))
    pixels.paste((0, 0, 0, 0), (0, 0, 4, 8))  # left half fully transparent (its colour underneath: black)
    if mode == "LA":
        pixels, opaque = pixels.convert("LA"), (29, 29, 29)  # blue's luma
    elif mode == "P":
        pixels, opaque = pixels.convert("P"), BLUE  # Pillow keeps the transparent entry as `transparency`
    else:
        opaque = BLUE
    path = tmp_path / f"{mode}.png"
    pixels.save(path)
    rgb = read_rgb(path)
    assert rgb.getpixel((1, 4)) == WHITE and close(rgb.getpixel((6, 4)), opaque, 1)


def test_an_exif_rotated_photo_is_read_upright(tmp_path):
    stored = Image.new("RGB", (40, 20), RED)
    stored.paste(BLUE, (20, 0, 40, 20))  # stored sideways: red left, blue right
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = ROTATE_90_CW
    path = tmp_path / "sideways.jpg"
    stored.save(path, "JPEG", quality=95, exif=exif.tobytes())
    upright = read_rgb(path)
    assert upright.size == (20, 40)  # turned clockwise: the left (red) half is now on top
    assert close(upright.getpixel((10, 5)), RED, JPEG_TOLERANCE) and close(upright.getpixel((10, 35)), BLUE, 8)


def test_a_1x1_image_is_preprocessed_to_the_model_size(tmp_path):
    path = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), RED).save(path)
    assert load_input(path, (1, 3, 32, 32)).shape == (1, 3, 32, 32)


def test_an_image_over_the_bomb_limit_is_refused_before_decoding(tmp_path):
    path = tmp_path / "huge.png"
    huge_png(path, 20000, 20000)
    with pytest.raises(TofuError, match=rf"^cannot read image {path}: it has 400 megapixels, more than the 179 "):
        read_rgb(path)


def test_a_large_jpeg_is_decoded_reduced(tmp_path):
    path = tmp_path / "large.jpg"
    Image.new("RGB", (4 * DRAFT_SIDE, 2 * DRAFT_SIDE), RED).save(path, "JPEG")
    rgb = read_rgb(path)
    assert rgb.size == (2 * DRAFT_SIDE, DRAFT_SIDE) and close(rgb.getpixel((5, 5)), RED, JPEG_TOLERANCE)


def test_eval_on_a_folder_with_a_truncated_jpeg_is_one_line(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (40, 40), RED).save(tmp_path / name / "ok.png")
    bad = tmp_path / "b" / "cut.jpg"
    noise_jpeg(bad)
    bad.write_bytes(bad.read_bytes()[:-400])
    result = CliRunner().invoke(app, ["eval", "deit_tiny_patch16_224", str(tmp_path), "--img-size", "32"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: cannot read image {bad}: image file is truncated")
    assert result.stderr.count("\n") == 1


def test_a_symlink_loop_in_an_image_folder_ends_and_lists_each_file_once(tmp_path):
    root, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    (root / "cat").mkdir(parents=True)
    elsewhere.mkdir()
    Image.new("RGB", (8, 8)).save(root / "cat" / "1.png")
    Image.new("RGB", (8, 8)).save(elsewhere / "2.png")
    (root / "cat" / "up").symlink_to(root)  # a loop through the dataset root
    (root / "cat" / "self").symlink_to(root / "cat")  # a loop onto its own folder
    (root / "cat" / "again.png").symlink_to(root / "cat" / "1.png")  # a second name for one file
    (root / "cat" / "more").symlink_to(elsewhere)  # a linked folder outside the tree: followed
    (root / "loop").symlink_to(root)  # a "class" that is the root itself
    found = find_images(root)
    names = [str(path.relative_to(root)) for path, _ in found.samples]
    assert names == ["cat/1.png", "cat/more/2.png"]
    assert found.classes == ("cat", "loop")
