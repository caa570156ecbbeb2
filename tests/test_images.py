"""glip.images: every kind of image input becomes a valid RGB PIL image, or a one-line ImageError."""

import numpy as np
import pytest
import torch
from PIL import Image

from glip.errors import ImageError
from glip.images import is_image_like, load_image, to_pil


def test_exif_orientation_is_applied(tmp_path):
    # a 40x20 image whose EXIF says "rotate 90 degrees clockwise to display" (orientation 6)
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 10, 20))  # blue stripe on the left
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif.tobytes(), quality=95)
    out = load_image(path)
    assert out.size == (20, 40)  # displayed upright: portrait
    r, _, b = out.getpixel((10, 2))  # the left stripe is now at the top
    assert b > 200 and r < 60


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    arr = np.full((8, 8), 32768, dtype=np.uint16)  # mid grey in 16 bits
    path = tmp_path / "g16.png"
    Image.fromarray(arr).save(path)
    out = load_image(path)
    assert out.mode == "RGB"
    assert abs(out.getpixel((0, 0))[0] - 128) <= 1  # not 255 (clipped)


def test_transparent_palette_and_rgba_go_over_white(tmp_path):
    rgba = Image.new("RGBA", (6, 6), (255, 0, 0, 0))  # fully transparent red
    path = tmp_path / "t.png"
    rgba.save(path)
    assert load_image(path).getpixel((0, 0)) == (255, 255, 255)
    pal = Image.new("P", (6, 6), 0)
    pal.putpalette([0, 255, 0] * 256)
    assert to_pil(pal).getpixel((1, 1)) == (0, 255, 0)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (30000, 30000)).save(path)  # 900M pixels, a few hundred KB on disk
    with pytest.raises(ImageError, match=r"30000x30000|too large"):
        load_image(path)
    with pytest.raises(ImageError, match="more than the limit"):
        to_pil(Image.new("L", (2000, 1000)), max_pixels=10**6)


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"", "cannot read image"), (b"GIF89a\x01\x00", "cannot read image"), (b"\x89PNG\r\n\x1a\n", "cannot read")],
)
def test_broken_files(tmp_path, data, message):
    path = tmp_path / "x.png"
    path.write_bytes(data)
    with pytest.raises(ImageError, match=message) as e:
        load_image(path)
    assert "\n" not in str(e.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="is not a file"):
        load_image(tmp_path)


def test_arrays_and_tensors():
    arr = np.zeros((5, 7, 3), dtype=np.uint8)
    arr[..., 0] = 200
    for image in (arr, torch.from_numpy(arr).permute(2, 0, 1), arr.astype(np.float32) / 255.0):
        out = to_pil(image)
        assert out.size == (7, 5) and out.getpixel((0, 0)) == (200, 0, 0)
    assert to_pil(np.full((3, 4), 9, dtype=np.uint8)).getpixel((0, 0)) == (9, 9, 9)  # grey
    assert to_pil(torch.full((1, 3, 4), 9, dtype=torch.uint8)).size == (4, 3)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((4, 4, 5), np.uint8), "shape"),
        (np.zeros((2, 4, 4, 3), np.uint8), "shape"),
        (np.zeros((0, 4, 3), np.uint8), "at least 1x1"),
        (np.full((4, 4, 3), 2.0), r"\[0, 1\]"),
        (np.full((4, 4, 3), np.nan), "NaN"),
        (np.full((4, 4, 3), 300, np.int32), "uint8"),
        (np.zeros((4, 4, 3), np.complex64), "dtype"),
        (12, "is a int"),
        (b"bytes", "is a bytes"),
    ],
)
def test_bad_image_values(image, message):
    with pytest.raises(ImageError, match=message):
        to_pil(image)


def test_is_image_like():
    assert is_image_like("a.jpg") and is_image_like(np.zeros((2, 2, 3))) and is_image_like(torch.zeros(3, 2, 2))
    assert not is_image_like(["a.jpg"]) and not is_image_like(np.zeros((1, 2, 2, 3)))


def test_one_pixel_and_extreme_aspect_images_run_through_the_processor():
    from glip.processing import GLIPProcessor

    proc = GLIPProcessor(min_size=64, max_size=96)
    inputs = proc([Image.new("RGB", (1, 1)), Image.new("RGB", (1, 3000)), Image.new("RGB", (3000, 2))], ["cat"])
    assert inputs.pixel_values.shape[0] == 3
    assert all(h >= 1 and w >= 1 for h, w in inputs.image_sizes)
