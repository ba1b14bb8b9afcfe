"""Image processor: parity with transformers' Qwen2VLImageProcessorPil, config layouts, EXIF, sizes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from processing.reference import random_image, reference_image_processor

from paddlemix_r1.processing.image_processor import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    ImageProcessor,
    load_image,
    patchify,
    smart_resize,
)

PUBLISHED_CONFIG = {
    "min_pixels": 3136,
    "max_pixels": 12845056,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": list(OPENAI_CLIP_MEAN),
    "image_std": list(OPENAI_CLIP_STD),
    "image_processor_type": "Qwen2VLImageProcessor",
    "processor_class": "Qwen2VLProcessor",
}
# transformers-5 layout, with the reference's default limits (so 4000x3000 is over max_pixels)
TRANSFORMERS5_CONFIG = {
    "size": {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 1280},
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": list(OPENAI_CLIP_MEAN),
    "image_std": list(OPENAI_CLIP_STD),
    "do_resize": True,
    "do_rescale": True,
    "do_normalize": True,
    "do_convert_rgb": True,
    "rescale_factor": 1 / 255,
    "resample": 3,
    "image_processor_type": "Qwen2VLImageProcessor",
}
SMALL_CONFIG = {**PUBLISHED_CONFIG, "min_pixels": 56 * 56, "max_pixels": 28 * 28 * 64}

# (width, height): 1:1, 3:1, 1:5, odd sizes, smaller than min_pixels, large
SIZES = [(224, 224), (600, 200), (100, 500), (333, 257), (10, 12), (1000, 30)]


def write_config(tmp_path, config: dict):
    with open(tmp_path / "preprocessor_config.json", "w") as f:
        json.dump(config, f)
    return tmp_path


def assert_matches_reference(ours: ImageProcessor, config: dict, images: list[Image.Image]) -> None:
    pytest.importorskip("transformers")
    expected = reference_image_processor(config)(images=images, return_tensors="np")
    got = ours(images)
    np.testing.assert_array_equal(got.image_grid_thw, expected["image_grid_thw"])
    assert got.pixel_values.dtype == np.float32
    assert got.pixel_values.shape == expected["pixel_values"].shape
    np.testing.assert_allclose(got.pixel_values, expected["pixel_values"], rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "config", [PUBLISHED_CONFIG, SMALL_CONFIG, TRANSFORMERS5_CONFIG], ids=["published", "small", "tf5"]
)
@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_pixel_values_match_reference(tmp_path, config, size):
    ours = ImageProcessor.from_pretrained(write_config(tmp_path, config))
    assert_matches_reference(ours, config, [random_image(*size, seed=size[0] + size[1])])


def test_huge_image_over_max_pixels_matches_reference(tmp_path):
    ours = ImageProcessor.from_pretrained(write_config(tmp_path, TRANSFORMERS5_CONFIG))
    image = random_image(4000, 3000, seed=7)
    w, h = ours.resized_size(4000, 3000)
    assert w * h <= 28 * 28 * 1280 < 4000 * 3000
    assert_matches_reference(ours, TRANSFORMERS5_CONFIG, [image])


def test_several_images_concatenate_in_order(tmp_path):
    ours = ImageProcessor.from_pretrained(write_config(tmp_path, SMALL_CONFIG))
    images = [random_image(120, 80, seed=1), random_image(50, 300, seed=2), random_image(10, 12, seed=3)]
    assert_matches_reference(ours, SMALL_CONFIG, images)
    batch = ours(images)
    assert batch.original_sizes == [(120, 80), (50, 300), (10, 12)]
    for (w, h), (t, gh, gw) in zip(batch.resized_sizes, batch.image_grid_thw.tolist()):
        assert (t, gh, gw) == (1, h // 14, w // 14)
        assert w % 28 == 0 and h % 28 == 0
        assert 56 * 56 <= w * h <= 28 * 28 * 64


def test_config_layouts_give_the_same_limits(tmp_path):
    published = ImageProcessor.from_config({"min_pixels": 100, "max_pixels": 5000})
    tf5 = ImageProcessor.from_config({"size": {"shortest_edge": 100, "longest_edge": 5000}})
    both = ImageProcessor.from_config(
        {"min_pixels": 100, "max_pixels": 5000, "size": {"shortest_edge": 1, "longest_edge": 2}}
    )
    for proc in (published, tf5, both):
        assert (proc.min_pixels, proc.max_pixels) == (100, 5000)
    default = ImageProcessor.from_config({})
    assert (default.min_pixels, default.max_pixels) == (56 * 56, 28 * 28 * 1280)


def test_config_errors_name_the_file_and_field(tmp_path):
    write_config(tmp_path, {**PUBLISHED_CONFIG, "do_resize": False})
    with pytest.raises(ValueError, match=r"preprocessor_config\.json.*do_resize"):
        ImageProcessor.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="preprocessor_config.json"):
        ImageProcessor.from_pretrained(tmp_path / "missing")
    with pytest.raises(ValueError, match="min_pixels"):
        ImageProcessor(min_pixels=5000, max_pixels=100)


def test_patchify_order_is_merge_blocks_then_c_t_p_p():
    p, m, t = 2, 2, 2
    h, w, c = 8, 4, 3
    image = np.arange(h * w * c, dtype=np.float32).reshape(h, w, c)  # (H, W, C)
    patches = patchify(image, p, m, t)  # (gh*gw, C*T*P*P)
    gh, gw = h // p, w // p
    assert patches.shape == (gh * gw, c * t * p * p)
    row = 0
    for bh in range(gh // m):
        for bw in range(gw // m):
            for ih in range(m):
                for iw in range(m):
                    y, x = (bh * m + ih) * p, (bw * m + iw) * p
                    chw = image[y : y + p, x : x + p].transpose(2, 0, 1)  # (C, P, P)
                    expected = np.stack([chw] * t, axis=1).reshape(-1)  # (C, T, P, P)
                    np.testing.assert_array_equal(patches[row], expected)
                    row += 1


def test_smart_resize_known_values():
    assert smart_resize(10, 12) == (56, 84)
    assert smart_resize(3000, 4000, max_pixels=28 * 28 * 1280) == (840, 1148)
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(10, 3000)


def _exif_rotated_jpeg(path, orientation: int) -> Image.Image:
    """Save a JPEG whose EXIF says 'rotate me'; return the upright picture it should show."""
    upright = Image.new("RGB", (40, 80), (255, 0, 0))  # tall: red top half, blue bottom half
    upright.paste((0, 0, 255), (0, 40, 40, 80))
    # Orientation 6 shows the stored pixels rotated 90 degrees clockwise, 8 counter-clockwise.
    stored = upright.transpose(Image.Transpose.ROTATE_90 if orientation == 6 else Image.Transpose.ROTATE_270)
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, format="JPEG", quality=95, exif=exif.tobytes())
    return upright


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_rotated_jpeg_comes_out_upright(tmp_path, orientation):
    file = tmp_path / "rotated.jpg"
    upright = _exif_rotated_jpeg(file, orientation)
    with Image.open(file) as raw:
        assert raw.size == (80, 40)  # stored sideways
    loaded = load_image(str(file))
    assert loaded.mode == "RGB" and loaded.size == upright.size
    pixels = np.asarray(loaded).astype(int)
    assert np.abs(pixels[5, 20] - [255, 0, 0]).max() < 10  # red on top
    assert np.abs(pixels[75, 20] - [0, 0, 255]).max() < 10  # blue at the bottom

    batch = ImageProcessor(min_pixels=56 * 56, max_pixels=28 * 28 * 64)([file])
    assert batch.original_sizes == [(40, 80)]
    w, h = batch.resized_sizes[0]
    assert h > w


def test_alpha_is_composited_on_white_like_the_reference():
    rgba = random_image(60, 90, seed=3, mode="RGBA")
    arr = np.asarray(rgba).copy()
    arr[:30, :, 3] = 0  # fully transparent top third
    rgba = Image.fromarray(arr, mode="RGBA")
    rgb = np.asarray(load_image(rgba))
    assert (rgb[:30] == 255).all()
    assert_matches_reference(ImageProcessor.from_config(SMALL_CONFIG), SMALL_CONFIG, [rgba])


def test_path_and_pil_inputs_agree(tmp_path):
    image = random_image(90, 70, seed=5)
    image.save(tmp_path / "a.png")
    proc = ImageProcessor.from_config(SMALL_CONFIG)
    from_path = proc([tmp_path / "a.png"])
    from_pil = proc([image])
    np.testing.assert_array_equal(from_path.pixel_values, from_pil.pixel_values)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        proc([tmp_path / "nope.png"])
    with pytest.raises(TypeError, match="ndarray"):
        proc([np.zeros((4, 4, 3), dtype=np.uint8)])
