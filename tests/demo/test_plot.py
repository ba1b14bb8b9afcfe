"""The demos' reward plot: a real PNG with axes, the raw curve and its moving average."""

import numpy as np
import pytest
from PIL import Image

from paddlemix_r1.demo import plot_curve


@pytest.mark.parametrize("segments", [None, [(0, "stage one"), (12, "stage two")]])
def test_plot_curve_writes_a_png_with_the_curves(tmp_path, segments):
    values = (np.linspace(0.0, 0.8, 30) + 0.1 * np.sin(np.arange(30))).tolist()
    path = tmp_path / "curve.png"
    plot_curve(values, str(path), "mean reward", segments=segments)
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (640, 360)
        pixels = np.asarray(img.convert("RGB")).reshape(-1, 3)
    colors = {tuple(c) for c in pixels[::7]}
    assert len(colors) > 50  # text, ticks, grid and anti-aliased lines, not a blank or flat image
    dark_blue = np.all(np.abs(pixels.astype(int) - (0x1E, 0x46, 0xC8)) < 30, axis=1)
    assert dark_blue.sum() > 200  # the moving average is drawn
    if segments:
        red = np.all(np.abs(pixels.astype(int) - (0xC8, 0x3C, 0x3C)) < 30, axis=1)
        assert red.sum() > 100  # the stage boundary and its label


def test_plot_curve_handles_short_runs(tmp_path):
    for n in (1, 3):
        path = tmp_path / f"curve{n}.png"
        plot_curve([0.5] * n, str(path), "short")
        with Image.open(path) as img:
            assert img.size == (640, 360)
