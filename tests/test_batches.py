"""`run_in_batches` and `pad_batch`: a static-batch model over a set of any size, and `image_files`, the one listing
of a photo folder."""

from __future__ import annotations

import numpy as np
import pytest

from tofu_edge.batches import pad_batch, run_in_batches
from tofu_edge.image_file import image_files


def test_pad_batch_repeats_the_last_image():
    padded = pad_batch(np.arange(2)[:, None], 4)
    assert padded[:, 0].tolist() == [0, 1, 1, 1]


@pytest.mark.parametrize("count", [1, 3, 4, 7])
def test_every_call_gets_the_static_batch_and_every_image_its_output(count):
    images, calls = np.arange(count, dtype=np.float32)[:, None], []

    def run(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return batch * 2

    out = run_in_batches(run, images, 3)
    assert out[:, 0].tolist() == [2 * i for i in range(count)] and set(calls) == {3}


def test_without_a_static_batch_the_set_is_one_call():
    calls = []
    run_in_batches(lambda batch: calls.append(len(batch)) or batch, np.zeros((5, 2)), None)
    assert calls == [5]


def test_image_files_are_sorted_images_once_without_hidden_files(tmp_path):
    for name in ("b.JPG", "a.png", ".hidden.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "c.jpg").symlink_to(tmp_path / "a.png")
    (tmp_path / "folder.jpg").mkdir()
    assert [p.name for p in image_files(tmp_path.iterdir())] == ["a.png", "b.JPG"]
