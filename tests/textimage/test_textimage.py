"""The text-image model: its tokenizer reads spellings it never saw through shared n-grams, held-out
phrases never appear in training, a model trained on images the test draws learns to name them, the
shipped model names Fashion-MNIST and MNIST test images zero-shot (>= 85% clean, >= 70% with held-out
phrases), it saves and loads, and TextGuidance steers sampling with it or with any encoder pair."""
import json

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn, ops

from ddpm_ms.data import load_idx_dataset
from ddpm_ms.diffusion import NoiseSchedule
from ddpm_ms.sampling import DDIMScheduler, sample
from ddpm_ms.textimage import TextGuidance, TextImageConfig, TextImageModel, load_text_image_model
from ddpm_ms.textimage.model import SHIPPED
from ddpm_ms.textimage.contrastive import LabelledImages, phrase_accuracy, train, zero_shot_accuracy
from ddpm_ms.registry import DATASETS
from ddpm_ms.textimage.vocab import TEMPLATES, class_phrases, tokenize, word_grams, words, worded_datasets


def test_a_new_spelling_shares_most_of_its_rows_with_a_known_one():
    known, new = set(word_grams("sneaker")), set(word_grams("sneakers"))
    assert len(known & new) / len(new) > 0.6
    assert len(set(word_grams("sneaker")) & set(word_grams("trouser"))) <= 2  # unrelated words share little ("er>")
    rows = tokenize(["A photo of a T-Shirt", "x " * 30 + "bag"])
    assert rows.shape == (2, 12, 24) and rows.dtype == np.int32
    assert (rows[0, 6:] == 0).all() and (rows[0, :6] > 0).any(axis=1).all()  # 6 words, the rest padding
    np.testing.assert_array_equal(rows[1, 11], tokenize("bag")[0, 0])  # a long text keeps its last words
    assert words("Ankle-Boots!") == ["ankle", "boots"]
    with pytest.raises(ValueError, match="has no words"):
        tokenize(["?!"])


@pytest.mark.parametrize("dataset", worded_datasets())
def test_held_out_phrases_never_appear_in_training(dataset):
    for label in range(len(DATASETS[dataset].class_words)):
        train_set = {" ".join(words(p)) for p in class_phrases(dataset, label, "train")}
        held = {" ".join(words(p)) for p in class_phrases(dataset, label, "held_out")}
        assert held and not held & train_set
    assert not set(TEMPLATES["train"]) & set(TEMPLATES["held_out"])


def bars(labels, rng, noise=0.3):
    """Images the test draws: class c is a bright horizontal bar at rows 2c..2c+3 of a 28x28 image."""
    x = np.full((len(labels), 1, 28, 28), -1.0, np.float32)
    for i, c in enumerate(labels):
        x[i, 0, 2 * c + 2:2 * c + 6, 4:24] = 1.0
    return np.clip(x + noise * rng.standard_normal(x.shape), -1, 1).astype(np.float32)


def test_a_model_trained_on_drawn_images_learns_to_name_them():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 2000)
    part = LabelledImages("fashion_mnist", bars(labels, rng), labels)
    ms.set_seed(0)
    model = TextImageModel(TextImageConfig(width=8))
    history = train(model, [part], steps=150, batch_size=64, lr=1e-3, progress=False, log_every=50)
    assert history[-1][1] < history[0][1] - 0.5
    test_labels = rng.integers(0, 10, 500)
    test = LabelledImages("fashion_mnist", bars(test_labels, rng), test_labels)
    assert zero_shot_accuracy(model, test, "train") > 0.8


@pytest.fixture(scope="module")
def shipped():
    if not (SHIPPED / "model.safetensors").is_file():
        pytest.fail(f"the shipped text-image model is missing from {SHIPPED}")
    return load_text_image_model()


@pytest.mark.parametrize("dataset", ["fashion_mnist", "mnist"])
def test_the_shipped_model_names_test_images_zero_shot(shipped, dataset, request):
    root = request.getfixturevalue("mnist_dir") if dataset == "mnist" else None  # Fashion-MNIST is embedded
    images, labels = load_idx_dataset(dataset, root, "test")
    part = LabelledImages(dataset, images[:, None].astype(np.float32) / 127.5 - 1, labels)
    assert zero_shot_accuracy(shipped, part, "train") >= 0.85
    assert zero_shot_accuracy(shipped, part, "held_out") >= 0.70
    assert phrase_accuracy(shipped, part, "held_out") >= 0.70


def test_a_model_saves_and_loads_and_a_bad_directory_is_a_clear_error(tmp_path):
    ms.set_seed(1)
    model = TextImageModel(TextImageConfig(width=8))
    model.save(tmp_path / "m", card="# test\n")
    back = load_text_image_model(tmp_path / "m")
    x = np.random.default_rng(0).uniform(-1, 1, (2, 1, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(back.image(ms.Tensor(x)).asnumpy(), model.image(ms.Tensor(x)).asnumpy(), atol=1e-6)
    np.testing.assert_allclose(back.embed_text(["a bag"]).asnumpy(), model.embed_text(["a bag"]).asnumpy(), atol=1e-6)
    with pytest.raises(FileNotFoundError, match="is not a text-image model directory"):
        load_text_image_model(tmp_path / "nowhere")
    (tmp_path / "m" / "config.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(ValueError, match="train it again"):
        load_text_image_model(tmp_path / "m")


class BrightnessEncoder(nn.Cell):
    """A user's own image encoder: (mean brightness, 0.5) as a 2-d embedding."""

    def construct(self, x):
        m = x.mean(axis=(1, 2, 3)).reshape(-1, 1)
        return ops.cat((m, ops.ones_like(m) * 0.5), axis=1)


class BrightnessPair:
    """An encoder pair as TextGuidance takes one: `image` and `embed_text`; every text means "bright"."""

    def __init__(self):
        self.image = BrightnessEncoder()

    def embed_text(self, texts):
        return ms.Tensor(np.tile(np.array([[1.0, 0.5]], np.float32), (len(texts), 1)))


def test_any_encoder_pair_can_guide(oracle):
    schedule = NoiseSchedule(1000, "cosine")
    model, scheduler = oracle(schedule, -0.4, 0.3), DDIMScheduler(schedule)
    scheduler.set_timesteps(20)
    prompt = TextGuidance("anything bright", BrightnessPair(), scale=5.0)
    plain, _ = sample(model, scheduler, (4, 1, 8, 8), progress=False)
    guided, _ = sample(model, scheduler, (4, 1, 8, 8), progress=False, guidance=prompt)
    assert guided.mean() > plain.mean() + 0.1
    # A prompt's gradient goes through the denoiser unless the term says otherwise.
    formula, _ = sample(model, scheduler, (4, 1, 8, 8), progress=False,
                        guidance=TextGuidance("anything bright", BrightnessPair(), 5.0, through_model=False))
    assert prompt.through_model and np.abs(formula - guided).max() > 1e-3
    with pytest.raises(TypeError, match="`image` encoder"):
        TextGuidance("a bag", object(), 1.0)


@pytest.mark.slow
def test_a_prompt_steers_the_shipped_pipeline_toward_its_class(shipped):
    """Drawn as the unconditional model, 24 images; guided by "a pair of trousers" more of them are
    trousers to the evaluation classifier than without."""
    from ddpm_ms.metrics.evaluation import FeatureExtractor
    from ddpm_ms.pipeline import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained("fashion_mnist")
    classify = FeatureExtractor("fashion_mnist")
    kinds = {}
    for name, terms in (("plain", None), ("guided", [TextGuidance("a photo of a trouser", shipped, 40.0)])):
        images = pipe(24, class_labels="none", seed=3, guidance=terms, progress=False).images
        kinds[name] = (classify(images)[1].argmax(axis=1) == 1).mean()
    assert kinds["guided"] >= kinds["plain"] + 0.25
