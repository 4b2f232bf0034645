"""What the text-image model can read: the classes of a data set by their names and synonyms (each
data set's `class_words` in ddpm_ms.registry.DATASETS: Fashion-MNIST's and MNIST's), in templates ("a photo of a sneaker", "the digit seven"), and a tokenizer that turns text
into hashed character n-grams.

Words are read as fastText does (Bojanowski et al. 2017): a word is the set of its character 3- and
4-grams plus the word itself, each hashed into one of `BUCKETS` rows of an embedding table. A
spelling the model never saw ("Sneakers", "t shirts", "ankle-boots") then shares most of its rows
with one it did. It knows nothing beyond this vocabulary: a synonym that shares no letters with the
words below ("kicks" for a sneaker) means nothing to it.

Phrases come in two sets: TRAIN (names and templates used for training) and HELD_OUT (other spellings
and carrier phrases, never seen in training), on which its zero-shot accuracy is measured.
"""
from __future__ import annotations

import re
import zlib

import numpy as np

from ddpm_ms.registry import DATASETS

BUCKETS = 4096  # hashed n-gram rows; row 0 is padding
MAX_WORDS, MAX_GRAMS = 12, 24

TEMPLATES = {
    "train": ["{}", "a {}", "the {}", "a photo of a {}", "a picture of the {}", "an image of a {}",
              "a small {}", "a photo of the {}", "a blurry photo of a {}", "a black and white picture of a {}"],
    "held_out": ["a drawing of a {}", "this is a {}", "a low resolution image of the {}",
                 "a grayscale photo showing a {}", "my {}"],
}
# Words that say nothing about the class, mixed into training phrases so that the model learns to read
# past carrier words it has not seen.
FILLERS = ["nice", "old", "new", "clean", "dark", "bright", "simple", "plain", "single", "centred", "cropped",
           "tiny", "scanned", "handwritten", "sketch", "of", "in", "with"]


def worded_datasets() -> tuple:
    """The registered data sets whose classes have words, so the text-image model can learn to name them."""
    return tuple(name for name in DATASETS if DATASETS[name].class_words)


def class_phrases(dataset: str, label: int, split: str = "train") -> list[str]:
    """Every phrase for a class: its names (of `split`) in each template (of `split`). Held-out phrases
    are a held-out name in any template, or any name in a held-out template: none appears in training."""
    train_names, held_names = DATASETS[dataset].class_words[label]
    if split == "train":
        return [t.format(n) for t in TEMPLATES["train"] for n in train_names]
    return ([t.format(n) for t in TEMPLATES["held_out"] for n in train_names + held_names]
            + [t.format(n) for t in TEMPLATES["train"] for n in held_names])


def prompt_for(dataset: str, label: int) -> str:
    """The plain prompt for a class ("a photo of a sneaker")."""
    return f"a photo of a {DATASETS[dataset].class_words[label][0][0]}"


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _bucket(piece: str) -> int:
    return 1 + zlib.crc32(piece.encode()) % (BUCKETS - 1)


def word_grams(word: str) -> list[int]:
    """A word's rows: the word itself and its character 3- and 4-grams, with < and > marking its ends."""
    marked = f"<{word}>"
    grams = [marked] + [marked[i:i + n] for n in (3, 4) for i in range(len(marked) - n + 1)]
    return [_bucket(g) for g in grams][:MAX_GRAMS]


def tokenize(texts) -> np.ndarray:
    """Texts as int32 (N, MAX_WORDS, MAX_GRAMS) rows into the embedding table, 0 for padding. Longer texts
    keep their last MAX_WORDS words (the class name ends most phrases); an empty text is an error."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    out = np.zeros((len(texts), MAX_WORDS, MAX_GRAMS), np.int32)
    for i, text in enumerate(texts):
        ws = words(text)
        if not ws:
            raise ValueError(f"the prompt {text!r} has no words (letters or digits)")
        for j, w in enumerate(ws[-MAX_WORDS:]):
            grams = word_grams(w)
            out[i, j, :len(grams)] = grams
    return out
