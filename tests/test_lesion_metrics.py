"""Contrast recovery and background variability (shared.evaluation.lesions) and the generator's lesion truth."""
import numpy as np
import pytest

from shared.evaluation.lesions import by_method, lesion_metrics, lesion_rois


def _phantom(hot=4.0, cold=0.25, size=64):
    """A uniform body (activity 1) with one hot disc (label 1, r 6) and one cold disc (label 2, r 5)."""
    yy, xx = np.mgrid[:size, :size]
    body = np.hypot(yy - 32, xx - 32) < 30
    labels = np.zeros((size, size), np.float32)
    labels[np.hypot(yy - 22, xx - 22) < 6] = 1
    labels[np.hypot(yy - 42, xx - 42) < 5] = 2
    truth = body * 1.0
    truth = np.where(labels == 1, hot, np.where(labels == 2, cold, truth))
    return truth[None, None], labels[None, None], body[None, None]


def test_crc_is_one_for_the_truth_zero_when_the_lesion_vanishes_and_scale_free():
    truth, labels, body = _phantom()
    flat = body * 1.0  # the lesions are gone: background everywhere
    rows = lesion_metrics({"truth": truth, "double": 2 * truth, "flat": flat}, truth, labels, body, pixel_mm=2.0)
    assert [(r["label"], r["kind"]) for r in rows] == [(1, "hot"), (2, "cold")]
    assert rows[0]["true_ratio"] == pytest.approx(4.0) and rows[1]["true_ratio"] == pytest.approx(0.25)
    for r in rows:
        assert r["crc_truth"] == pytest.approx(1.0) and r["bv_truth"] == pytest.approx(0.0)
        assert r["crc_double"] == pytest.approx(1.0)  # a global scale does not change contrast
        assert r["crc_flat"] == pytest.approx(0.0)
    assert rows[0]["radius_mm"] == pytest.approx(2.0 * np.sqrt((labels == 1).sum() / np.pi))


def test_half_the_contrast_is_crc_one_half_and_noise_is_bv():
    truth, labels, body = _phantom()
    half = np.where(labels == 1, 2.5, np.where(labels == 2, 0.625, truth))  # 1 + (4 − 1)/2, 1 − 0.75/2
    noisy = truth + np.random.default_rng(0).normal(0, 0.1, truth.shape) * body
    rows = lesion_metrics({"half": half, "noisy": noisy}, truth, labels, body, pixel_mm=1.0)
    assert [r["crc_half"] for r in rows] == pytest.approx([0.5, 0.5])
    assert [r["bv_noisy"] for r in rows] == pytest.approx([0.1, 0.1], rel=0.3)
    per = by_method(rows, ["half"])["half"]
    assert list(per["crc_hot"]) == pytest.approx([0.5]) and list(per["crc_cold"]) == pytest.approx([0.5])


def test_background_ring_keeps_away_from_lesions_and_outside_the_body():
    truth, labels, body = _phantom()
    for les in lesion_rois(labels[0, 0], body[0, 0]):
        bg = les["background"]
        assert bg.sum() >= 8 and not (bg & (labels[0, 0] > 0)).any() and not (bg & ~body[0, 0]).any()


def test_a_lesion_as_bright_as_its_surroundings_is_skipped():
    truth, labels, body = _phantom(hot=1.1)
    rows = lesion_metrics({"truth": truth}, truth, labels, body, pixel_mm=1.0)
    assert [r["label"] for r in rows] == [2]


def test_generator_lesion_labels_sit_on_the_lesions(projector_cache, tmp_path):
    """Labels 1-4 mark regions hotter than their ring, 5-6 colder; no label outside the body."""
    from shared.data.synthetic import make_synthetic_dataset

    ds = make_synthetic_dataset(tmp_path / "d", 16, 1, 1, seed=3, counts=1e5, montage=False, progress=False,
                                image_size=64, pixel_mm=6.0, n_radial=64, n_angles=32)
    sp = ds.split("train")
    labels, act, body = np.array(sp.lesionMap), np.array(sp.actMap), np.array(sp.attenMap) > 0
    assert ds.has_lesions and set(np.unique(labels)) <= set(range(7)) and not (labels[~body] > 0).any()
    rows = lesion_metrics({"truth": act}, act, labels, body, pixel_mm=6.0)
    assert len(rows) >= 5
    for r in rows:
        assert r["kind"] == ("hot" if r["label"] <= 4 else "cold"), r
