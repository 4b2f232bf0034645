"""Training the text-image model: symmetric InfoNCE (CLIP's loss) between images and phrases of
their class, where the images are clean training images and a denoiser's x0 estimates of them at
random noise levels (the images guidance will show it).

With 20 classes a batch of 256 holds each class about 13 times, so "the other texts are negatives"
would punish matching a sneaker photo to another sneaker phrase. Each image's targets are therefore
every text of its class in the batch, equally (a multi-positive InfoNCE), in both directions.
"""
from __future__ import annotations

from dataclasses import dataclass

import mindspore as ms
import numpy as np
from mindspore import nn, ops
from tqdm.auto import tqdm

from ddpm_ms.registry import DATASETS
from ddpm_ms.sampling.base import x0_estimate
from ddpm_ms.sampling.loop import compiled
from ddpm_ms.textimage.vocab import FILLERS, class_phrases, prompt_for, tokenize


@dataclass
class LabelledImages:
    """One data set's images (N, C, H, W) float32 in [-1, 1] (clean ones and x0 estimates alike) and labels."""
    dataset: str
    images: np.ndarray
    labels: np.ndarray


def denoiser_views(pipe, images: np.ndarray, seed: int, batch_size: int = 500, progress: bool = True) -> np.ndarray:
    """x0 estimates of `images` ((N, C, H, W) in [-1, 1]) by the pipeline's denoiser, each at its own
    timestep drawn uniformly from 0..T-1, asked without a class ("no class" for a class-conditional
    model), clamped to [-1, 1]."""
    rng = np.random.default_rng(seed)
    ab = np.asarray(pipe.scheduler("ddim").schedule.alphas_cumprod, np.float64)
    forward = compiled(pipe.model)
    out = np.empty_like(images)
    for start in tqdm(range(0, len(images), batch_size), desc="x0 estimates", disable=not progress, leave=False):
        x0 = images[start:start + batch_size]
        t = rng.integers(0, pipe.diffusion.timesteps, len(x0))
        a = np.sqrt(ab[t]).reshape(-1, 1, 1, 1).astype(np.float32)
        s = np.sqrt(1 - ab[t]).reshape(-1, 1, 1, 1).astype(np.float32)
        x_t = a * x0 + s * rng.standard_normal(x0.shape).astype(np.float32)
        args = (ms.Tensor(x_t), ms.Tensor(t.astype(np.float32)))
        if pipe.num_classes:
            args += (ms.Tensor(np.full(len(x0), pipe.num_classes, np.int32)),)
        model_output = forward(*args).asnumpy()
        out[start:start + len(x0)] = np.clip(x0_estimate(model_output, x_t, a, s, pipe.diffusion.objective), -1, 1)
    return out


def random_phrases(dataset: str, labels, rng, filler_rate: float = 0.3) -> list[str]:
    """A random training phrase of each label's class; with probability filler_rate one or two filler
    words are slipped in before the name (so that unknown carrier words learn to weigh little)."""
    out = []
    for label in labels:
        phrase = rng.choice(class_phrases(dataset, int(label)))
        if rng.random() < filler_rate:
            words = phrase.split()
            at = int(rng.integers(0, len(words)))
            words[at:at] = list(rng.choice(FILLERS, size=int(rng.integers(1, 3))))
            phrase = " ".join(words)
        out.append(str(phrase))
    return out


def _multi_positive_infonce(logits_img, logits_txt, classes):
    same = (classes[:, None] == classes[None, :]).astype(ms.float32)
    targets = same / same.sum(axis=1, keepdims=True)
    loss_img = -(targets * ops.log_softmax(logits_img, axis=1)).sum(axis=1).mean()
    loss_txt = -(targets * ops.log_softmax(logits_txt, axis=1)).sum(axis=1).mean()
    return (loss_img + loss_txt) / 2


def train(model, parts: list[LabelledImages], steps: int, batch_size: int = 256, lr: float = 1e-3, seed: int = 0,
          progress: bool = True, log_every: int = 100) -> list[tuple[int, float]]:
    """Train `model` in place for `steps` updates (AdamW; linear warm-up, then cosine decay) on images drawn
    evenly from all of `parts`. Returns (step, mean loss since the last log) pairs."""
    rng = np.random.default_rng(seed)
    offsets, start = {}, 0
    for name in dict.fromkeys(p.dataset for p in parts):
        offsets[name], start = start, start + len(DATASETS[name].class_words)
    pool = [(p, offsets[p.dataset]) for p in parts]
    sizes = np.array([len(p.images) for p, _ in pool], np.float64)
    warmup = min(100, steps // 10)  # a short linear warm-up: at full rate from the start the embeddings collapse
    ramp = [lr * (i + 1) / warmup for i in range(warmup)]
    schedule = ramp + (nn.cosine_decay_lr(0.0, lr, steps - warmup, steps - warmup, 1) if steps - warmup > 1
                       else [lr] * (steps - warmup))
    optimizer = nn.AdamWeightDecay(model.trainable_params(), learning_rate=ms.Tensor(np.array(schedule, np.float32)),
                                   weight_decay=1e-4)

    def loss_fn(images, tokens, classes):
        logits_img, logits_txt = model(images, tokens)
        return _multi_positive_infonce(logits_img, logits_txt, classes)

    grad_fn = ms.value_and_grad(loss_fn, None, optimizer.parameters)

    @ms.jit
    def step(images, tokens, classes):
        loss, grads = grad_fn(images, tokens, classes)
        optimizer(grads)
        return loss

    model.set_train(True)
    history, running = [], []
    for i in tqdm(range(1, steps + 1), desc="text-image model", disable=not progress):
        which = rng.choice(len(pool), size=batch_size, p=sizes / sizes.sum())
        images, texts, classes = [], [], []
        for k in np.unique(which):
            part, offset = pool[k]
            idx = rng.integers(0, len(part.images), int((which == k).sum()))
            images.append(part.images[idx])
            texts += random_phrases(part.dataset, part.labels[idx], rng)
            classes.append(part.labels[idx].astype(np.int32) + offset)
        loss = step(ms.Tensor(np.concatenate(images)), ms.Tensor(tokenize(texts)), ms.Tensor(np.concatenate(classes)))
        running.append(float(loss.asnumpy()))
        if i % log_every == 0 or i == steps:
            history.append((i, float(np.mean(running))))
            running = []
    model.set_train(False)
    return history


def zero_shot_accuracy(model, part: LabelledImages, split: str = "train", batch_size: int = 1000) -> float:
    """Share of images whose nearest class text is their own: each class's text embedding is the mean of
    its `split` phrases' embeddings (CLIP's prompt ensembling), renormalised."""
    classes = range(len(DATASETS[part.dataset].class_words))
    prototypes = []
    for c in classes:
        emb = model.embed_text(class_phrases(part.dataset, c, split)).asnumpy().mean(axis=0)
        prototypes.append(emb / np.linalg.norm(emb))
    prototypes = np.stack(prototypes)
    correct = 0
    for start in range(0, len(part.images), batch_size):
        emb = model.image(ms.Tensor(part.images[start:start + batch_size])).asnumpy()
        correct += int(((emb @ prototypes.T).argmax(axis=1) == part.labels[start:start + batch_size]).sum())
    return correct / len(part.images)


def phrase_accuracy(model, part: LabelledImages, split: str = "held_out", batch_size: int = 1000) -> float:
    """Mean over the `split` phrases of the share of images of all classes that pick that phrase's class
    when it is the only text for its class and the other classes use their plain prompt: how well
    each phrase, alone, names its class."""

    num_classes = len(DATASETS[part.dataset].class_words)
    plain = model.embed_text([prompt_for(part.dataset, c) for c in range(num_classes)]).asnumpy()
    image_emb = np.concatenate([model.image(ms.Tensor(part.images[s:s + batch_size])).asnumpy()
                                for s in range(0, len(part.images), batch_size)])
    scores = []
    for c in range(num_classes):
        mine = part.labels == c
        for phrase in class_phrases(part.dataset, c, split):
            texts = plain.copy()
            texts[c] = model.embed_text([phrase]).asnumpy()[0]
            scores.append(float(((image_emb[mine] @ texts.T).argmax(axis=1) == c).mean()))
    return float(np.mean(scores))
