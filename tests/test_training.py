"""The fast numpy trainer and evaluation agree with torch autograd and behave at the edges."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.params import PARAM_KEYS, init_params
from core.tasks import TASKS
from core.torch_model import TorchMLP, to_torch
from tests.dense_training import (
    batch_slices,
    gradient,
    mean_loss,
    predict_proba,
    train_sgd,
)
from tests.torch_training import train_sgd_torch

TOL = dict(rtol=1e-4, atol=1e-5)


@pytest.fixture(autouse=True)
def single_torch_thread():
    """Torch's intra-op threads only add contention on these tiny matrices (2 shared cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_data(n: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sparse 0/1 features like the one-hot encodings, labels from a random linear rule."""
    rng = np.random.default_rng(seed)
    X = (rng.random((n, width)) < 0.15).astype(np.float32)
    w = rng.standard_normal(width).astype(np.float32)
    y = (X @ w + 0.3 * rng.standard_normal(n) > 0).astype(np.float32)
    return X, y


def torch_loss_and_grads(params, X, y):
    model = to_torch(params)
    loss = torch.nn.BCEWithLogitsLoss()(model(torch.from_numpy(X)), torch.from_numpy(y))
    loss.backward()
    grads = {name: p.grad.numpy() for name, p in model.named_parameters()}
    return loss.item(), grads


def test_batch_slices_are_consecutive_slices_of_one_permutation_per_epoch():
    epochs = list(batch_slices(10, 2, 4, np.random.default_rng(7)))
    expected = np.random.default_rng(7)
    assert len(epochs) == 2
    for batches in epochs:
        assert [len(b) for b in batches] == [4, 4, 2]
        np.testing.assert_array_equal(np.concatenate(batches), expected.permutation(10))


def test_init_params_has_torch_linear_layout_and_its_default_uniform_bounds():
    params = init_params(101, 32, seed=3)
    state = TorchMLP(101, 32).state_dict()
    assert list(params) == list(PARAM_KEYS) == list(state)
    bounds = {"fc1.weight": 101 ** -0.5, "fc1.bias": 101 ** -0.5, "fc2.weight": 32 ** -0.5, "fc2.bias": 32 ** -0.5}
    for key in PARAM_KEYS:
        assert params[key].dtype == np.float32 and params[key].shape == tuple(state[key].shape)
        assert np.abs(params[key]).max() <= bounds[key]
    assert np.abs(params["fc1.weight"]).max() > 0.99 * bounds["fc1.weight"]  # the whole range is used
    assert abs(float(params["fc1.weight"].mean())) < 0.01


def test_init_params_depends_on_the_seed_alone():
    for key in PARAM_KEYS:
        np.testing.assert_array_equal(init_params(101, 32, seed=3)[key], init_params(101, 32, seed=3)[key])
    assert not np.array_equal(init_params(101, 32, seed=3)["fc1.weight"], init_params(101, 32, seed=4)["fc1.weight"])


@pytest.mark.parametrize("task", sorted(TASKS))
def test_fast_trainer_equals_torch_sgd_after_one_epoch(task):
    width, hidden = TASKS[task].width, TASKS[task].hidden
    X, y = make_data(2_000, width)  # 62 full batches of 32 and a last one of 16
    params = init_params(width, hidden, seed=0)
    kwargs = dict(lr=0.05, epochs=1, batch_size=32)

    fast, fast_loss = train_sgd(params, X, y, rng=np.random.default_rng(1), **kwargs)
    ref, ref_loss = train_sgd_torch(params, X, y, rng=np.random.default_rng(1), **kwargs)

    assert np.abs(ref["fc2.weight"] - params["fc2.weight"]).max() > 0.02  # training moved the model
    for key in PARAM_KEYS:
        assert fast[key].dtype == np.float32 and fast[key].shape == params[key].shape
        np.testing.assert_allclose(fast[key], ref[key], **TOL)
    assert fast_loss == pytest.approx(ref_loss, rel=1e-5)


def test_reported_loss_is_the_last_epochs_mean_before_each_update():
    X, y = make_data(100, 20)
    params = init_params(20, 8, seed=0)
    after_one, _ = train_sgd(params, X, y, lr=0.5, epochs=1, batch_size=100,
                             rng=np.random.default_rng(0))
    _, loss = train_sgd(params, X, y, lr=0.5, epochs=2, batch_size=100,
                        rng=np.random.default_rng(0))
    assert loss == pytest.approx(mean_loss(after_one, X, y), rel=1e-5)


def test_gradient_matches_torch_autograd():
    X, y = make_data(300, 99)
    params = init_params(99, 64, seed=2)

    grads, loss = gradient(params, X, y)
    ref_loss, ref_grads = torch_loss_and_grads(params, X, y)

    assert loss == pytest.approx(ref_loss, rel=1e-5)
    for key in PARAM_KEYS:
        assert grads[key].dtype == np.float32
        np.testing.assert_allclose(grads[key], ref_grads[key], rtol=1e-4, atol=1e-7)


def test_predict_proba_and_mean_loss_match_torch():
    X, y = make_data(500, 101)
    params = init_params(101, 32, seed=5)
    with torch.no_grad():
        logits = to_torch(params)(torch.from_numpy(X))
        ref_proba = torch.sigmoid(logits).numpy()
        ref_loss = torch.nn.BCEWithLogitsLoss()(logits, torch.from_numpy(y)).item()

    np.testing.assert_allclose(predict_proba(params, X), ref_proba, **TOL)
    assert mean_loss(params, X, y) == pytest.approx(ref_loss, rel=1e-5)


def test_extreme_logits_stay_finite_without_overflow():
    X, y = make_data(64, 20)
    params = init_params(20, 8, seed=0)
    params["fc2.bias"] = np.array([-300.0], np.float32)  # every logit near -300
    with np.errstate(over="raise", invalid="raise"):
        grads, loss = gradient(params, X, y)
        _, train_loss = train_sgd(params, X, y, lr=1e-3, epochs=1, batch_size=16,
                                  rng=np.random.default_rng(0))
        proba = predict_proba(params, X)
    ref_loss, ref_grads = torch_loss_and_grads(params, X, y)

    assert loss == pytest.approx(ref_loss, rel=1e-5) and loss > 50
    assert train_loss == pytest.approx(loss, rel=1e-2)
    for key in PARAM_KEYS:
        np.testing.assert_allclose(grads[key], ref_grads[key], rtol=1e-4, atol=1e-6)
    assert proba.max() < 1e-30


def test_train_sgd_leaves_input_params_untouched():
    X, y = make_data(200, 20)
    params = init_params(20, 8, seed=0)
    before = {k: v.copy() for k, v in params.items()}

    new, _ = train_sgd(params, X, y, lr=0.1, epochs=2, batch_size=32, rng=np.random.default_rng(0))

    for key in PARAM_KEYS:
        np.testing.assert_array_equal(params[key], before[key])
        assert not np.shares_memory(new[key], params[key])


@pytest.mark.parametrize("trainer", [train_sgd, train_sgd_torch])
@pytest.mark.parametrize("n, epochs", [(0, 3), (50, 0)])
def test_no_data_or_no_epochs_returns_a_copy_and_nan_loss(trainer, n, epochs):
    X, y = make_data(n, 20)
    params = init_params(20, 8, seed=0)

    new, loss = trainer(params, X, y, lr=0.1, epochs=epochs, batch_size=32,
                        rng=np.random.default_rng(0))

    assert np.isnan(loss)
    for key in PARAM_KEYS:
        np.testing.assert_array_equal(new[key], params[key])
        assert not np.shares_memory(new[key], params[key])


def test_training_lowers_the_loss_on_a_learnable_problem():
    X, y = make_data(2_000, 101)
    params = init_params(101, 32, seed=0)
    before = mean_loss(params, X, y)

    trained, train_loss = train_sgd(params, X, y, lr=0.1, epochs=5, batch_size=32,
                                    rng=np.random.default_rng(0))

    after = mean_loss(trained, X, y)
    assert before > 0.6
    assert after < 0.5 * before
    assert train_loss < 0.6 * before
    assert ((predict_proba(trained, X) > 0.5) == (y == 1)).mean() > 0.9
