"""Scoring images with the committed Fashion-MNIST classifier: the sanity figures (real train
images score near the floor, noise and blur far above), the feature cache, input checks and
the evaluate.py command line."""
import gzip
import json
import re
import shutil

import numpy as np
import pytest

from ddpm_ms import viz
from ddpm_ms.cli.evaluate import main
from ddpm_ms.config import Config, DataConfig, DiffusionConfig, SamplingConfig, TrainConfig
from ddpm_ms.data import load_idx_dataset
from ddpm_ms.data.idx import IDX_FILES
from ddpm_ms.data.paths import default_root
from ddpm_ms.metrics.evaluation import (FeatureExtractor, MetricsUnavailable, Reference, cache_dir,
                                        classifier_weights, score_features, score_images, to_uint8_images)
from ddpm_ms.models import UNet, UNetConfig
from ddpm_ms.checkpoint import save_checkpoint


def gaussian_blur(images, sigma=1.0):
    """Separable Gaussian blur of (N, H, W) uint8 images (radius 4 sigma, edges mirrored)."""
    r = int(4 * sigma + 0.5)
    kernel = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    x = np.pad(images.astype(np.float64), ((0, 0), (r, r), (r, r)), mode="symmetric")
    x = sum(w * x[:, i:i + images.shape[1], :] for i, w in enumerate(kernel))
    x = sum(w * x[:, :, i:i + images.shape[2]] for i, w in enumerate(kernel))
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("cache")
    mp.setenv("DDPM_MS_CACHE", str(path))
    yield path
    mp.undo()


@pytest.fixture(scope="module")
def extractor():
    return FeatureExtractor("fashion_mnist")


@pytest.fixture(scope="module")
def reference(cache, extractor):
    return Reference.load("fashion_mnist", extractor)


@pytest.fixture(scope="module")
def train_set():
    images, labels = load_idx_dataset("fashion_mnist", None, "train")
    return images[:2000], np.asarray(labels[:2000], np.int64)


@pytest.fixture(scope="module")
def train_images(train_set):
    return train_set[0]


def test_real_images_score_near_the_floor_and_noise_and_blur_far_above(extractor, reference, train_images):
    real = score_images(train_images, extractor, reference)
    # Measured: 2,000 train images vs the 10,000 test images give FID 4.6 (10,000 give 1.15).
    assert real["fid"] < 10, real
    assert real["precision"] > 0.75 and real["recall"] > 0.75, real
    assert real["inception_score"] > 7, real  # 10 classes, confidently and evenly predicted
    assert max(real["class_histogram"]) < 0.15, real  # each class about 10%

    noise = score_images(np.random.default_rng(0).integers(0, 256, train_images.shape, dtype=np.uint8),
                         extractor, reference)
    test = load_idx_dataset("fashion_mnist", None, "test")[0][:2000]
    blurred = gaussian_blur(test)
    blur = score_images(blurred, extractor, reference)
    # Measured: noise 1309, blur (sigma 1 px) 316.
    assert noise["fid"] > 100 * real["fid"] and blur["fid"] > 20 * real["fid"], (real, noise, blur)
    assert noise["recall"] < 0.05 and blur["recall"] < 0.2, (noise, blur)  # (noise precision is 0.98: see docs/evaluation.md)
    assert noise["inception_score"] < 2, noise


def test_reference_features_are_cached_under_the_classifier_and_data_digests(cache, extractor, reference):
    files = [f for f in cache_dir().glob("fashion_mnist-test-*.npz")  # the embedded copy's entry
             if f == Reference.cache_file("fashion_mnist", extractor)]
    assert len(files) == 1 and f"clf{extractor.fingerprint}" in files[0].name
    again = Reference.load("fashion_mnist", extractor)
    np.testing.assert_array_equal(again.features, reference.features)
    np.testing.assert_allclose(again.mu, reference.mu)
    for damage in (b"", b"PK\x03\x04 cut short", b"damaged"):  # empty, broken zip, not a zip
        files[0].write_bytes(damage)  # a damaged cache is recomputed and rewritten, not trusted
        redone = Reference.load("fashion_mnist", extractor)
        np.testing.assert_allclose(redone.features, reference.features, rtol=1e-5, atol=1e-5)
        assert np.load(files[0])["features"].shape == reference.features.shape
    np.savez(files[0], features=reference.features)  # a cache from before labels were kept is redone
    assert np.array_equal(Reference.load("fashion_mnist", extractor).labels, reference.labels)
    assert "labels" in np.load(files[0]).files
    assert np.bincount(reference.labels).tolist() == [1000] * 10  # the test set's labels, 1,000 per class


def test_a_copy_with_other_labels_gets_its_own_cache_entry(cache, extractor, reference, tmp_path):
    """The same test images with relabelled classes must not reuse the cached labels (the per-class
    scores read them), while the images' features come out the same."""
    image_name, label_name = IDX_FILES["test"]
    before = set(cache_dir().glob("fashion_mnist-test-*.npz"))
    shutil.copy(default_root("fashion_mnist") / image_name, tmp_path / image_name)
    relabelled = (reference.labels + 1) % 10
    with gzip.open(tmp_path / label_name, "wb") as f:
        f.write(b"\x00\x00\x08\x01" + len(relabelled).to_bytes(4, "big") + relabelled.astype(np.uint8).tobytes())
    copy = Reference.load("fashion_mnist", extractor, root=tmp_path)
    np.testing.assert_array_equal(copy.labels, relabelled)
    np.testing.assert_allclose(copy.features, reference.features, rtol=1e-5, atol=1e-5)
    assert len(set(cache_dir().glob("fashion_mnist-test-*.npz")) - before) == 1  # a new entry, the old one kept
    np.testing.assert_array_equal(Reference.load("fashion_mnist", extractor).labels, reference.labels)


def test_class_scores_point_at_the_class_that_is_wrong(extractor, reference, train_set):
    images, labels = train_set
    clean = score_images(images, extractor, reference, labels)
    # Measured: class accuracy 0.957, class FIDs 6.5-26.9 at about 200 images per class.
    assert clean["class_accuracy"] > 0.9 and len(clean["class_fid"]) == 10, clean
    assert max(clean["class_fid"]) < 60, clean["class_fid"]
    # Draws "for" class 9 (ankle boot) that are really sneakers (class 7): that class alone goes wrong.
    swapped = images.copy()
    swapped[labels == 9] = images[labels == 7][:int(np.sum(labels == 9))]
    wrong = score_images(swapped, extractor, reference, labels)
    assert wrong["class_fid"][9] > 10 * clean["class_fid"][9], (clean["class_fid"], wrong["class_fid"])  # 2339
    assert wrong["class_fid"][:9] == clean["class_fid"][:9]
    share9 = np.mean(labels == 9)
    assert wrong["class_accuracy"] < clean["class_accuracy"] - 0.8 * share9, (clean, wrong)
    assert score_images(images, extractor, reference, labels.astype(np.uint8)) == clean  # IDX labels are uint8
    assert "class_fid" not in score_images(images, extractor, reference)  # no labels, no class scores
    one_class = score_images(images[:50], extractor, reference, np.zeros(50, np.int64))
    # 50 images of all classes "drawn for" T-shirts: only class 0 is scored, and badly.
    assert one_class["class_fid"][1:] == [None] * 9 and one_class["class_fid"][0] > 5 * clean["class_fid"][0]


@pytest.mark.parametrize("labels, needle", [
    (np.zeros(3, np.int64), "one class per image: got shape (3,) for 20 images"),
    (np.zeros(20, np.float32), "integer classes, got float32"),
    (np.full(20, 10), "0..9"),
])
def test_wrong_labels_are_named(extractor, reference, train_images, labels, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        score_images(train_images[:20], extractor, reference, labels)


def test_precision_and_recall_compare_equal_sized_sets(reference):
    subset, radii = reference.manifold(500)
    assert subset.shape == (500, 128) and radii.shape == (500,)
    assert reference.manifold(500)[0] is subset  # one fixed subset per size
    rows = {tuple(r) for r in reference.features[:, :4].round(5)}
    assert all(tuple(r) in rows for r in subset[:, :4].round(5))  # drawn from the real features
    assert len(reference.manifold(10 ** 6)[0]) == len(reference.features)


def test_float_samples_and_their_uint8_copy_score_the_same(extractor, reference, train_images):
    floats = train_images[:300, None].astype(np.float32) / 127.5 - 1.0
    assert np.array_equal(to_uint8_images(floats, (1, 28, 28))[:, 0], train_images[:300])
    a, b = score_images(floats, extractor, reference), score_images(train_images[:300, :, :, None], extractor, reference)
    assert a == b
    features, probs = extractor(train_images[:300])
    assert features.shape == (300, 128) and probs.shape == (300, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert score_features(features, probs, reference) == a


@pytest.mark.parametrize("images, needle", [
    (np.zeros((4, 3, 28, 28), np.float32), "(N, 1, 28, 28)"),
    (np.full((4, 1, 28, 28), np.nan, np.float32), "NaN"),
    (np.zeros((4, 32, 32, 3), np.uint8), "28x28 with 1 channel"),
    (np.full((4, 1, 28, 28), 0.5, np.float32), "[0, 1]"),
])
def test_wrong_images_are_named(images, needle):
    with pytest.raises(ValueError) as e:
        to_uint8_images(images, (1, 28, 28))
    assert needle in str(e.value)


def test_data_without_a_classifier_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(MetricsUnavailable, match="there is none for .cats."):
        classifier_weights("cats")
    # CIFAR-10 is scored, but its classifier is not committed: the error names where it looked and the fix
    monkeypatch.setenv("DDPM_MS_CLASSIFIER_DIR", str(tmp_path))
    with pytest.raises(MetricsUnavailable) as e:
        classifier_weights("cifar10")
    assert str(tmp_path / "cifar10_classifier.ckpt") in str(e.value)
    assert "train_classifier.py --data cifar10" in str(e.value)


def evaluate_cli(*argv):
    return main([*map(str, argv), "--device", "CPU", "--no-progress"])


def test_npz_from_elsewhere_is_scored(cache, reference, train_images, train_set, tmp_path, capsys):
    path = tmp_path / "samples.npz"
    np.savez(path, train_images[:500, :, :, None])
    assert evaluate_cli("--npz", path, "--data", "fashion_mnist") == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["num"] == 500 and record["npz"] == str(path) and record["fid"] < 25, record
    assert set(record) >= {"fid", "inception_score", "precision", "recall", "class_histogram", "reference"}
    assert "class_accuracy" not in record
    viz.save_npz(train_images[:500, None] / 127.5 - 1.0, path, labels=train_set[1][:500])  # as evaluate.py writes
    assert evaluate_cli("--npz", path, "--data", "fashion_mnist") == 0
    labelled = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert labelled["fid"] == record["fid"] and labelled["class_accuracy"] > 0.9 and len(labelled["class_fid"]) == 10
    # Drawn by a model with more classes than the classifier (as evaluate.py --save-npz writes them): scored
    # like that model itself, without per-class scores.
    viz.save_npz(train_images[:500, None] / 127.5 - 1.0, path, labels=np.arange(500) % 12)
    assert evaluate_cli("--npz", path, "--data", "fashion_mnist") == 0
    captured = capsys.readouterr()
    wide = json.loads(captured.out.strip().splitlines()[-1])
    assert wide["fid"] == record["fid"] and "class_accuracy" not in wide, wide
    assert "labels 0..11 are not the classifier's classes 0..9" in captured.err
    np.savez(path, train_images[:500], labels=np.zeros(499, np.int64))
    assert evaluate_cli("--npz", path, "--data", "fashion_mnist") == 2
    assert "500 images but labels of shape (499,)" in capsys.readouterr().err


def make_run(path, image_size=(28, 28), channels=1, num_classes=0):
    cfg = Config(preset="tiny", model=UNetConfig(image_size=image_size, channels=channels, dim=8, dim_mults=(1, 2),
                                                  num_classes=num_classes),
                 diffusion=DiffusionConfig(timesteps=20), data=DataConfig(),
                 train=TrainConfig(sample_steps=5), sampling=SamplingConfig(guidance_scale=1.5 if num_classes else 1.0))
    path.mkdir(parents=True)
    cfg.save(path / "config.json")
    save_checkpoint(UNet(cfg.model), path / "checkpoints" / "step_0000007.ckpt", {"step": 7, "epoch": 0})
    return path


@pytest.mark.slow
def test_model_evaluation_prints_and_logs_one_record_per_call(cache, reference, tmp_path, capsys):
    run = make_run(tmp_path / "run")
    for sampler, steps, spacing in (("ddim", 3, "leading"), ("dpm++sde", 2, "trailing")):
        assert evaluate_cli("--run", run, "--sampler", sampler, "--steps", steps, "--spacing", spacing, "--num", 40,
                            "--batch-size", 20, "--grid", tmp_path / f"{sampler}.png",
                            "--save-npz", tmp_path / f"{sampler}.npz") == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    logged = [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines()]
    assert printed == logged and [(r["sampler"], r["spacing"]) for r in logged] == [("ddim", "leading"),
                                                                                  ("dpm++sde", "trailing")]
    first = logged[0]
    assert first["steps"] == 3 and first["num"] == 40 and first["step"] == 7 and first["seconds"] > 0
    # Where each chain started: DDIM's leading grid at 2T/3; the SDE's trailing grid at T-1, unclipped.
    assert [(r["first_timestep"], "lambda_min_clipped" in r) for r in logged] == [(13, False), (19, False)]
    assert first["fid"] > 100, first  # an untrained model's samples are far from clothes
    assert (tmp_path / "ddim.png").is_file()
    # The saved images score exactly as the model's own record (the SDE's noise included).
    assert evaluate_cli("--npz", tmp_path / "dpm++sde.npz", "--data", "fashion_mnist") == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["fid"] == logged[1]["fid"] and again["precision"] == logged[1]["precision"]
    # --report lays the run's records out as a Markdown table.
    assert evaluate_cli("--report", run) == 0
    table = capsys.readouterr().out.strip().splitlines()
    assert len(table) == 4 and table[0].startswith("| training step |") and "guidance" not in table[0]
    assert table[2].split(" | ")[2:8] == ["ddim", "3", "leading", "13", "40", str(logged[0]["fid"])]


def test_a_solver_order_other_than_2_is_recorded_and_reported(cache, reference, tmp_path, capsys):
    run = make_run(tmp_path / "run")
    for extra in ((), ("--solver-order", "2"), ("--solver-order", "3")):
        assert evaluate_cli("--run", run, "--steps", 6, "--num", 8, *extra) == 0
    default, two, three = (json.loads(line) for line in capsys.readouterr().out.strip().splitlines())
    assert "solver_order" not in default and default["fid"] == two["fid"]  # 2 is the default and is not named
    assert three["solver_order"] == 3 and three["fid"] != default["fid"]
    assert evaluate_cli("--report", run) == 0
    samplers = [line.split(" | ")[2] for line in capsys.readouterr().out.strip().splitlines()[2:]]
    assert sorted(samplers) == ["dpm++", "dpm++", "dpm++ 3M"]
    assert evaluate_cli("--run", run, "--num", 8, "--sampler", "ddim", "--solver-order", "1") == 2
    assert "--solver-order applies to --sampler dpm++ and dpm++sde, not ddim" in capsys.readouterr().err
    assert evaluate_cli("--run", run, "--num", 8, "--sampler", "ddpm", "--lambda-min-clipped", "-4") == 2
    assert "--lambda-min-clipped applies to --sampler dpm++ and dpm++sde, not ddpm" in capsys.readouterr().err
    assert evaluate_cli("--npz", tmp_path / "x.npz", "--data", "fashion_mnist", "--solver-order", "3") == 2
    assert "--solver-order applies to a model" in capsys.readouterr().err


@pytest.mark.parametrize("argv, needle", [
    (["--npz", "x.npz"], "--npz needs --data"),
    (["--npz", "missing.npz", "--data", "mnist"], "does not exist"),
    (["--run", "no/such/run"], "does not exist"),
    (["--npz", "x.npz", "--data", "mnist", "--num", "100"], "--num applies to a model"),
    (["--run", "r", "--num", "3"], "at least 4"),
])
def test_bad_arguments_exit_with_a_message(argv, needle, capsys):
    try:
        code = evaluate_cli(*argv)
    except SystemExit as e:  # argparse's own checks
        code = e.code
    assert code == 2
    assert needle in capsys.readouterr().err


def test_a_class_conditional_model_is_scored_with_its_guidance(cache, reference, tmp_path, capsys):
    run = make_run(tmp_path / "cond", num_classes=10)
    for extra in ((), ("--guidance-scale", "0"), ("--guidance-rescale", "1"), ("--guidance-interval", "0,10")):
        assert evaluate_cli("--run", run, "--steps", 2, "--num", 8, *extra) == 0
    default, unguided, rescaled, limited = (json.loads(line) for line in capsys.readouterr().out.strip().splitlines())
    assert default["guidance_scale"] == 1.5 and unguided["guidance_scale"] == 0.0  # the run's own, then the flag's
    assert "guidance_rescale" not in default and rescaled["guidance_rescale"] == 1.0
    assert "guidance_interval" not in default and limited["guidance_interval"] == [0, 10]
    # 8 images, one each of classes 0-7: a class needs 2 for a covariance, so no class FID yet.
    assert "class_accuracy" in default and default["class_fid"] == [None] * 10
    # DPM-Solver++ cuts its grid at log-SNR -4.3: t = 19 of this 20-step cosine schedule lies below.
    assert default["lambda_min_clipped"] == -4.3 and default["first_timestep"] == 18
    assert len({default["fid"], unguided["fid"], rescaled["fid"], limited["fid"]}) == 4
    assert evaluate_cli("--report", run) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("| class acc. | sampling s | guidance | rescale | guided t |"), lines[0]
    assert lines[-1].endswith("| 1.5 |  | 0-10 |"), lines[-1]
    plain = make_run(tmp_path / "plain")
    for flag in ("--guidance-scale", "--guidance-rescale"):
        assert evaluate_cli("--run", plain, "--num", 4, flag, "1") == 2
        assert f"{flag} applies to class-conditional models" in capsys.readouterr().err


def test_corrupt_npz_and_colour_models_are_refused(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    assert evaluate_cli("--npz", bad, "--data", "fashion_mnist") == 2
    assert "not a readable .npz" in capsys.readouterr().err
    np.save(tmp_path / "plain.npy", np.zeros((5, 28, 28), np.uint8))
    assert evaluate_cli("--npz", tmp_path / "plain.npy", "--data", "fashion_mnist") == 2
    assert "is a .npy array, not an .npz" in capsys.readouterr().err
    np.savez(bad, labels=np.zeros(5, np.int64))
    assert evaluate_cli("--npz", bad, "--data", "fashion_mnist") == 2
    assert "holds labels; put the images under arr_0" in capsys.readouterr().err
    np.savez(bad, np.zeros((5, 28, 28), np.uint8), labels=np.zeros(5))
    assert evaluate_cli("--npz", bad, "--data", "fashion_mnist") == 2
    assert "holds float64 labels" in capsys.readouterr().err
    run = make_run(tmp_path / "rgb", image_size=(16, 16), channels=3)
    assert evaluate_cli("--run", run, "--num", 4) == 2
    assert "3-channel 16x16 images but fashion_mnist's classifier scores 1-channel 28x28" in capsys.readouterr().err
    assert not (run / "eval.jsonl").exists()


def test_mnist_classifier_scores_digits_near_the_floor_and_clothes_far_above(mnist_dir):
    extractor = FeatureExtractor("mnist")
    reference = Reference.load("mnist", extractor, mnist_dir)
    digits = score_images(load_idx_dataset("mnist", mnist_dir, "train")[0][:2000], extractor, reference)
    clothes = score_images(load_idx_dataset("fashion_mnist", None, "test")[0][:2000], extractor, reference)
    # Measured: 2,000 train digits give FID 14.4 (10,000 give 5.5); 2,000 Fashion-MNIST images 1388.
    assert digits["fid"] < 25 and digits["inception_score"] > 9, digits
    assert clothes["fid"] > 30 * digits["fid"] and clothes["recall"] < 0.1, clothes


def test_the_runs_own_data_folder_is_the_reference(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    cfg = Config.load(run)
    cfg.data.root = str(tmp_path / "my_fashion")  # trained from a folder: its test split is scored against
    cfg.save(run / "config.json")
    assert evaluate_cli("--run", run, "--num", 4) == 2
    err = capsys.readouterr().err
    assert "my_fashion" in err and "--data-root DIR" in err and "--data DIR" not in err, err


def per_class(path, *argv):
    """evaluate.py --per-class on an .npz of Fashion-MNIST-shaped images; its exit code."""
    return evaluate_cli("--npz", path, "--data", "fashion_mnist", "--per-class", *argv)


def table_rows(err):
    """The Markdown table on stderr, each row split at " | "."""
    return [line.split(" | ") for line in err.splitlines() if line.startswith("| ")]


def test_per_class_table_sets_each_class_against_its_floor(cache, reference, tmp_path, capsys):
    test, labels = load_idx_dataset("fashion_mnist", None, "test")
    keep = np.concatenate([np.flatnonzero(labels == c)[:30] for c in range(10)])
    good, bad = tmp_path / "good.npz", tmp_path / "bad.npz"
    viz.save_npz(test[keep, None] / 127.5 - 1.0, good, labels=labels[keep])
    swapped = test[keep].copy()
    swapped[labels[keep] == 9] = test[keep][labels[keep] == 7]  # "ankle boots" that are sneakers
    viz.save_npz(swapped[:, None] / 127.5 - 1.0, bad, labels=labels[keep])
    assert list(np.load(good).files) == ["arr_0", "labels"]  # images first, as FID tools read them
    records, tables = [], []
    for path in (good, bad):
        assert per_class(path) == 0
        out, err = capsys.readouterr()
        records.append(json.loads(out.strip().splitlines()[-1]))
        tables.append(table_rows(err))
    (g, b), (good_rows, bad_rows) = records, tables
    # The floor: 30 train images of each class against that class's test images, the same for both files.
    assert g["class_fid_floor"] == b["class_fid_floor"] and all(f > 0 for f in g["class_fid_floor"]), g
    assert g["fid_floor"] == b["fid_floor"] > 0 and g["num"] == 300
    assert good_rows[0][0] == "| class" and len(good_rows) == 13, good_rows  # head, rule, 10 classes, all
    boot, bad_boot, sneaker, bad_sneaker = good_rows[2 + 9], bad_rows[2 + 9], good_rows[2 + 7], bad_rows[2 + 7]
    assert boot[0] == "| Ankle boot" and boot[1] == "30" and boot[3] == f"{g['class_fid_floor'][9]:.2f}", boot
    assert float(bad_boot[2]) > 10 * float(boot[2]) and float(bad_boot[4]) > 10 * float(boot[4]), (boot, bad_boot)
    assert sneaker[2:] == bad_sneaker[2:] and b["class_fid"][7] == g["class_fid"][7]  # the sneakers are the same
    assert b["class_accuracy_by_class"][9] < 0.1 < 0.8 < g["class_accuracy_by_class"][9]  # bad's boots: sneakers (good: 0.9)
    assert bad_rows[-1][0] == "| all classes" and bad_rows[-1][2] == f"{b['fid']:.2f}", bad_rows[-1]
    # Classes drawn unequally often: each class against as many real images as it has samples.
    np.savez(bad, test[:25, :, :, None], labels=labels[:25])
    assert per_class(bad) == 0
    out, err = capsys.readouterr()
    uneven = json.loads(out.strip().splitlines()[-1])
    counts = np.bincount(labels[:25], minlength=10)
    assert [f is None for f in uneven["class_fid_floor"]] == [n < 2 for n in counts], (counts, uneven)
    assert [row[1] for row in table_rows(err)[2:12]] == [str(n) for n in counts]


def test_per_class_refuses_what_it_cannot_table(cache, reference, tmp_path, capsys):
    images, labels = np.zeros((20, 28, 28), np.uint8), np.arange(20) % 10
    np.savez(tmp_path / "unlabelled.npz", images)
    np.savez(tmp_path / "wide.npz", images, labels=labels + 5)  # a model with more classes than the classifier
    np.savez(tmp_path / "ok.npz", images, labels=labels)
    for name in ("unlabelled", "wide"):
        assert per_class(tmp_path / f"{name}.npz") == 2
        assert f"--per-class needs the class of every image: {tmp_path / name}.npz" in capsys.readouterr().err
    assert per_class(tmp_path / "ok.npz", "--no-floor") == 2
    assert "drop --no-floor" in capsys.readouterr().err
    # A data folder without the train split: the floor's images are missing, and the flag to fix it is named.
    (tmp_path / "test_only").mkdir()
    for name in IDX_FILES["test"]:
        shutil.copy(default_root("fashion_mnist") / name, tmp_path / "test_only" / name)
    assert per_class(tmp_path / "ok.npz", "--data-root", tmp_path / "test_only") == 2
    err = capsys.readouterr().err
    assert "--data-root DIR" in err and "--data DIR" not in err and "Traceback" not in err, err
    assert evaluate_cli("--run", make_run(tmp_path / "plain"), "--num", 10, "--per-class") == 2
    assert "--per-class needs a class-conditional model" in capsys.readouterr().err


def test_per_class_on_a_class_conditional_model(cache, reference, tmp_path, capsys):
    run = make_run(tmp_path / "cond", num_classes=10)
    assert evaluate_cli("--run", run, "--steps", 2, "--num", 20, "--per-class") == 0
    out, err = capsys.readouterr()
    record = json.loads(out.strip().splitlines()[-1])
    assert json.loads((run / "eval.jsonl").read_text()) == record  # logged like any evaluation
    # Every class drawn twice: each class's FID and floor over 2 images.
    assert [row[1] for row in table_rows(err)[2:12]] == ["2"] * 10
    assert None not in record["class_fid"] and all(f > 0 for f in record["class_fid_floor"]), record
    wide = make_run(tmp_path / "wide", num_classes=12)  # more classes than the classifier knows
    assert evaluate_cli("--run", wide, "--num", 24, "--per-class") == 2
    assert "at most the classifier's 10 classes; this one has 12" in capsys.readouterr().err


def test_steered_and_single_class_evaluations_are_recorded(cache, reference, tmp_path, capsys):
    run = make_run(tmp_path / "cond", num_classes=10)
    assert evaluate_cli("--run", run, "--steps", 3, "--num", 8, "--no-log") == 0
    assert evaluate_cli("--run", run, "--steps", 3, "--num", 8, "--no-log", "--class-label", "none",
                        "--color", "#ffffff", "--color-scale", "30", "--loss-guidance-interval", "0,10") == 0
    plain, steered = (json.loads(line) for line in capsys.readouterr().out.strip().splitlines())
    assert steered["class_label"] == "none" and "class_label" not in plain
    assert steered["loss_guidance"] == [{"term": "colour #ffffff", "scale": 30.0, "interval": [0, 10]}]
    assert steered["guidance_through_model"] is False and "class_accuracy" not in steered  # no class to check
    assert steered["fid"] != plain["fid"]
    assert evaluate_cli("--run", run, "--num", 8, "--class-label", "tiger") == 2
    assert "class 'tiger' is not one of this model's classes" in capsys.readouterr().err
    assert evaluate_cli("--npz", tmp_path / "x.npz", "--data", "fashion_mnist", "--color", "1,2,3") == 2
    assert "--color applies to a model" in capsys.readouterr().err
