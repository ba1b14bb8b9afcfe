"""Dataset readers (one per file format, ``readers``), synthetic tasks (``synthetic``) and the rows a run
trains on (``load_training_rows``). The row format is ``paddlemix_r1.tasks.rows``'s."""

from __future__ import annotations

from collections.abc import Sequence

SYNTHETIC = ("synthetic_counting", "synthetic_rec", "synthetic_geoqa")


def load_training_rows(dataset: str, *, files: Sequence[str] = (), image_roots: Sequence[str] = (),
                       task: str = "counting", reward_methods: Sequence[str] | None = None,
                       num_samples: int = 64, seed: int = 0) -> list[dict]:
    """The training rows of ``dataset``: "files" (``readers.read_training_files`` on ``files`` with one
    image root per file and, optionally, one accuracy method per file) or a synthetic set of
    ``num_samples`` rows (its accuracy method "default", as VLM-R1 gives a file without one).

    Every row comes out in the reader format: task resolved, gold parsed, ``accu_reward_method`` set.
    """
    from paddlemix_r1.data import synthetic
    from paddlemix_r1.tasks import normalize_rows

    if dataset == "files":
        from paddlemix_r1.data.readers import read_training_files

        if not files:
            raise ValueError("dataset=files needs data files (data_files or data_file_paths)")
        return read_training_files(list(files), list(image_roots), task=task, reward_methods=reward_methods)
    makers = {"synthetic_counting": synthetic.counting_rows, "synthetic_rec": synthetic.rec_rows,
              "synthetic_geoqa": synthetic.geometry_rows}
    if dataset not in makers:
        raise ValueError(f"dataset must be one of {[*SYNTHETIC, 'files']}, got {dataset!r}")
    return normalize_rows(makers[dataset](num_samples, seed=seed), default_task=task)
