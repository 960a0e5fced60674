"""The compiled sparse kernels compute exactly what the dense numpy and torch references compute,
for both tasks' shapes, with and without per-client standardization."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from clients import kernels
from clients.compiled import ContentLocator
from clients.data import Split, build_state_codes
from core.counts import confusion_counts
from core.params import PARAM_KEYS, init_params
from core.tasks import TASKS, Binned, Numeric, OneHot
from tests.dense_perfedavg import adapt as dense_adapt
from tests.dense_perfedavg import meta_train as dense_meta_train
from tests.dense_training import evaluate_dense as evaluate_local
from tests.dense_training import gradient, mean_loss, train_sgd
from tests.dense_training import score_models_dense as dense_score_models
from tests.torch_training import train_sgd_torch

TOL = dict(rtol=1e-4, atol=1e-5)
SHAPES = [(task, standardized) for task in sorted(TASKS) for standardized in (False, True)]
IDS = [f"{task}-{'standardized' if s else 'raw'}" for task, s in SHAPES]


@pytest.fixture(autouse=True)
def single_torch_thread():
    """Torch's intra-op threads only add contention on these tiny matrices (2 shared cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pums_frame(task_name: str, n: int, seed: int = 0) -> pd.DataFrame:
    """n random records of one state in raw PUMS codes, with codes just outside every listed
    range too, so that all-zero encodings occur; labels depend on the codes (learnable)."""
    rng = np.random.default_rng(seed)
    columns: dict[str, np.ndarray] = {}
    for feature in TASKS[task_name].features:
        if isinstance(feature, Numeric):
            columns[feature.column] = rng.integers(1, 99, n)
        elif isinstance(feature, OneHot):
            columns[feature.column] = rng.integers(min(feature.codes) - 1, max(feature.codes) + 2, n)
        else:
            assert isinstance(feature, Binned)
            columns[feature.column] = rng.integers(feature.edges[0] - 1, feature.edges[-1] + 1, n)
    score = (columns["AGEP"] - 50) / 20 + (columns["SEX"] == 2) - 0.5 + rng.normal(0, 0.5, n)
    return pd.DataFrame({"STATE": "AL", **columns, "label": score > 0})


def make_data(task_name: str, standardized: bool, n: int = 700, seed: int = 0) -> tuple[kernels.SparseSplit, Split]:
    """The sparse split of made-up records and the dense Split the numpy/torch references see."""
    codes = build_state_codes(TASKS[task_name], pums_frame(task_name, n, seed), seed=seed)
    encoded = codes.expand(codes.train)
    shift = scale = None
    x = encoded.x
    if standardized:  # per-client standardization, as the paper encoding does it
        shift = x.mean(axis=0).astype(np.float32)
        scale = np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0).astype(np.float32)
        x = ((x - shift) / scale).astype(np.float32)
    sparse = kernels.sparse_from_tables(codes.tables, codes.train.rows, codes.train.y, shift, scale)
    return sparse, Split(x, encoded.y, encoded.groups)


def params_for(task_name: str, seed: int = 0) -> dict[str, np.ndarray]:
    return init_params(TASKS[task_name].width, TASKS[task_name].hidden, seed)


def assert_params_close(got, want, **tol):
    for key in PARAM_KEYS:
        assert got[key].dtype == np.float32 and got[key].shape == want[key].shape, key
        np.testing.assert_allclose(got[key], want[key], err_msg=key, **(tol or TOL))


@pytest.mark.parametrize("task", sorted(TASKS))
def test_sparse_form_expands_to_exactly_the_encoding(task):
    codes = build_state_codes(TASKS[task], pums_frame(task, 400, seed=3), seed=1)
    for part in (codes.train, codes.test):
        sparse = kernels.sparse_from_tables(codes.tables, part.rows, part.y)
        assert sparse.codes.shape == (len(part.y), len(TASKS[task].features))
        assert sparse.width == TASKS[task].width
        np.testing.assert_array_equal(sparse.dense(), codes.expand(part).x)


def test_standardized_sparse_form_expands_to_the_standardized_matrix():
    sparse, dense = make_data("income", standardized=True)
    np.testing.assert_array_equal(sparse.dense(), dense.x)
    assert sparse.shifted


def test_a_table_row_with_two_nonzeros_is_rejected_naming_the_feature():
    tables = [np.eye(3, dtype=np.float32), np.array([[1.0, 0.0], [1.0, 1.0]], np.float32)]
    rows = [np.array([0, 1, 2]), np.array([0, 1, 0])]
    with pytest.raises(ValueError, match="feature 1: table row 1 has 2 nonzeros"):
        kernels.sparse_from_tables(tables, rows, np.zeros(3, np.float32))


def test_codes_outside_the_tables_are_rejected_before_any_kernel_runs():
    tables = [np.eye(3, dtype=np.float32)]
    with pytest.raises(ValueError, match=r"feature 0: row indices must lie in \[0, 3\)"):
        kernels.sparse_from_tables(tables, [np.array([0, 3])], np.zeros(2, np.float32))


@pytest.mark.parametrize("task, standardized", SHAPES, ids=IDS)
def test_train_sgd_equals_torch_autograd_over_the_same_batches(task, standardized):
    sparse, dense = make_data(task, standardized)  # 560 training records: 17 batches of 32 and one of 16
    params = params_for(task)
    kwargs = dict(lr=0.1, epochs=2, batch_size=32)

    got, loss = kernels.train_sgd(params, sparse, rng=np.random.default_rng(1), **kwargs)
    ref, ref_loss = train_sgd_torch(params, dense.x, dense.y, rng=np.random.default_rng(1), **kwargs)

    assert np.abs(ref["fc2.weight"] - params["fc2.weight"]).max() > 0.02  # training moved the model
    assert_params_close(got, ref)
    assert loss == pytest.approx(ref_loss, rel=1e-5)


@pytest.mark.parametrize("task, standardized", SHAPES, ids=IDS)
def test_train_sgd_equals_the_dense_numpy_trainer(task, standardized):
    sparse, dense = make_data(task, standardized)
    params = params_for(task, seed=1)
    kwargs = dict(lr=0.05, epochs=2, batch_size=16)

    got, loss = kernels.train_sgd(params, sparse, rng=np.random.default_rng(4), **kwargs)
    ref, ref_loss = train_sgd(params, dense.x, dense.y, rng=np.random.default_rng(4), **kwargs)

    assert_params_close(got, ref)
    assert loss == pytest.approx(ref_loss, rel=1e-5)


def test_a_scale_without_a_shift_stays_sparse_and_equals_the_numpy_trainer():
    codes = build_state_codes(TASKS["income"], pums_frame("income", 300, seed=5), seed=0)
    x = codes.expand(codes.train).x
    scale = np.linspace(0.5, 2.0, x.shape[1]).astype(np.float32)
    sparse = kernels.sparse_from_tables(codes.tables, codes.train.rows, codes.train.y, scale=scale)
    params = params_for("income")

    got, _ = kernels.train_sgd(params, sparse, lr=0.1, epochs=2, batch_size=32, rng=np.random.default_rng(0))
    ref, _ = train_sgd(params, x / scale, codes.train.y, lr=0.1, epochs=2, batch_size=32, rng=np.random.default_rng(0))

    assert not sparse.shifted
    assert_params_close(got, ref)


@pytest.mark.parametrize("standardized", [False, True], ids=["raw", "standardized"])
def test_prox_step_adds_mu_times_the_distance_to_the_anchor(standardized):
    sparse, dense = make_data("employment", standardized, n=80)
    params, anchor = params_for("employment", seed=0), params_for("employment", seed=1)
    lr, mu = 0.1, 0.5

    got, _ = kernels.train_sgd(params, sparse, lr=lr, epochs=1, batch_size=len(sparse),
                               rng=np.random.default_rng(0), prox_mu=mu, anchor=anchor)

    grads, _ = gradient(params, dense.x, dense.y)  # one full batch: its order does not matter
    expected = {k: params[k] - np.float32(lr) * (grads[k] + np.float32(mu) * (params[k] - anchor[k]))
                for k in PARAM_KEYS}
    assert_params_close(got, expected, rtol=1e-5, atol=1e-6)


def test_prox_mu_zero_is_plain_sgd_exactly():
    sparse, _ = make_data("income", standardized=False, n=200)
    params, anchor = params_for("income", 0), params_for("income", 1)
    plain, plain_loss = kernels.train_sgd(params, sparse, lr=0.1, epochs=2, batch_size=32, rng=np.random.default_rng(3))
    prox, prox_loss = kernels.train_sgd(params, sparse, lr=0.1, epochs=2, batch_size=32, rng=np.random.default_rng(3),
                                        prox_mu=0.0, anchor=anchor)
    assert plain_loss == prox_loss
    for key in PARAM_KEYS:
        np.testing.assert_array_equal(plain[key], prox[key])


def test_prox_without_an_anchor_is_refused():
    sparse, _ = make_data("income", standardized=False, n=50)
    with pytest.raises(ValueError, match="anchor"):
        kernels.train_sgd(params_for("income"), sparse, lr=0.1, epochs=1, batch_size=8,
                          rng=np.random.default_rng(0), prox_mu=0.1)


def test_same_seed_gives_the_same_model_and_input_params_stay_untouched():
    sparse, _ = make_data("income", standardized=True, n=200)
    params = params_for("income")
    before = {k: v.copy() for k, v in params.items()}
    runs = [kernels.train_sgd(params, sparse, lr=0.1, epochs=2, batch_size=32, rng=np.random.default_rng(5))
            for _ in range(2)]
    assert runs[0][1] == runs[1][1]
    for key in PARAM_KEYS:
        np.testing.assert_array_equal(runs[0][0][key], runs[1][0][key])
        np.testing.assert_array_equal(params[key], before[key])
        assert not np.shares_memory(runs[0][0][key], params[key])


@pytest.mark.parametrize("n, epochs", [(0, 3), (50, 0)])
def test_no_data_or_no_epochs_returns_a_copy_and_nan_loss(n, epochs):
    sparse, _ = make_data("income", standardized=False, n=100)
    empty = kernels.SparseSplit(sparse.codes[:n], sparse.y[:n], sparse.col, sparse.val, sparse.width,
                                sparse.shift, sparse.scale)
    params = params_for("income")
    new, loss = kernels.train_sgd(params, empty, lr=0.1, epochs=epochs, batch_size=32, rng=np.random.default_rng(0))
    assert np.isnan(loss)
    for key in PARAM_KEYS:
        np.testing.assert_array_equal(new[key], params[key])
        assert not np.shares_memory(new[key], params[key])


def test_a_nan_parameter_comes_back_as_nan_for_the_server_to_reject():
    sparse, _ = make_data("income", standardized=False, n=100)
    params = params_for("income")
    params["fc2.bias"] = np.array([np.nan], np.float32)
    new, loss = kernels.train_sgd(params, sparse, lr=0.1, epochs=1, batch_size=32, rng=np.random.default_rng(0))
    assert np.isnan(loss)
    assert all(np.isnan(new[k]).any() for k in PARAM_KEYS)


def test_extreme_logits_give_finite_losses_equal_to_numpy():
    sparse, dense = make_data("income", standardized=False, n=100)
    params = params_for("income")
    params["fc2.bias"] = np.array([-300.0], np.float32)
    with np.errstate(over="raise", invalid="raise"):
        loss = kernels.mean_loss(params, sparse)
    assert loss == pytest.approx(mean_loss(params, dense.x, dense.y), rel=1e-5) and loss > 50


@pytest.mark.parametrize("variant", kernels.VARIANTS)
@pytest.mark.parametrize("task, standardized", SHAPES, ids=IDS)
def test_meta_train_equals_the_numpy_per_fedavg(task, standardized, variant):
    sparse, dense = make_data(task, standardized)
    params = params_for(task)
    kwargs = dict(alpha=0.1, beta=0.2, epochs=2, batch_size=32, variant=variant)

    got, loss = kernels.meta_train(params, sparse, rng=np.random.default_rng(2), **kwargs)
    ref, ref_loss = dense_meta_train(params, dense, rng=np.random.default_rng(2), **kwargs)

    assert np.abs(ref["fc2.weight"] - params["fc2.weight"]).max() > 0.01
    assert_params_close(got, ref)
    assert loss == pytest.approx(ref_loss, rel=1e-5)


@pytest.mark.parametrize("variant", kernels.VARIANTS)
def test_meta_train_on_one_batch_uses_it_for_every_role_as_the_numpy_per_fedavg(variant):
    sparse, dense = make_data("income", standardized=False, n=40)  # 32 training records: one batch
    params = params_for("income")
    kwargs = dict(alpha=0.1, beta=0.1, epochs=2, batch_size=32, variant=variant)
    got, loss = kernels.meta_train(params, sparse, rng=np.random.default_rng(0), **kwargs)
    ref, ref_loss = dense_meta_train(params, dense, rng=np.random.default_rng(0), **kwargs)
    assert np.abs(ref["fc2.weight"] - params["fc2.weight"]).max() > 0
    assert_params_close(got, ref)
    assert loss == pytest.approx(ref_loss, rel=1e-5)


def test_an_unknown_meta_variant_is_refused_naming_the_choices():
    sparse, _ = make_data("income", standardized=False, n=50)
    with pytest.raises(ValueError, match="first-order, hessian-free"):
        kernels.meta_train(params_for("income"), sparse, alpha=0.1, beta=0.1, epochs=1, batch_size=8,
                           rng=np.random.default_rng(0), variant="second-order")


@pytest.mark.parametrize("task, standardized", SHAPES, ids=IDS)
def test_adapt_equals_the_numpy_adaptation_and_draws_the_same_randomness(task, standardized):
    sparse, dense = make_data(task, standardized, n=150)  # 120 training records: 4 batches per epoch
    params = params_for(task)
    rng, ref_rng = np.random.default_rng(6), np.random.default_rng(6)

    got = kernels.adapt(params, sparse, steps=7, lr=0.2, batch_size=32, rng=rng)
    ref = dense_adapt(params, dense, steps=7, lr=0.2, batch_size=32, rng=ref_rng)

    assert_params_close(got, ref)
    assert rng.random() == ref_rng.random()


def test_zero_adaptation_steps_return_the_model():
    sparse, _ = make_data("income", standardized=False, n=50)
    params = params_for("income")
    same = kernels.adapt(params, sparse, steps=0, lr=0.1, batch_size=32, rng=np.random.default_rng(0))
    for key in PARAM_KEYS:
        np.testing.assert_array_equal(same[key], params[key])


@pytest.mark.parametrize("task, standardized", SHAPES, ids=IDS)
def test_evaluate_gives_the_loss_and_the_confusion_counts_of_evaluate_local(task, standardized):
    sparse, dense = make_data(task, standardized)
    trained, _ = train_sgd(params_for(task), dense.x, dense.y, lr=0.2, epochs=3, batch_size=32,
                           rng=np.random.default_rng(0))
    loss, counts = kernels.evaluate(trained, sparse, dense.groups)
    ref = evaluate_local(trained, dense, client_index=0)

    assert loss == pytest.approx(ref.loss, rel=1e-5)
    assert set(counts) == set(ref.counts) == {"sex", "race"}
    for attribute, table in counts.items():
        assert table.dtype == np.int64 and table.shape == (2, 4)
        np.testing.assert_array_equal(table, ref.counts[attribute])
    predictions = kernels.predict_logits(trained, sparse) >= 0
    assert 0 < predictions.mean() < 1  # both classes predicted: the counts are not trivial
    np.testing.assert_array_equal(counts["sex"], confusion_counts(dense.y >= 0.5, predictions, dense.groups["sex"]))


@pytest.mark.parametrize("dtype", [np.int8, np.int64, np.bool_])
def test_group_counts_equal_confusion_counts_nan_logits_included(dtype):
    rng = np.random.default_rng(3)
    logits = rng.normal(size=500).astype(np.float32)
    logits[[0, 7, 40]] = [np.nan, 0.0, -0.0]
    y = (rng.random(500) < 0.4).astype(np.float32)
    group = (rng.random(500) < 0.3).astype(dtype)

    counts = kernels.group_counts(logits, y, group)

    assert counts.dtype == np.int64
    np.testing.assert_array_equal(counts, confusion_counts(y >= 0.5, logits >= 0, group))


def test_group_counts_reject_a_group_outside_0_1():
    group = np.array([0, 1, 2], np.int8)
    with pytest.raises(ValueError, match="only 0/1"):
        kernels.group_counts(np.zeros(3, np.float32), np.ones(3, np.float32), group)


@pytest.mark.parametrize("fair_metric", kernels.FAIR_METRICS)
def test_score_models_equals_the_dense_ifca_scores_with_nan_where_undefined(fair_metric):
    sparse, dense = make_data("employment", standardized=True)
    group = dense.groups["sex"]
    # No positive labels in group 1: its TPR, so the eo and eodds gaps, are undefined.
    y = np.where(group == 1, 0.0, dense.y).astype(np.float32)
    sparse = kernels.SparseSplit(sparse.codes, y, sparse.col, sparse.val, sparse.width, sparse.shift, sparse.scale)
    dense = Split(dense.x, y, dense.groups)
    models = [params_for("employment", seed) for seed in range(3)]

    losses, gaps = kernels.score_models(models, sparse, group, fair_metric)
    ref_losses, ref_gaps = dense_score_models(models, dense, "sex", fair_metric)

    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    np.testing.assert_array_equal(gaps, ref_gaps)
    assert np.isnan(gaps).all() == (fair_metric != "sp")


def test_an_unknown_fair_metric_is_refused_naming_the_choices():
    sparse, dense = make_data("income", standardized=False, n=50)
    with pytest.raises(ValueError, match="sp, eo, eodds"):
        kernels.score_models([params_for("income")], sparse, dense.groups["sex"], "accuracy")


def test_update_vector_is_the_float64_delta_in_parameter_order():
    before, after = params_for("income", 0), params_for("income", 1)
    vector = kernels.update_vector(before, after)
    assert vector.dtype == np.float64 and vector.shape == (sum(before[k].size for k in PARAM_KEYS),)
    np.testing.assert_array_equal(vector[: before["fc1.weight"].size],
                                  (after["fc1.weight"].astype(np.float64) - before["fc1.weight"]).ravel())
    assert vector[-1] == np.float64(after["fc2.bias"][0]) - np.float64(before["fc2.bias"][0])


def test_a_batch_size_below_one_is_refused():
    sparse, _ = make_data("income", standardized=False, n=50)
    with pytest.raises(ValueError, match="batch-size must be at least 1, got 0"):
        kernels.train_sgd(params_for("income"), sparse, lr=0.1, epochs=1, batch_size=0, rng=np.random.default_rng(0))


def test_a_dense_matrix_in_sparse_form_expands_back_to_exactly_itself():
    x = np.array([[0.0, 1.5, -2.0], [0.0, 0.0, 0.0], [3.0, 0.0, 0.25]], np.float32)
    sparse = kernels.sparse_from_dense(x, np.array([1, 0, 1], np.float32))
    assert sparse.codes.shape == (3, 2)
    assert np.array_equal(sparse.dense(), x)


def test_compiled_code_is_cached_by_source_content_not_by_path(tmp_path):
    """`flwr run` installs the app under a new directory every run; a copy must find the cache."""
    source = open(kernels.__file__, "rb").read()
    copies = [tmp_path / name / "kernels.py" for name in ("run-1", "run-2", "edited")]
    for copy in copies:
        copy.parent.mkdir()
        copy.write_bytes(source)
    copies[2].write_bytes(source + b"\n# edited\n")
    folders = [ContentLocator.get_suitable_cache_subpath(str(copy)) for copy in copies]
    assert folders[0] == folders[1] != folders[2]
    assert folders[0] == ContentLocator.get_suitable_cache_subpath(kernels.__file__)
