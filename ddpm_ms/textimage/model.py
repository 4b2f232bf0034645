"""A small contrastive text-image model, trained by ddpm_ms itself (CLIP's recipe, Radford et al. 2021,
at toy scale; not CLIP and not its weights).

Its image encoder is a small CNN that reads 28x28 x0 estimates of a denoiser at any noise level (it
was trained on them, not only on clean images); its text encoder reads the vocabulary of
ddpm_ms/textimage/vocab.py. Both end in unit vectors of `embed_dim`; their cosine says how well an
image matches a text. Saved as a directory: model.safetensors + config.json (+ README.md).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import nn, ops
from mindspore.common.initializer import Normal

from ddpm_ms.checkpoint import assign
from ddpm_ms.files import atomic_write
from ddpm_ms.models.layers import Conv2d, Dense
from ddpm_ms.textimage.vocab import BUCKETS, tokenize

WEIGHTS, CONFIG = "model.safetensors", "config.json"
SHIPPED = Path(__file__).resolve().parent / "weights"
FORMAT = 1


@dataclass
class TextImageConfig:
    """channels, image_size: of the (square) images it reads; width: the CNN's first width (doubled twice); embed_dim: the
    shared space; text_dim: the n-gram embedding width; datasets: what it was trained on."""
    channels: int = 1
    image_size: int = 28
    width: int = 16
    embed_dim: int = 64
    text_dim: int = 64
    datasets: tuple = ()


def _normalize(v):
    return v / ops.sqrt((v * v).sum(axis=-1, keepdims=True) + 1e-12)


class _Block(nn.Cell):
    """conv 3x3 (stride s) -> GroupNorm -> SiLU."""

    def __init__(self, c_in, c_out, stride=1):
        super().__init__()
        self.conv = Conv2d(c_in, c_out, 3, stride=stride, padding=1)
        self.norm = nn.GroupNorm(8, c_out)

    def construct(self, x):
        return ops.silu(self.norm(self.conv(x)))


class ImageEncoder(nn.Cell):
    """(B, C, 28, 28) in [-1, 1] -> (B, embed_dim) unit vectors: four conv blocks (two halve the size),
    then the 7x7 map flattened into a linear projection. Not global pooling: where things are (a
    trouser's two legs, a digit's strokes) is much of what tells the classes apart."""

    def __init__(self, cfg: TextImageConfig):
        super().__init__()
        w = cfg.width
        self.blocks = nn.SequentialCell([_Block(cfg.channels, w), _Block(w, 2 * w, 2), _Block(2 * w, 2 * w, 2),
                                         _Block(2 * w, 2 * w)])
        self.proj = Dense(2 * w * (cfg.image_size // 4) ** 2, cfg.embed_dim)

    def construct(self, x):
        return _normalize(self.proj(self.blocks(x).reshape(x.shape[0], -1)))


class TextEncoder(nn.Cell):
    """Token rows (B, words, grams) -> (B, embed_dim) unit vectors: each word the mean of its n-gram
    embeddings, words pooled by learnt attention (so carrier words can weigh little), an MLP."""

    def __init__(self, cfg: TextImageConfig):
        super().__init__()
        d = cfg.text_dim
        # N(0, 1) rows, as PyTorch's nn.Embedding (MindSpore's default, N(0, 0.01), starts every text at the
        # same point, and the contrastive loss then idles for hundreds of steps)
        self.table = nn.Embedding(BUCKETS, d, embedding_table=Normal(1.0), padding_idx=0)
        self.score = Dense(d, 1)
        self.mlp = nn.SequentialCell([Dense(d, 2 * d), nn.GELU(), Dense(2 * d, cfg.embed_dim)])

    def construct(self, tokens):
        grams = (tokens > 0).astype(ms.float32)
        counts = grams.sum(axis=2, keepdims=True)
        word = (self.table(tokens) * grams[..., None]).sum(axis=2) / ops.maximum(counts, 1.0)
        present = counts > 0  # (B, W, 1)
        scores = ops.where(present, self.score(word), ops.full_like(counts, -1e9))
        weights = ops.softmax(scores, axis=1)
        return _normalize(self.mlp((weights * word).sum(axis=1)))


class TextImageModel(nn.Cell):
    """The pair of encoders and CLIP's learnt temperature: logits = exp(log_scale) cos(image, text)."""

    def __init__(self, cfg: TextImageConfig | None = None):
        super().__init__()
        self.config = cfg or TextImageConfig()
        self.image = ImageEncoder(self.config)
        self.text = TextEncoder(self.config)
        self.log_scale = ms.Parameter(ms.Tensor(np.log(1 / 0.07), ms.float32), name="log_scale")

    def construct(self, images, tokens):
        """(logits image x text, logits text x image)."""
        scale = ops.exp(ops.minimum(self.log_scale, np.log(100.0)))
        logits = scale * ops.matmul(self.image(images), self.text(tokens).T)
        return logits, logits.T

    def embed_text(self, texts) -> ms.Tensor:
        """Unit vectors (N, embed_dim) of texts (a string or a list of them)."""
        return self.text(ms.Tensor(tokenize(texts)))

    # -- files ----------------------------------------------------------------------------------
    def save(self, out, card: str = "") -> Path:
        """Write model.safetensors, config.json and README.md (`card`) into the directory `out`."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        entries = [{"name": name, "data": p} for name, p in self.parameters_and_names()]
        atomic_write(out / WEIGHTS, lambda tmp: ms.save_checkpoint(entries, str(tmp), format="safetensors"))
        (out / WEIGHTS).chmod(0o644)
        config = {"format_version": FORMAT, **asdict(self.config)}
        atomic_write(out / CONFIG, lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2) + "\n"))
        if card:
            atomic_write(out / "README.md", lambda tmp: Path(tmp).write_text(card))
        return out


def load_text_image_model(path=None) -> TextImageModel:
    """The model saved in directory `path` (None: the one shipped with ddpm_ms), in inference mode."""

    path = Path(path) if path is not None else SHIPPED
    if not (path / CONFIG).is_file() or not (path / WEIGHTS).is_file():
        raise FileNotFoundError(f"{path} is not a text-image model directory (it needs {CONFIG} and {WEIGHTS}); "
                                "write one with scripts/train_text_encoder.py")
    try:
        config = json.loads((path / CONFIG).read_text())
        if config.pop("format_version", None) != FORMAT:
            raise ValueError(f"format_version is not {FORMAT}")
        cfg = TextImageConfig(**{**config, "datasets": tuple(config.get("datasets", ()))})
        weights = ms.load_checkpoint(str(path / WEIGHTS), format="safetensors")
    except (ValueError, TypeError, RuntimeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} holds a text-image model this ddpm_ms cannot read ({e}); train it again with "
                         "scripts/train_text_encoder.py") from None
    model = TextImageModel(cfg)
    assign(model, weights, str(path / WEIGHTS))
    model.set_train(False)
    return model
