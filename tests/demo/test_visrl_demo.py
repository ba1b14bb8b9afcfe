"""The VisRL demo's pipeline end to end at smoke size (the figures come from the full run: docs/visrl.md)."""

from __future__ import annotations

import json

from paddlemix_r1.visrl_demo import VisrlDemoSettings, run_visrl_demo


def test_pictures_hide_the_pattern_at_full_view_and_show_it_in_the_crop() -> None:
    """The three patterns at one place: at the model's 56-px full view they differ only faintly along the
    square's rim (the inside is one flat grey), in the 56-px quadrant crop they differ everywhere."""
    import numpy as np
    from PIL import Image

    from paddlemix_r1.visrl_demo import CANVAS, PATTERNS, VIEW, striped_picture

    for seed in range(6):
        pics = [striped_picture(p, seed % 4, np.random.default_rng(seed)) for p in PATTERNS]
        box = pics[0][1]
        assert all(b == box for _, b in pics)
        q = seed % 4
        half = CANVAS // 2
        quad = (half * (q % 2), half * (q // 2), half * (q % 2) + half, half * (q // 2) + half)
        full = [np.asarray(im.convert("L").resize((VIEW, VIEW), Image.BICUBIC), float) for im, _ in pics]
        crop = [np.asarray(im.convert("L").crop(quad).resize((VIEW, VIEW), Image.BICUBIC), float) for im, _ in pics]
        x1, y1, x2, y2 = (int(round(v * VIEW)) for v in box)
        inside = full[0][y1 + 2:y2 - 2, x1 + 2:x2 - 2]
        assert inside.std() < 1.0 and abs(inside.mean() - 127.5) < 2.0  # a flat grey block
        for a in range(3):
            for b in range(a):
                assert np.abs(full[a] - full[b]).max() < 30.0  # rim only, in 255 levels
                assert np.abs(full[a] - full[b]).mean() < 1.0
                assert np.abs(crop[a] - crop[b]).mean() > 20.0


def test_smoke_run(tmp_path) -> None:
    summary = run_visrl_demo(str(tmp_path), VisrlDemoSettings.smoke())
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["before"]["n"] == 4 and "final" in saved["grpo"] and saved["dpo"]["generated_tokens"] > 0
    assert summary["grpo"]["final"]["step"] == 2
