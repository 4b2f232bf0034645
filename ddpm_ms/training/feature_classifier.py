"""Training the FID feature classifier (ddpm_ms.metrics.classifier) on a labelled data set: what
scripts/train_classifier.py runs. Here, not in ddpm_ms.metrics, which knows nothing of training."""
from __future__ import annotations

import mindspore as ms
from mindspore import nn, ops
from tqdm.auto import tqdm

from ddpm_ms.metrics.classifier import FeatureClassifier
from ddpm_ms.training.optim import WarmupSchedule


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
