"""The feature extractor for FID: a small CNN classifier trained on Fashion-MNIST, MNIST
(28x28 grayscale) or CIFAR-10 (32x32 RGB) by scripts/train_classifier.py. Its penultimate
activations are the features; its softmax gives the Inception Score and the class histogram.

Inputs are images in [-1, 1], shaped (B, channels, size, size): the range the diffusion model produces.
"""
from __future__ import annotations

import mindspore as ms
from mindspore import nn, ops
from tqdm.auto import tqdm

from ddpm_ms.models.layers import Conv2d, Dense
from ddpm_ms.training.optim import WarmupSchedule

FEATURE_DIM = 128
NUM_CLASSES = 10


class _ConvBlock(nn.Cell):
    """conv 3x3 -> BatchNorm -> ReLU, twice, then 2x2 max-pooling."""

    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv1, self.norm1 = Conv2d(c_in, c_out, 3, padding=1, has_bias=False), nn.BatchNorm2d(c_out)
        self.conv2, self.norm2 = Conv2d(c_out, c_out, 3, padding=1, has_bias=False), nn.BatchNorm2d(c_out)
        self.pool = nn.MaxPool2d(2, 2)

    def construct(self, x):
        x = ops.relu(self.norm1(self.conv1(x)))
        x = ops.relu(self.norm2(self.conv2(x)))
        return self.pool(x)


class FeatureClassifier(nn.Cell):
    """28x28x1 -> 32 x 14x14 -> 64 x 7x7 -> flatten, dense -> 128 features (ReLU) -> 10 logits
    (for 32x32x3 images: 3 channels in, 64 x 8x8 before the dense layer)."""

    def __init__(self, width: int = 32, feature_dim: int = FEATURE_DIM, num_classes: int = NUM_CLASSES,
                 dropout: float = 0.3, in_channels: int = 1, image_size: int = 28):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"the classifier halves the image twice: its size must divide by 4, got {image_size}")
        self.block1, self.block2 = _ConvBlock(in_channels, width), _ConvBlock(width, 2 * width)
        self.hidden = Dense(2 * width * (image_size // 4) ** 2, feature_dim)
        self.dropout = nn.Dropout(p=dropout)
        self.head = Dense(feature_dim, num_classes)

    def features(self, x):
        """Penultimate activations (B, feature_dim): the FID feature space."""
        x = self.block2(self.block1(x))
        return ops.relu(self.hidden(x.reshape(x.shape[0], -1)))

    def construct(self, x):
        return self.head(self.dropout(self.features(x)))


def fit_classifier(model: FeatureClassifier, train, epochs: int, lr: float, max_steps: int | None = None,
                   progress: bool = True, desc: str = "classifier") -> int:
    """Train `model` on the labelled pipeline `train` (batches of (image, label)) with Adam, warmed up
    over min(100, a tenth of the updates) and then decayed to 0 on a cosine (a constant rate fell
    short of the target accuracy, docs/evaluation.md), for `epochs` or `max_steps` updates, whichever
    come first. Returns the number of updates."""
    per_epoch = train.get_dataset_size()
    total = min(epochs * per_epoch, max_steps or epochs * per_epoch)
    schedule = WarmupSchedule(lr, "cosine", warmup_steps=min(100, total // 10), total_steps=total)
    optimizer = nn.Adam(model.trainable_params(), learning_rate=schedule)
    loss_fn = nn.CrossEntropyLoss()

    def forward(x, y):  # a def, not a lambda: MindSpore's graph parser reads lambdas only on their own line
        return loss_fn(model(x), y)

    grad_fn = ms.value_and_grad(forward, None, optimizer.parameters)

    @ms.jit
    def step(x, y):
        loss, grads = grad_fn(x, y)
        return ops.depend(loss, optimizer(grads))

    steps = 0
    model.set_train(True)
    with tqdm(total=total, desc=desc, disable=not progress) as bar:
        while steps < total:
            for x, y in train.create_tuple_iterator(num_epochs=1):
                loss = float(step(x, y).asnumpy())
                steps += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}")
                if steps >= total:
                    break
    return steps


def accuracy(model: FeatureClassifier, dataset) -> float:
    """Top-1 accuracy over a labelled pipeline."""
    model.set_train(False)
    correct = total = 0
    for x, y in dataset.create_tuple_iterator(num_epochs=1):
        correct += int((model(x).asnumpy().argmax(axis=1) == y.asnumpy()).sum())
        total += int(y.shape[0])
    return correct / max(total, 1)
