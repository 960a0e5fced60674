"""Per-FedAvg: meta-training arithmetic, adaptation on training data only, both models reported."""

import numpy as np
import pandas as pd
import pytest

from clients.data import Split
from core.params import init_params
from tests.dense_perfedavg import adapt, meta_batches, meta_train
from tests.dense_training import batch_slices, gradient, mean_loss, predict_proba

WIDTH, HIDDEN = 6, 4


def split(n: int, flip: bool = False, seed: int = 0) -> Split:
    """A learnable rule (label = first feature > 0), or its opposite."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, WIDTH)).astype(np.float32)
    y = ((x[:, 0] > 0) != flip).astype(np.float32)
    return Split(x=x, y=y, groups={"sex": (rng.random(n) < 0.5).astype(np.int8)})


def test_first_order_meta_steps_are_the_gradients_at_the_inner_steps_one_per_batch():
    """96 rows in batches of 32: three outer steps (FedAvg's three SGD steps), batches paired cyclically."""
    params, data = init_params(WIDTH, HIDDEN, 0), split(96)
    got, _ = meta_train(params, data, alpha=0.1, beta=0.5, epochs=1, batch_size=32,
                        rng=np.random.default_rng(1), variant="first-order")
    batches = next(batch_slices(96, 1, 32, np.random.default_rng(1)))
    w = params
    for inner, outer in [(batches[0], batches[1]), (batches[1], batches[2]), (batches[2], batches[0])]:
        g_inner, _ = gradient(w, data.x[inner], data.y[inner])
        temp = {k: w[k] - np.float32(0.1) * g_inner[k] for k in w}
        g_outer, _ = gradient(temp, data.x[outer], data.y[outer])
        w = {k: w[k] - np.float32(0.5) * g_outer[k] for k in w}
    for key in params:
        np.testing.assert_allclose(got[key], w[key], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(("n", "per_step"), [(100, 2), (100, 3), (32, 2), (20, 3)])
def test_an_epoch_makes_as_many_meta_steps_as_fedavg_makes_sgd_steps(n, per_step):
    epoch = next(batch_slices(n, 1, 32, np.random.default_rng(0)))
    steps = meta_batches(epoch, per_step)
    assert len(steps) == len(epoch) == -(-n // 32)
    for role in range(per_step):  # each batch is once the inner, once the outer (once the Hessian) batch
        assert sorted(np.concatenate([s[role] for s in steps]).tolist()) == list(range(n))


def test_a_step_uses_distinct_batches_when_the_epoch_has_enough():
    steps = meta_batches(next(batch_slices(100, 1, 32, np.random.default_rng(0))), 3)
    assert all(not set(a) & set(b) for s in steps for i, a in enumerate(s) for b in s[i + 1:])


def test_adapt_lr_is_the_adaptation_step_size():
    params, data = init_params(WIDTH, HIDDEN, 0), split(64)
    adapted = adapt(params, data, steps=1, lr=0.3, batch_size=32, rng=np.random.default_rng(4))
    batch = next(batch_slices(64, 1, 32, np.random.default_rng(4)))[0]
    g, _ = gradient(params, data.x[batch], data.y[batch])
    for key in params:
        np.testing.assert_allclose(adapted[key], params[key] - np.float32(0.3) * g[key], rtol=1e-6, atol=1e-7)


def test_hessian_free_variant_differs_from_first_order():
    params, data = init_params(WIDTH, HIDDEN, 0), split(96)
    fo, _ = meta_train(params, data, alpha=0.5, beta=0.5, epochs=1, batch_size=32,
                       rng=np.random.default_rng(1), variant="first-order")
    hf, _ = meta_train(params, data, alpha=0.5, beta=0.5, epochs=1, batch_size=32,
                       rng=np.random.default_rng(1), variant="hessian-free")
    assert not np.allclose(fo["fc1.weight"], hf["fc1.weight"])


def test_meta_training_lowers_the_loss_after_adaptation():
    params, data = init_params(WIDTH, HIDDEN, 0), split(2000)
    meta, _ = meta_train(params, data, alpha=0.05, beta=0.1, epochs=5, batch_size=32,
                         rng=np.random.default_rng(0))
    before = mean_loss(adapt(params, data, steps=1, lr=0.05, batch_size=32, rng=np.random.default_rng(2)),
                       data.x, data.y)
    after = mean_loss(adapt(meta, data, steps=1, lr=0.05, batch_size=32, rng=np.random.default_rng(2)),
                      data.x, data.y)
    assert after < before - 0.1


def test_adaptation_learns_the_training_rule_not_a_poisoned_test_rule():
    train, poisoned_test = split(2000, seed=0), split(500, flip=True, seed=1)
    adapted = adapt(init_params(WIDTH, HIDDEN, 0), train, steps=300, lr=0.5, batch_size=32,
                    rng=np.random.default_rng(0))
    accuracy_on_poison = np.mean((predict_proba(adapted, poisoned_test.x) >= 0.5) == (poisoned_test.y >= 0.5))
    assert accuracy_on_poison < 0.1  # it learned the training rule, the opposite of the test labels


def test_zero_adaptation_steps_returns_the_global_model():
    params = init_params(WIDTH, HIDDEN, 0)
    same = adapt(params, split(100), steps=0, lr=0.1, batch_size=32, rng=np.random.default_rng(0))
    assert all(np.array_equal(same[k], params[k]) for k in params)


def test_run_reports_adapted_and_global_models(federation, tmp_path):
    results = federation({"strategy": "perfedavg", "states": "AL,CA,WY", "data-source": "synthetic",
                          "synthetic-rows": 1500, "num-server-rounds": 2, "local-epochs": 2, "lr": 0.05,
                          "meta-lr": 0.05}, tmp_path / "perfedavg")
    metrics = pd.read_csv(results / "metrics.csv", keep_default_na=False)
    counts = pd.read_csv(results / "counts.csv")
    state_rows = metrics[metrics["state"] == "CA"]
    assert {"accuracy", "global_accuracy", "sp_gap", "global_sp_gap"} <= set(state_rows["metric"])
    assert set(counts["model"]) == {"deployed", "global"}
    assert len(counts) == 2 * 3 * 4 * 2
