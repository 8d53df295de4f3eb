import io
from pathlib import Path

import imagehash
import numpy as np
import pytest
import skimage
from PIL import Image

from medloom.imaging import (
    DecodeError,
    _jpeg_facts,
    file_facts,
    image_facts,
    luma32,
    mask_regions,
    open_image,
    phash_image,
    rle_decode,
    window_to_uint8,
)

RETINA = Path(skimage.__file__).parent / "data" / "retina.jpg"
IHC = Path(skimage.__file__).parent / "data" / "ihc.png"


@pytest.mark.parametrize("path", [RETINA, IHC])
def test_phash_agrees_with_imagehash(path):
    im = open_image(str(path))
    ours = phash_image(im)
    theirs = int(str(imagehash.phash(im)), 16)
    assert bin(ours ^ theirs).count("1") <= 6


def test_phash_survives_reencoding_but_not_other_images(tmp_path):
    im = open_image(str(RETINA)).resize((512, 512))
    im.save(tmp_path / "q60.jpg", quality=60)
    a, b = phash_image(im), phash_image(open_image(str(tmp_path / "q60.jpg")))
    c = phash_image(open_image(str(IHC)))
    assert bin(a ^ b).count("1") <= 4
    assert bin(a ^ c).count("1") > 16


def test_pixel_hash_depends_on_decoded_pixels_not_container(tmp_path):
    im = open_image(str(IHC))
    im.save(tmp_path / "a.png")
    im.save(tmp_path / "b.tiff")
    fa, fb = image_facts(open_image(str(tmp_path / "a.png"))), image_facts(open_image(str(tmp_path / "b.tiff")))
    assert fa.pixel_hash == fb.pixel_hash
    arr = np.asarray(im).copy()
    arr[0, 0, 0] ^= 1
    assert image_facts(Image.fromarray(arr)).pixel_hash != fa.pixel_hash
    assert (fa.width, fa.height, fa.channels) == (im.width, im.height, 3)


def test_open_image_failures(tmp_path):
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(DecodeError) as e:
        open_image(str(tmp_path / "text.png"))
    assert e.value.reason == "unreadable"
    data = RETINA.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(DecodeError) as e:
        open_image(str(tmp_path / "cut.jpg"))
    assert e.value.reason == "truncated"
    with pytest.raises(DecodeError) as e:
        open_image(str(RETINA), max_pixels=1000)
    assert e.value.reason == "decompression_bomb"


def test_mask_regions_boxes_and_rle_roundtrip():
    mask = np.zeros((40, 60), np.uint8)
    mask[5:10, 5:20] = 255
    mask[20:35, 40:50] = 255
    mask[30:32, 2:4] = 7
    rois, unknown = mask_regions(mask, {255: "cell"})
    assert unknown == [7]
    assert len(rois) == 2
    union = np.zeros_like(mask, dtype=bool)
    for roi in rois:
        region = rle_decode(roi["rle"], 40, 60)
        assert region.sum() == pytest.approx(roi["area"] * 40 * 60)
        union |= region
    assert (union == (mask == 255)).all()
    boxes = sorted(tuple(round(v, 4) for v in r["bbox"]) for r in rois)
    assert boxes[0] == (round(5 / 60, 4), round(5 / 40, 4), round(20 / 60, 4), round(10 / 40, 4))


def test_window_rule():
    values = np.array([-1000, 40, 1000], dtype=np.int16)
    assert window_to_uint8(values, 40, 400).tolist() == [0, 127, 255]
    assert window_to_uint8(values, 40, 400, invert=True).tolist() == [255, 128, 0]


def _jpeg_variants(tmp_path):
    im = open_image(str(RETINA)).crop((13, 7, 1014, 774))  # 1001 x 767: no size divides into 32 bands
    for name, kwargs in [
        ("420", {"subsampling": 2}),
        ("422", {"subsampling": 1}),
        ("444", {"subsampling": 0}),
        ("progressive", {"progressive": True}),
        ("q50", {"quality": 50}),
    ]:
        im.save(tmp_path / f"{name}.jpg", **kwargs)
        yield tmp_path / f"{name}.jpg"
    im.convert("L").save(tmp_path / "gray.jpg")
    yield tmp_path / "gray.jpg"
    im.resize((20, 900)).save(tmp_path / "narrow.jpeg")
    yield tmp_path / "narrow.jpeg"


def test_jpeg_fast_path_gives_the_facts_pillow_gives(tmp_path):
    for path in _jpeg_variants(tmp_path):
        fast = _jpeg_facts(path.read_bytes(), 10**9)
        assert fast is not None, path  # the libjpeg-turbo path was taken ...
        assert fast == image_facts(open_image(str(path))), path  # ... and hashes the same pixels
        assert file_facts(io.BytesIO(path.read_bytes())) == fast
        open_image(str(path)).save(tmp_path / "decoded.png")  # the conversion other datasets ship
        assert file_facts(str(tmp_path / "decoded.png")).pixel_hash == fast.pixel_hash


def test_jpeg_fast_path_hands_everything_else_to_pillow(tmp_path):
    im = open_image(str(RETINA))
    im.convert("CMYK").save(tmp_path / "cmyk.jpg")
    assert _jpeg_facts((tmp_path / "cmyk.jpg").read_bytes(), 10**9) is None
    assert file_facts(str(tmp_path / "cmyk.jpg")).channels == 4
    data = RETINA.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    for reason, call in [
        ("truncated", lambda: file_facts(str(tmp_path / "cut.jpg"))),
        ("decompression_bomb", lambda: file_facts(str(RETINA), max_pixels=1000)),
        ("missing_file", lambda: file_facts(str(tmp_path / "absent.jpg"))),
    ]:
        with pytest.raises(DecodeError) as e:
            call()
        assert e.value.reason == reason


def test_luma32_is_the_documented_grid_of_pillows_luma():
    im = open_image(str(RETINA)).crop((0, 0, 1001, 767))
    gray = np.asarray(im.convert("L"), np.float64)
    rows, cols = (np.arange(33) * 767) // 32, (np.arange(33) * 1001) // 32
    step = -(-int(np.diff(rows).max()) // 8)  # up to 8 evenly spaced rows per band, every column
    expected = np.array(
        [[gray[rows[i] : rows[i + 1] : step, cols[j] : cols[j + 1]].mean() for j in range(32)] for i in range(32)]
    )
    ours = luma32(np.asarray(im))
    assert np.abs(ours - expected).max() < 0.51  # Pillow rounds each pixel's luma; we round none
