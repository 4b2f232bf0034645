"""The host loop around TrainStep: its random draws come in the documented order (the order a
resumed run relies on), micro-batches then the update, a non-finite loss stops before the EMA
averages; and the periodic events' rules for the last step and for stopping."""
import mindspore as ms
import numpy as np
import pytest

from ddpm_ms.training.events import Periodic
from ddpm_ms.training.host_loop import HostLoop, NonFiniteLoss


class RecordingStep:
    """Stands in for TrainStep: records what each call receives, returns the given figures."""

    def __init__(self, grad_accum, losses, norm=1.5, lr=1e-3, finite=True, scaler=None):
        self.grad_accum, self.scaler = grad_accum, scaler
        self.losses, self.norm, self.lr, self.finite = iter(losses), norm, lr, finite
        self.calls = []

    def _record(self, name, inputs):
        self.calls.append((name, [x.asnumpy() for x in inputs]))
        return ms.Tensor(np.float32(next(self.losses)))

    def micro(self, *inputs):
        return self._record("micro", inputs)

    def update(self, *inputs):
        loss = self._record("update", inputs)
        return (loss, ms.Tensor(np.float32(self.norm)), ms.Tensor(np.float32(self.lr)),
                ms.Tensor(np.bool_(self.finite)))


class RecordingEMA:
    def __init__(self):
        self.steps = []

    def update(self, step):
        self.steps.append(step)
        return 0.9


def batches(rng, n, batch=4, num_classes=0):
    for _ in range(n):
        x0 = ms.Tensor(rng.standard_normal((batch, 1, 2, 2)).astype(np.float32))
        yield (x0, ms.Tensor(rng.integers(0, num_classes, batch).astype(np.int32))) if num_classes else (x0,)


def test_draws_come_per_micro_batch_as_t_noise_then_label_drops(rng):
    k, timesteps, classes, p = 3, 50, 4, 0.5
    step, ema = RecordingStep(k, [1.0, 2.0, 6.0]), RecordingEMA()
    host = HostLoop(step, np.random.default_rng(7), timesteps, classes, p, ema)
    data = list(batches(rng, k, num_classes=classes))
    update = host.run(iter(data), step=12)

    assert [name for name, _ in step.calls] == ["micro", "micro", "update"]
    expected = np.random.default_rng(7)
    for (x0, y), (_, (x0_in, t, noise, y_in)) in zip(data, step.calls):
        np.testing.assert_array_equal(x0_in, x0.asnumpy())
        np.testing.assert_array_equal(t, expected.integers(0, timesteps, size=(4,), dtype=np.int32))
        np.testing.assert_array_equal(noise, expected.standard_normal((4, 1, 2, 2), dtype=np.float32))
        drop = expected.random(4) < p
        np.testing.assert_array_equal(y_in, np.where(drop, classes, y.asnumpy()))
    assert host.rng.bit_generator.state == expected.bit_generator.state, "no draws beyond the documented ones"
    assert (update.loss, update.grad_norm, update.images, update.ema_decay) == (3.0, 1.5, 12, 0.9)
    assert update.lr == pytest.approx(1e-3) and not update.skipped
    assert ema.steps == [12]


def test_an_unconditional_model_draws_no_label_drops(rng):
    step = RecordingStep(1, [0.5])
    host = HostLoop(step, np.random.default_rng(3), 10)
    host.run(batches(rng, 1), step=1)
    expected = np.random.default_rng(3)
    expected.integers(0, 10, size=(4,), dtype=np.int32), expected.standard_normal((4, 1, 2, 2), dtype=np.float32)
    assert host.rng.bit_generator.state == expected.bit_generator.state
    assert len(step.calls[0][1]) == 3, "(x0, t, noise): no labels"


def test_batches_are_taken_one_update_at_a_time(rng):
    data = batches(rng, 5)
    host = HostLoop(RecordingStep(2, [1.0] * 4), np.random.default_rng(0), 10)
    host.run(data, 1)
    host.run(data, 2)
    assert len(list(data)) == 1, "two updates of two micro-batches take four batches of five"


@pytest.mark.parametrize("loss,norm,message", [(float("nan"), 1.0, "loss became nan at step 5"),
                                               (1.0, float("inf"), "gradient norm became inf at step 5")])
def test_a_non_finite_update_stops_before_the_ema_averages(rng, loss, norm, message):
    ema = RecordingEMA()
    host = HostLoop(RecordingStep(1, [loss], norm=norm), np.random.default_rng(0), 10, ema=ema)
    with pytest.raises(NonFiniteLoss, match=message):
        host.run(batches(rng, 1), step=5)
    assert ema.steps == []


def test_an_update_the_loss_scaler_skipped_goes_on(rng):
    host = HostLoop(RecordingStep(1, [1.0], norm=float("inf"), finite=False, scaler=object()),
                    np.random.default_rng(0), 10, ema=RecordingEMA())
    update = host.run(batches(rng, 1), step=5)
    assert update.skipped and update.grad_norm == float("inf") and host.ema.steps == [5]


def test_labels_beyond_the_model_classes_name_the_fix(rng):
    host = HostLoop(RecordingStep(1, [1.0]), np.random.default_rng(0), 10, num_classes=3, cond_drop_prob=0.1)
    with pytest.raises(ValueError, match="set model.num_classes to at least 5"):
        host.run(iter([(ms.Tensor(np.zeros((2, 1, 2, 2), np.float32)), ms.Tensor(np.array([0, 4], np.int32)))]), 1)


def test_periodic_events_at_the_end_and_when_stopping():
    def due_steps(event, last=10, stopping_from=None):
        return [s for s in range(1, last + 1)
                if event.due(s, s == last, stopping_from is not None and s >= stopping_from)]

    def fire():
        return None

    assert due_steps(Periodic("off", 0, fire, at_end=True, when_stopping=True)) == []
    assert due_steps(Periodic("ckpt", 4, fire, when_stopping=True)) == [4, 8]
    assert due_steps(Periodic("ckpt", 4, fire, when_stopping=True), stopping_from=6) == [4, 6, 7, 8, 9, 10]
    assert due_steps(Periodic("eval", 4, fire, at_end=True, when_stopping=False)) == [4, 8, 10]
    assert due_steps(Periodic("eval", 4, fire, at_end=True, when_stopping=False), stopping_from=10) == [4, 8]
    assert due_steps(Periodic("grid", 5, fire, at_end=False, when_stopping=False)) == [5]
    assert due_steps(Periodic("log", 4, fire, also=lambda s: s == 3)) == [3, 4, 8]
