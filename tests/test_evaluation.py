"""Reference classifier, judge() and the sample .npz format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fundiff.errors import FundiffError
from fundiff.evaluation import (
    judge,
    judged_name,
    load_classifier,
    predict,
    quantize,
    read_samples,
    save_classifier,
    save_judged,
    synthetic_digits,
    train_classifier,
    write_samples,
)
from fundiff.storage import write_json

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    train_x, train_y = synthetic_digits(600, generator=g)
    test_x, test_y = synthetic_digits(200, generator=g)
    return train_x, train_y, test_x, test_y


@pytest.fixture(scope="module")
def classifier(data):
    train_x, train_y, test_x, test_y = data
    return train_classifier(
        train_x, train_y, test_x, test_y, epochs=3, seed=0, width=16, batch_size=32
    )


def test_synthetic_digits() -> None:
    x, y = synthetic_digits(50, generator=torch.Generator().manual_seed(1))
    assert x.shape == (50, 28, 28) and x.dtype == torch.uint8
    assert y.dtype == torch.int64 and torch.equal(torch.bincount(y), torch.full((10,), 5))
    assert (x == 0).float().mean() > 0.5 and x.max() > 150  # black background, bright strokes
    # classes differ on average
    means = torch.stack([x[y == d].float().mean(0) for d in range(10)])
    assert (means[1] - means[8]).abs().mean() > 10


def test_classifier_learns_and_judge_separates(classifier, data) -> None:
    model, metrics = classifier
    _, _, test_x, test_y = data
    assert metrics["test_accuracy"] > 0.9
    samples = test_x.float()[:, None] / 255
    good = judge(model, samples, test_y)
    shuffled = judge(model, samples, (test_y + 1) % 10)
    assert good["accuracy"] > 0.9 and shuffled["accuracy"] < 0.2
    assert good["n"] == good["n_scored"] == 200
    assert set(good["per_digit"]) == {str(d) for d in range(10)}
    conf = torch.tensor(good["confusion"])
    assert conf.shape == (10, 10) and conf.sum() == 200
    assert torch.equal(conf.sum(1), torch.bincount(test_y, minlength=10))
    assert conf.diag().sum() / 200 == pytest.approx(good["accuracy"])
    assert sum(good["predicted_histogram"]) == 200


def test_judge_unconditional_and_errors(classifier, data) -> None:
    model, _ = classifier
    _, _, test_x, test_y = data
    samples = test_x[:20].float()[:, None] / 255
    res = judge(model, samples, torch.full((20,), -1))
    assert (
        res["accuracy"] is None and res["n_scored"] == 0 and sum(res["predicted_histogram"]) == 20
    )
    mixed = judge(model, samples, torch.cat([test_y[:10], torch.full((10,), -1)]))
    assert mixed["n_scored"] == 10
    assert judge(model, samples, None)["accuracy"] is None
    with pytest.raises(FundiffError):
        judge(model, samples, test_y[:5])


def test_classifier_save_load(classifier, data, tmp_path: Path) -> None:
    model, metrics = classifier
    _, _, test_x, _ = data
    path = save_classifier(model, tmp_path / "clf.safetensors", metrics)
    loaded = load_classifier(path)
    assert torch.equal(predict(loaded, test_x), predict(model, test_x))
    with pytest.raises(FundiffError):
        load_classifier(tmp_path / "missing.safetensors")


def test_classifier_is_seeded(data) -> None:
    train_x, train_y, _, _ = data
    a, _ = train_classifier(train_x[:100], train_y[:100], epochs=1, seed=5, width=8)
    b, _ = train_classifier(train_x[:100], train_y[:100], epochs=1, seed=5, width=8)
    c, _ = train_classifier(train_x[:100], train_y[:100], epochs=1, seed=6, width=8)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_samples_npz_format(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 28, 28, generator=g)
    x[0] = 0.0
    labels = torch.tensor([0, 1, 2, 3, -1, -1])
    p = write_samples(tmp_path / "s.npz", x, labels)
    with np.load(p) as d:
        assert set(d.files) == {"images", "labels"}
        assert d["images"].dtype == np.uint8 and d["images"].shape == (6, 28, 28)
        assert (d["images"][0] == 0).all()  # 0 = background
        assert d["labels"].dtype == np.int64 and d["labels"].tolist() == [0, 1, 2, 3, -1, -1]
    back, lab = read_samples(p)
    assert back.shape == (6, 1, 28, 28) and (back - x).abs().max() <= 0.5 / 255 + 1e-6
    assert torch.equal(lab, labels)
    p2 = write_samples(tmp_path / "u.npz", x[:, 0], None)
    assert read_samples(p2)[1].tolist() == [-1] * 6


def test_samples_npz_rejects_bad_files(tmp_path: Path) -> None:
    np.savez(
        tmp_path / "float.npz",
        images=np.zeros((2, 28, 28), np.float32),
        labels=np.zeros(2, np.int64),
    )
    np.savez(tmp_path / "nolabels.npz", images=np.zeros((2, 28, 28), np.uint8))
    np.savez(
        tmp_path / "count.npz", images=np.zeros((2, 28, 28), np.uint8), labels=np.zeros(3, np.int64)
    )
    for name in ("float", "nolabels", "count"):
        with pytest.raises(FundiffError, match=name):
            read_samples(tmp_path / f"{name}.npz")
    with pytest.raises(FundiffError):
        write_samples(tmp_path / "x.npz", torch.rand(2, 3, 28, 28))


def test_truncated_classifier_names_the_file_and_the_rebuild(classifier, tmp_path: Path) -> None:
    path = save_classifier(classifier[0], tmp_path / "judge.safetensors")
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(FundiffError, match=r"judge\.safetensors is truncated.*train_classifier"):
        load_classifier(path)


def test_classifier_result_files_are_identical_across_reruns(data, tmp_path: Path) -> None:
    """No timing (or anything else run-dependent) in metrics.json or the weights' metadata."""
    train_x, train_y, test_x, test_y = data
    outputs = []
    for attempt in ("a", "b"):
        model, metrics = train_classifier(
            train_x[:128], train_y[:128], test_x, test_y, epochs=1, seed=0, width=8, batch_size=32
        )
        save_classifier(model, tmp_path / attempt / "model.safetensors", metrics)
        write_json(tmp_path / attempt / "metrics.json", metrics)
        outputs.append(
            [(tmp_path / attempt / f).read_bytes() for f in ("metrics.json", "model.safetensors")]
        )
    assert outputs[0] == outputs[1]
    assert "seconds" not in json.loads(outputs[0][0])


def test_embed_is_the_penultimate_layer(classifier, data) -> None:
    model, _ = classifier
    x = data[2][:16].float()[:, None] / 255
    with torch.no_grad():
        f = model.embed(x)
        assert f.shape == (16, 128) and (f >= 0).all()
        assert torch.allclose(model.head[-1](f), model(x), atol=1e-5)


def test_quantize_is_what_the_judge_sees() -> None:
    x = torch.tensor([-0.2, 0.0, 0.3, 1 / 255 * 0.6, 1.4]).view(5, 1, 1, 1).expand(5, 1, 28, 28)
    q = quantize(x)
    assert q.shape == (5, 1, 28, 28)
    assert (q[:, 0, 0, 0] * 255).tolist() == pytest.approx([0, 0, 76, 1, 255])
    assert torch.equal(quantize((q * 255).round().to(torch.uint8)[:, 0]), q)
    with pytest.raises(FundiffError, match="judged images"):
        quantize(torch.zeros(2, 3, 28, 28))


def test_save_judged_roundtrip(tmp_path: Path) -> None:
    x = quantize(torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0)))
    p = save_judged(tmp_path / "a" / judged_name("inpaint", 7, "inpainted"), x, 7)
    assert p.name == "inpaint__7__inpainted.npz"
    back, lab = read_samples(p)
    assert torch.equal(back, x) and lab.tolist() == [7] * 4  # lossless on the 1/255 grid
    p2 = save_judged(tmp_path / "b.npz", (x * 255).round().to(torch.uint8)[:, 0], [1, 2, 3, 4])
    assert torch.equal(read_samples(p2)[0], x) and read_samples(p2)[1].tolist() == [1, 2, 3, 4]


def test_judged_name_is_unambiguous() -> None:
    assert judged_name("anagrams", "6_9 vflip", "view") == "anagrams__6_9-vflip__view.npz"
    assert judged_name("sdedit", "digit.3", "level0.5") == "sdedit__digit.3__level0.5.npz"
    for odd in ("8__3", "_8_", "8/3", "8___"):
        task, item, view = judged_name("hybrids", odd, "far").removesuffix(".npz").split("__")
        assert (task, view) == ("hybrids", "far") and item.strip("_-") == item and item
    with pytest.raises(FundiffError, match="task, an item and a view"):
        judged_name("x", "__", "far")
