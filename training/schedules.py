"""Learning-rate policies as DIGITS offered them, computed with Caffe's formulas.

Pure Python and NumPy, no JAX: the experiment form draws its live preview from
``learning_rate_curve`` without starting a JAX backend, and the engine builds
its optax schedule from the very same ``Schedule.__call__`` (with
``xp=jax.numpy``), so the preview and the training cannot disagree.

DIGITS let people give step sizes as percentages of the whole training and
turned them into Caffe's iteration counts when it wrote solver.prototxt
(digits/model/tasks/caffe_train.py); ``LRPolicy.schedule`` does the same
conversion, and ``Schedule`` is Caffe's SGDSolver::GetLearningRate. An
"iteration" is one optimizer update: with batch accumulation N batches make one.

Beyond DIGITS: a "cosine" policy (half a cosine from the base rate to 0 over the run)
and a linear warm-up in front of any policy (``LRPolicy.warmup``, 0 by default, so
DIGITS' policies are unchanged); training/recipes.py chooses them for short runs.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np

# The policies by name, with the name a person reads (the form's choices).
POLICIES = {
    "fixed": "Fixed",
    "step": "Step down",
    "multistep": "Step down (arbitrary steps)",
    "exp": "Exponential decay",
    "inv": "Inverse decay",
    "poly": "Polynomial decay",
    "sigmoid": "Sigmoid decay",
    "cosine": "Cosine decay",
}


@dataclasses.dataclass(frozen=True)
class LRPolicy:
    """A learning-rate policy with DIGITS' parameters and form defaults.

    Percentages are of the whole training (all epochs). Only the fields of the
    chosen ``policy`` matter; the others keep their defaults so that switching
    policy in a form keeps sensible values.
    """

    policy: str = "fixed"
    step_size: float = 33.0  # step: multiply by step_gamma every step_size % of training
    step_gamma: float = 0.1
    multistep_values: tuple[float, ...] = (50.0, 85.0)  # multistep: % of training; "50,85" is accepted
    multistep_gamma: float = 0.5
    exp_gamma: float = 0.95  # exp: factor per 1 % of training
    inv_gamma: float = 0.1  # inv: base_lr * (1 + gamma * percent) ^ -power
    inv_power: float = 0.5
    poly_power: float = 3.0  # poly: base_lr * (1 - progress) ^ power, reaching 0 at the end
    sigmoid_step: float = 50.0  # sigmoid: the half-way point, in % of training
    sigmoid_gamma: float = 0.1  # sigmoid: steepness per 1 % of training
    # Not DIGITS': the rate rises linearly from near 0 over the first warmup % of training,
    # then follows the policy (any one) as if it had started there. 0: none, as in DIGITS.
    warmup: float = 0.0

    def __post_init__(self):
        if isinstance(self.multistep_values, str):
            object.__setattr__(self, "multistep_values", parse_percentages(self.multistep_values))
        elif isinstance(self.multistep_values, list):
            object.__setattr__(self, "multistep_values", tuple(self.multistep_values))

    def validate(self) -> None:
        """Raise ValueError with a user-facing message for the first bad field."""
        if self.policy not in POLICIES:
            raise ValueError(f'Unknown learning rate policy "{self.policy}". Available: {", ".join(POLICIES)}.')
        if self.policy == "step":
            _check(self.step_size, "Step size", low=0, high=100, low_open=True)
            _check(self.step_gamma, "Step gamma", low=0, low_open=True)
        elif self.policy == "multistep":
            values = self.multistep_values
            if not values or not all(_is_real(v) for v in values):
                raise ValueError("Multi-step values must be a comma-separated list of percentages, e.g. 50,85.")
            for v in values:
                _check(v, "Each multi-step value", low=0, high=100, low_open=True)
            if list(values) != sorted(values):
                raise ValueError("Multi-step values must be in increasing order, e.g. 50,85.")
            _check(self.multistep_gamma, "Multi-step gamma", low=0, low_open=True)
        elif self.policy == "exp":
            _check(self.exp_gamma, "Exponential gamma", low=0, low_open=True)
        elif self.policy == "inv":
            _check(self.inv_gamma, "Inverse gamma", low=0)
            _check(self.inv_power, "Inverse power", low=0)
        elif self.policy == "poly":
            _check(self.poly_power, "Polynomial power", low=0)
        elif self.policy == "sigmoid":
            _check(self.sigmoid_step, "Sigmoid step", low=0, high=100)
            _check(self.sigmoid_gamma, "Sigmoid gamma", low=0)
        _check(self.warmup, "Warm-up", low=0, high=50)

    def schedule(self, base_lr: float, max_iter: int) -> Schedule:
        """This policy for a run of ``max_iter`` updates, in Caffe's parameters (DIGITS' conversion)."""
        max_iter = max(1, int(max_iter))
        scale = max_iter / 100.0  # iterations per 1 % of training
        # Fewer than one update of warm-up is none; a policy's own percentages stay of the whole run.
        warmup = math.floor(self.warmup * scale) if self.warmup else 0
        p, base_lr = self.policy, float(base_lr)
        if p == "step":
            schedule = Schedule(p, base_lr, gamma=self.step_gamma, stepsize=_iterations(self.step_size, scale))
        elif p == "multistep":
            stepvalues = tuple(_iterations(v, scale) for v in self.multistep_values)
            schedule = Schedule(p, base_lr, gamma=self.multistep_gamma, stepvalues=stepvalues)
        elif p == "exp":
            schedule = Schedule(p, base_lr, gamma=self.exp_gamma ** (1.0 / scale))
        elif p == "inv":
            schedule = Schedule(p, base_lr, gamma=self.inv_gamma / scale, power=self.inv_power)
        elif p == "poly":
            schedule = Schedule(p, base_lr, power=self.poly_power, max_iter=max_iter)
        elif p == "sigmoid":
            # Caffe's sigmoid rises for gamma > 0; DIGITS negated the user's gamma so the rate falls.
            stepsize = _iterations(self.sigmoid_step, scale)
            schedule = Schedule(p, base_lr, gamma=-self.sigmoid_gamma / scale, stepsize=stepsize)
        elif p == "cosine":
            # Half a cosine from base_lr down to 0 over the updates after the warm-up.
            schedule = Schedule(p, base_lr, max_iter=max_iter - warmup)
        else:
            schedule = Schedule("fixed", base_lr)
        return dataclasses.replace(schedule, warmup=warmup) if warmup else schedule


@dataclasses.dataclass(frozen=True)
class Schedule:
    """One run's policy in Caffe's own terms: iterations, not percentages.

    Frozen and hashable: the engine keys its compiled steps on it. Each field
    is set only when the policy's formula reads it, so that two runs with the
    same rates (say, "fixed" for 5 and for 10 epochs) share compiled steps.
    """

    policy: str
    base_lr: float
    gamma: float = 0.0
    power: float = 0.0
    stepsize: int = 1
    stepvalues: tuple[int, ...] = ()
    max_iter: int = 0  # poly: the run's length in updates; cosine: the updates after the warm-up
    warmup: int = 0  # updates of linear warm-up before the policy starts counting

    def __call__(self, iteration, xp=np):
        """The rate of update ``iteration`` (0-based), as Caffe's SGDSolver::GetLearningRate.

        ``xp`` is numpy (host: previews, metrics) or jax.numpy (inside the
        jitted optimizer update); the formula is written once for both.
        """
        it = xp.asarray(iteration) * 1.0  # float, in whichever precision xp defaults to
        if self.warmup:
            # Update i of the warm-up runs at (i + 1) / (warmup + 1) of the rate the policy starts at;
            # after it, the policy counts its updates from 0.
            ramp = xp.minimum((it + 1.0) / (self.warmup + 1.0), 1.0)
            return ramp * dataclasses.replace(self, warmup=0)(xp.maximum(it - self.warmup, 0.0), xp=xp)
        p, base = self.policy, self.base_lr
        if p == "step":
            return base * self.gamma ** xp.floor(it / self.stepsize)
        if p == "multistep":
            passed = 0.0 * it
            for value in self.stepvalues:
                passed = passed + (it >= value)
            return base * self.gamma**passed
        if p == "exp":
            return base * self.gamma**it
        if p == "inv":
            return base * (1.0 + self.gamma * it) ** (-self.power)
        if p == "poly":
            # Clipped at 0 so an iteration past max_iter cannot raise a negative number to a fractional power.
            return base * xp.maximum(1.0 - it / self.max_iter, 0.0) ** self.power
        if p == "sigmoid":
            return base / (1.0 + xp.exp(-self.gamma * (it - self.stepsize)))
        if p == "cosine":
            progress = xp.minimum(it / max(1, self.max_iter), 1.0)
            return base * 0.5 * (1.0 + xp.cos(math.pi * progress))
        return base + 0.0 * it


def steps_per_epoch(train_images: int, batch_size: int) -> int:
    """Training batches per epoch; the last partial batch is dropped, and a split
    smaller than one batch trains as a single batch."""
    return max(1, train_images // max(1, min(batch_size, train_images)))


def total_updates(steps: int, epochs: int, batch_accumulation: int = 1) -> int:
    """Optimizer updates in the whole run: Caffe's max_iter."""
    return max(1, steps * epochs // max(1, batch_accumulation))


def learning_rate_curve(config, steps_per_epoch: int, points: int = 101) -> list[tuple[float, float]]:
    """``points`` (epoch, learning rate) pairs evenly spaced over the run, for a chart.

    ``config`` is an ``engine.TrainConfig`` or anything with ``learning_rate``,
    ``epochs``, ``lr_policy`` (an LRPolicy) and optionally
    ``batch_accumulation``: a form can pass a ``types.SimpleNamespace`` without
    importing JAX. ``steps_per_epoch`` counts batches (see ``steps_per_epoch()``).
    The rate at epoch e is the one the update in progress at e uses.
    """
    if not _is_int(points) or points < 2:
        raise ValueError(f"A curve needs at least 2 points; got {points!r}.")
    accumulation = getattr(config, "batch_accumulation", 1)
    updates_per_epoch = steps_per_epoch / accumulation
    max_iter = total_updates(steps_per_epoch, config.epochs, accumulation)
    schedule = config.lr_policy.schedule(config.learning_rate, max_iter)
    epochs = np.linspace(0.0, config.epochs, points)
    iterations = np.minimum(np.floor(epochs * updates_per_epoch + 1e-9), max_iter - 1)
    rates = np.broadcast_to(schedule(iterations), iterations.shape)
    return [(float(e), float(r)) for e, r in zip(epochs, rates, strict=True)]


# Far above any rate that trains, and far inside float32 (3.4e38), the precision the
# device computes the schedule in: past it a run can only fail, or fail to compute.
LARGEST_RATE = 1e30


def check_rates(config, steps_per_epoch: int) -> None:
    """Raise ValueError, in the user's words, when the rate rises past LARGEST_RATE
    anywhere in the run (``config`` as for ``learning_rate_curve``).

    Every policy is monotonic in the update count, so the first and the last update
    bound the whole run (with a warm-up, the first update after it): a few evaluations,
    however long it is.
    """
    accumulation = getattr(config, "batch_accumulation", 1)
    max_iter = total_updates(steps_per_epoch, config.epochs, accumulation)
    try:
        schedule = config.lr_policy.schedule(config.learning_rate, max_iter)
        with np.errstate(over="ignore", under="ignore"):
            highest = float(np.max(schedule(np.array([0, min(schedule.warmup, max_iter - 1), max_iter - 1]))))
    except OverflowError:  # a gamma whose per-update root already leaves float64
        highest = math.inf
    if math.isfinite(highest) and highest <= LARGEST_RATE:
        return
    grows = f"grows to {highest:.3g}" if math.isfinite(highest) else "grows without bound"
    if highest > config.learning_rate:
        raise ValueError(
            f"With this gamma the learning rate {grows} within the run; training cannot compute with rates "
            f"past {LARGEST_RATE:g}. A gamma of at most 1 makes it decay."
        )
    raise ValueError(
        f"A learning rate of {config.learning_rate:g} is past {LARGEST_RATE:g}; training cannot compute with it."
    )


def parse_percentages(text: str) -> tuple[float, ...]:
    """ "50, 85" -> (50.0, 85.0); ValueError with a user-facing message otherwise."""
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(
            f'Multi-step values must be a comma-separated list of percentages, e.g. 50,85; got "{text}".'
        ) from None


def _iterations(percent: float, scale: float) -> int:
    # DIGITS rounded up; at least 1 so that "step every 0.1 %" of a short run still steps.
    return max(1, math.ceil(percent * scale))


def _check(value, name: str, *, low: float, high: float | None = None, low_open: bool = False) -> None:
    ok = _is_real(value) and math.isfinite(value) and (value > low if low_open else value >= low)
    if ok and high is not None:
        ok = value <= high
    if not ok:
        bound = f"greater than {low:g}" if low_open else f"at least {low:g}"
        if high is not None:
            bound += f" and at most {high:g}"
        raise ValueError(f"{name} must be a number {bound}; got {value!r}.")


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
