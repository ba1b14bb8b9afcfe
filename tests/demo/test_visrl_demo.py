"""The VisRL demo's pipeline end to end at smoke size (the figures come from the full run: docs/visrl.md)."""

from __future__ import annotations

import json

from paddlemix_r1.visrl_demo import VisrlDemoSettings, make_rows, run_visrl_demo


def test_pictures_hide_the_pattern_at_full_view_and_show_it_in_the_crop(tmp_path) -> None:
    import numpy as np
    from PIL import Image

    row = make_rows(1, 0, str(tmp_path))[0]
    img = Image.open(row["images"][0]).convert("L")
    x1, y1, x2, y2 = (int(v * 448) for v in row["evidence"])
    full = np.asarray(img.resize((56, 56), Image.BICUBIC), float)[y1 // 8 + 2:y2 // 8 - 2, x1 // 8 + 2:x2 // 8 - 2]
    q = row["quadrant"]
    crop = img.crop((224 * (q % 2), 224 * (q // 2), 224 * (q % 2) + 224, 224 * (q // 2) + 224)).resize((56, 56))
    c = np.asarray(crop, float)
    assert full.std() < 3.0 and c.std() > 40.0


def test_smoke_run(tmp_path) -> None:
    summary = run_visrl_demo(str(tmp_path), VisrlDemoSettings.smoke())
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["before"]["n"] == 4 and "final" in saved["grpo"] and saved["dpo"]["generated_tokens"] > 0
    assert summary["grpo"]["final"]["step"] == 2
