"""The VisRL demo's pipeline end to end at smoke size (the figures come from the full run: docs/visrl.md)."""

from __future__ import annotations

import json
from dataclasses import asdict

from paddlemix_r1.visrl_demo import VisrlDemoSettings


def test_pictures_hide_the_pattern_at_full_view_and_show_it_in_the_crop() -> None:
    """The three patterns at one place: the square's frame is the same for all three (its colour names the
    quadrant), at the model's 56-px full view the patterns differ only faintly along the striped area's rim
    (its inside is one flat grey), in the 56-px quadrant crop its stripes differ everywhere."""
    import numpy as np
    from PIL import Image

    from paddlemix_r1.visrl_demo import CANVAS, FRAME, FRAME_COLORS, MARK, PATTERNS, VIEW, striped_picture

    for seed in range(8):
        q = seed % 4
        pics = [striped_picture(p, q, np.random.default_rng(seed)) for p in PATTERNS]
        box = pics[0][1]
        assert all(b == box for _, b in pics)
        x1, y1 = int(round(box[0] * CANVAS)), int(round(box[1] * CANVAS))
        arrays = [np.asarray(im) for im, _ in pics]
        ring = np.ones((MARK, MARK), bool)
        ring[FRAME:MARK - FRAME, FRAME:MARK - FRAME] = False
        for a in arrays:  # the frame: one colour, the same for every pattern
            assert (a[y1:y1 + MARK, x1:x1 + MARK][ring] == FRAME_COLORS[q]).all()
        half = CANVAS // 2
        quad = (half * (q % 2), half * (q // 2), half * (q % 2) + half, half * (q // 2) + half)
        full = [np.asarray(im.convert("L").resize((VIEW, VIEW), Image.BICUBIC), float) for im, _ in pics]
        crop = [np.asarray(im.convert("L").crop(quad).resize((VIEW, VIEW), Image.BICUBIC), float) for im, _ in pics]
        r = CANVAS // VIEW  # full-view reduction
        m = FRAME // r + 2  # the frame and the resampling kernel's reach
        fx, fy = x1 // r, y1 // r
        inside = full[0][fy + m:fy + MARK // r - m, fx + m:fx + MARK // r - m]
        assert inside.size >= 16 and inside.std() < 1.0 and abs(inside.mean() - 127.5) < 2.0  # a flat grey block
        c = CANVAS // 2 // VIEW  # crop reduction
        cx, cy = (x1 - quad[0]) // c, (y1 - quad[1]) // c
        stripes = [im[cy + FRAME // c:cy + (MARK - FRAME) // c, cx + FRAME // c:cx + (MARK - FRAME) // c] for im in crop]
        for a in range(3):
            for b in range(a):
                assert np.abs(full[a] - full[b]).max() < 30.0  # rim only, in 255 levels
                assert np.abs(full[a] - full[b]).mean() < 1.0
                assert np.abs(stripes[a] - stripes[b]).mean() > 20.0


def test_smoke_run_through_the_cli(tmp_path) -> None:
    from paddlemix_r1.cli import main

    assert main(["demo", "--recipe", "visrl", "--smoke", "--seed", "3", "--output_dir", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["before"]["n"] == 4 and "final" in saved["grpo"] and saved["dpo"]["generated_tokens"] > 0
    assert saved["grpo"]["final"]["step"] == 2
    assert saved["settings"] == {**asdict(VisrlDemoSettings.smoke()), "seed": 3}
