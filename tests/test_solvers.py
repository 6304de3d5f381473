"""Solvers and learning-rate policies against values worked out by hand.

Each solver takes two steps on the quadratic loss 0.5 * |w|^2 (gradient w),
with L2 weight decay, and is checked against the update rule written out in
numpy; each policy against Caffe's formula evaluated by hand at a few
iterations. No Django, no training.
"""

import math
import subprocess
import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from training import schedules, solvers

ROOT = Path(__file__).resolve().parent.parent

W0 = np.array([1.0, -2.0, 0.5])
LR, WD = 0.1, 0.01


def two_steps(tx, w0=W0):
    """Weights after each of two updates of tx on loss 0.5 * |w|^2."""
    w = jnp.asarray(w0, jnp.float32)
    state = tx.init(w)
    out = []
    for _ in range(2):
        updates, state = tx.update(w, state, w)  # the gradient of 0.5 |w|^2 is w
        w = optax.apply_updates(w, updates)
        out.append(np.asarray(w, np.float64))
    return out


def expected(update_rule, w0=W0):
    """Apply a hand-written rule(g, memory) -> (step, memory) for two steps; g includes L2."""
    w, memory, out = w0.copy(), None, []
    for _ in range(2):
        step, memory = update_rule(w + WD * w, memory)
        w = w - step
        out.append(w.copy())
    return out


def test_sgd_with_momentum():
    def rule(g, v):
        v = g if v is None else 0.9 * v + g
        return LR * v, v

    got = two_steps(solvers.make("sgd", LR, momentum=0.9, weight_decay=WD))
    np.testing.assert_allclose(got, expected(rule), rtol=1e-6)
    # Spelled out once: w1 = w0 - lr * 1.01 w0.
    np.testing.assert_allclose(got[0], W0 * (1 - LR * 1.01), rtol=1e-6)


def test_sgd_without_momentum_is_plain_gradient_descent():
    got = two_steps(solvers.make("sgd", LR, momentum=0.0, weight_decay=0.0))
    np.testing.assert_allclose(got[1], W0 * 0.9**2, rtol=1e-6)


def test_nesterov():
    def rule(g, v):
        v = g if v is None else 0.9 * v + g
        return LR * (g + 0.9 * v), v

    got = two_steps(solvers.make("nesterov", LR, momentum=0.9, weight_decay=WD))
    np.testing.assert_allclose(got, expected(rule), rtol=1e-6)


def test_adagrad():
    delta = 1e-8

    def rule(g, h):
        h = g**2 if h is None else h + g**2
        return LR * g / np.sqrt(h + delta), h

    got = two_steps(solvers.make("adagrad", LR, weight_decay=WD, delta=delta))
    np.testing.assert_allclose(got, expected(rule), rtol=1e-5)
    # First AdaGrad step moves every weight by lr, whatever its gradient.
    np.testing.assert_allclose(np.abs(got[0] - W0), LR, rtol=1e-5)


def test_rmsprop_follows_caffe():
    decay, delta = 0.99, 1e-8

    def rule(g, r):
        r = (1 - decay) * g**2 if r is None else decay * r + (1 - decay) * g**2
        return LR * g / (np.sqrt(r) + delta), r

    got = two_steps(solvers.make("rmsprop", LR, weight_decay=WD, rms_decay=decay, delta=delta))
    # Step 1 moves each weight by lr / sqrt(1 - decay) = 1.0: w0 = 1 lands on 0 up to float32 rounding.
    np.testing.assert_allclose(got, expected(rule), rtol=1e-5, atol=1e-6)


def test_adadelta_follows_caffe():
    rho, delta = 0.9, 1e-6

    def rule(g, memory):
        a, d = memory if memory is not None else (0 * g, 0 * g)
        a = rho * a + (1 - rho) * g**2
        u = g * np.sqrt(d + delta) / np.sqrt(a + delta)
        d = rho * d + (1 - rho) * u**2
        return LR * u, (a, d)

    got = two_steps(solvers.make("adadelta", LR, weight_decay=WD, adadelta_decay=rho, delta=delta))
    np.testing.assert_allclose(got, expected(rule), rtol=1e-5)


def test_adam():
    b1, b2, eps = 0.9, 0.999, 1e-8

    def rule(g, memory):
        m, v, t = memory if memory is not None else (0 * g, 0 * g, 0)
        t += 1
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g**2
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        return LR * m_hat / (np.sqrt(v_hat) + eps), (m, v, t)

    got = two_steps(solvers.make("adam", LR, weight_decay=WD, adam_beta1=b1, adam_beta2=b2, delta=eps))
    np.testing.assert_allclose(got, expected(rule), rtol=1e-5)
    # Adam's first step is lr * sign(g).
    np.testing.assert_allclose(got[0], W0 - LR * np.sign(W0), rtol=1e-5)


def test_adamw_decays_the_weights_not_the_gradient():
    wd = 0.1
    got = two_steps(solvers.make("adamw", LR, weight_decay=wd))
    # Step 1: Adam moves lr * sign(g) on the bare gradient, then w -= lr * wd * w.
    np.testing.assert_allclose(got[0], W0 - LR * np.sign(W0) - LR * wd * W0, rtol=1e-5)


def test_schedule_drives_the_update_count():
    # Step policy: the rate drops by 10x after 2 of 4 updates.
    schedule = schedules.LRPolicy("step", step_size=50, step_gamma=0.1).schedule(LR, max_iter=4)
    tx = solvers.make("sgd", schedule, momentum=0.0, weight_decay=0.0)
    w = jnp.ones(1)
    state = tx.init(w)
    rates = []
    for _ in range(4):
        updates, state = tx.update(w, state, w)
        rates.append(float(-updates[0] / w[0]))
        w = optax.apply_updates(w, updates)
    np.testing.assert_allclose(rates, [0.1, 0.1, 0.01, 0.01], rtol=1e-6)


def test_batch_accumulation_averages_before_updating():
    tx = solvers.make("sgd", LR, momentum=0.0, weight_decay=0.0, batch_accumulation=2)
    w = jnp.zeros(1)
    state = tx.init(w)
    updates, state = tx.update(jnp.array([1.0]), state, w)
    assert float(updates[0]) == 0.0  # first of two batches: nothing applied yet
    updates, state = tx.update(jnp.array([3.0]), state, w)
    np.testing.assert_allclose(updates, [-LR * 2.0])  # the mean gradient, once


def test_same_settings_give_the_same_transformation():
    # The engine keys its compiled steps on the transformation object.
    schedule = schedules.LRPolicy("poly").schedule(0.01, 100)
    assert solvers.make("adam", schedule) is solvers.make("adam", schedules.LRPolicy("poly").schedule(0.01, 100))
    # A fixed rate is the same schedule whatever the run's length; poly's depends on it.
    assert schedules.LRPolicy().schedule(0.01, 10) == schedules.LRPolicy().schedule(0.01, 1000)
    assert schedules.LRPolicy("poly").schedule(0.01, 10) != schedules.LRPolicy("poly").schedule(0.01, 1000)


def test_unknown_solver():
    with pytest.raises(ValueError, match='Unknown solver "lbfgs"'):
        solvers.make("lbfgs", 0.1)


# --- learning-rate policies -------------------------------------------------------
# DIGITS' conversion at max_iter = 200 (2 iterations per percent), base rate 0.01.

BASE, MAX_ITER = 0.01, 200


@pytest.mark.parametrize(
    ("policy", "points"),
    [
        (schedules.LRPolicy("fixed"), {0: 0.01, 150: 0.01, 199: 0.01}),
        # step 33 % -> stepsize ceil(66) = 66.
        (schedules.LRPolicy("step"), {0: 0.01, 65: 0.01, 66: 0.001, 131: 0.001, 132: 1e-4, 199: 1e-5}),
        # multistep 50,85 % -> iterations 100 and 170, gamma 0.5.
        (schedules.LRPolicy("multistep"), {99: 0.01, 100: 0.005, 169: 0.005, 170: 0.0025}),
        # exp 0.95 per percent -> 0.95 per 2 iterations.
        (schedules.LRPolicy("exp"), {0: 0.01, 2: 0.0095, 10: 0.01 * 0.95**5}),
        # inv gamma 0.1/2 = 0.05 per iteration, power 0.5.
        (schedules.LRPolicy("inv"), {0: 0.01, 20: 0.01 / math.sqrt(2), 60: 0.005}),
        # poly power 3 over 200 iterations.
        (schedules.LRPolicy("poly"), {0: 0.01, 100: 0.00125, 150: 0.01 / 64}),
        # sigmoid: falls through half the rate at 50 % (iteration 100), steepness 0.1/2 per iteration.
        (schedules.LRPolicy("sigmoid"), {0: 0.01 / (1 + math.exp(-5)), 100: 0.005, 120: 0.01 / (1 + math.e)}),
        (schedules.LRPolicy("multistep", multistep_values="25, 50,75", multistep_gamma=0.1), {49: 0.01, 50: 0.001}),
    ],
)
def test_policies_match_hand_computed_rates(policy, points):
    policy.validate()
    schedule = policy.schedule(BASE, MAX_ITER)
    for iteration, rate in points.items():
        assert schedule(iteration) == pytest.approx(rate, rel=1e-9), iteration
        # The formula the optimizer runs on the device, in float32.
        assert float(jax.jit(lambda i, s=schedule: s(i, xp=jnp))(iteration)) == pytest.approx(rate, rel=1e-5)


def test_learning_rate_curve_for_the_form():
    config = types.SimpleNamespace(learning_rate=0.01, epochs=10, lr_policy=schedules.LRPolicy("step"))
    curve = schedules.learning_rate_curve(config, steps_per_epoch=20, points=101)
    assert len(curve) == 101
    assert curve[0] == (0.0, 0.01) and curve[-1][0] == 10.0
    # 200 updates, stepsize 66: epoch 3.2 is update 64, epoch 3.3 update 66.
    assert curve[32] == pytest.approx((3.2, 0.01)) and curve[33] == pytest.approx((3.3, 0.001))
    # With batch accumulation 2 there are half as many updates; percentages stay put.
    config.batch_accumulation = 2
    assert schedules.learning_rate_curve(config, 20, 11)[4] == pytest.approx((4.0, 0.001))


def test_schedules_import_without_jax():
    code = "import sys, training.schedules as s; s.LRPolicy('poly').schedule(0.1, 10)(3); print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_training_configuration_imports_and_checks_without_jax():
    # The form, the job, classify and the exports all read an experiment through it.
    code = (
        "import sys; from training import config; from types import SimpleNamespace as Row;"
        "c = config.from_experiment(Row(network='custom', network_spec='layers: []', epochs=2, batch_size=8,"
        " learning_rate=0.1, solver='adam', seed=1, options={'lr_policy': {'policy': 'step'},"
        " 'augmentation': {'flip': 'fliplr'}, 'val_interval': 0.5}));"
        "c.validate(); assert (c.solver, c.lr_policy.policy, c.augmentation.flip, c.val_interval)"
        " == ('adam', 'step', 'fliplr', 0.5);"
        "assert dict(config.SOLVER_CHOICES)['adam'] == 'Adam' and 'sigmoid' in dict(config.POLICY_CHOICES);"
        "print('jax' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_unknown_options_of_an_experiment_are_refused():
    from types import SimpleNamespace

    from training import config

    row = SimpleNamespace(
        network="lenet", network_spec="", epochs=1, batch_size=8, learning_rate=0.1, solver="sgd", seed=0,
        options={"warmup": 3},
    )  # fmt: skip
    with pytest.raises(ValueError, match="Unknown training options: warmup"):
        config.from_experiment(row)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"policy": "onecycle"}, "Unknown learning rate policy"),
        ({"policy": "cosine", "warmup": 60}, "Warm-up"),
        ({"policy": "step", "step_size": 0}, "Step size"),
        ({"policy": "multistep", "multistep_values": "85,50"}, "increasing order"),
        ({"policy": "exp", "exp_gamma": -1}, "Exponential gamma"),
        ({"policy": "poly", "poly_power": float("nan")}, "Polynomial power"),
    ],
)
def test_bad_policies_are_rejected(fields, message):
    with pytest.raises(ValueError, match=message):
        schedules.LRPolicy(**fields).validate()


def test_unparseable_multistep_values():
    with pytest.raises(ValueError, match="comma-separated list of percentages"):
        schedules.LRPolicy("multistep", multistep_values="50;85")
