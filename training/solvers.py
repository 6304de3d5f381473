"""The solvers DIGITS offered (Caffe's), plus AdamW, as optax transformations.

Each is optax's implementation arranged to follow Caffe's update rule; with
gradient g, weights w, learning rate lr (from the schedule), weight decay λ:

    sgd       v <- μ v + (g + λ w);            w <- w - lr v
    nesterov  v <- μ v + (g + λ w);            w <- w - lr (g + λ w + μ v)
    adagrad   h <- h + g²;                     w <- w - lr g / sqrt(h + δ)
    rmsprop   r <- ρ r + (1 - ρ) g²;           w <- w - lr g / (sqrt(r) + δ)
    adadelta  a <- ρ a + (1 - ρ) g²;  u = g sqrt(d + δ) / sqrt(a + δ);  d <- ρ d + (1 - ρ) u²;  w <- w - lr u
    adam      Adam with bias correction (β1, β2, δ)
    adamw     Adam, then w <- w - lr λ w (decoupled decay instead of the L2 term)

For every solver but adamw, g already includes the L2 term λ w, as Caffe's
weight_decay did. Caffe keeps lr inside SGD's momentum buffer; optax applies
the current lr to the whole buffer: the same while the rate is constant. Caffe
puts AdaGrad's δ outside the square root; optax puts it inside, which differs
only for gradients below about 1e-4.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from training.schedules import Schedule

if TYPE_CHECKING:
    import optax

# The solvers by name, with the name a person reads: the one list the form, the model and
# the engine share. JAX and optax are imported by ``make`` only, so the list costs nothing.
SOLVERS = {
    "sgd": "SGD with momentum",
    "nesterov": "Nesterov's accelerated gradient",
    "adagrad": "AdaGrad",
    "rmsprop": "RMSprop",
    "adadelta": "AdaDelta",
    "adam": "Adam",
    "adamw": "AdamW",
}


# Values each solver keeps per weight between updates: its moments or accumulators.
STATE_SLOTS = {"sgd": 1, "nesterov": 1, "adagrad": 1, "rmsprop": 1, "adadelta": 2, "adam": 2, "adamw": 2}


def state_slots(solver: str, *, momentum: float = 0.9, batch_accumulation: int = 1) -> int:
    """Values per weight the optimizer state of ``make(solver, ...)`` holds, for memory
    estimates: SGD without momentum keeps none, batch accumulation adds the running sum."""
    slots = 0 if solver == "sgd" and not momentum else STATE_SLOTS[solver]
    return slots + (1 if batch_accumulation > 1 else 0)


# Cached: the engine keys its compiled steps on the transformation object, so
# repeated runs with the same settings must get the very same one back.
@functools.lru_cache(maxsize=32)
def make(
    solver: str,
    learning_rate: float | Schedule,
    *,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    rms_decay: float = 0.99,
    adadelta_decay: float = 0.9,
    adam_beta1: float = 0.9,
    adam_beta2: float = 0.999,
    delta: float = 1e-8,
    batch_accumulation: int = 1,
) -> optax.GradientTransformation:
    """The optax transformation for ``solver``; ``learning_rate`` is a constant or
    a ``schedules.Schedule`` of the update count.

    With ``batch_accumulation`` N > 1, gradients of N consecutive batches are
    averaged into one update (Caffe's iter_size); the schedule then counts updates.
    """
    if solver not in SOLVERS:
        raise ValueError(f'Unknown solver "{solver}". Available solvers: {", ".join(SOLVERS)}.')
    import jax.numpy as jnp
    import optax

    if isinstance(learning_rate, Schedule) and learning_rate.policy == "fixed" and not learning_rate.warmup:
        learning_rate = learning_rate.base_lr  # a constant: no step counter to carry and update
    elif isinstance(learning_rate, Schedule):
        schedule = learning_rate
        learning_rate = lambda count: schedule(count, xp=jnp)  # noqa: E731  (the same formula, traced)
    if solver == "adamw":
        tx = optax.adamw(learning_rate, b1=adam_beta1, b2=adam_beta2, eps=delta, weight_decay=weight_decay)
    else:
        scale = {
            "sgd": lambda: optax.trace(decay=momentum) if momentum else optax.identity(),
            "nesterov": lambda: optax.trace(decay=momentum, nesterov=True),
            "adagrad": lambda: optax.scale_by_rss(initial_accumulator_value=0.0, eps=delta),
            "rmsprop": lambda: optax.scale_by_rms(decay=rms_decay, eps=delta, eps_in_sqrt=False),
            "adadelta": lambda: optax.scale_by_adadelta(rho=adadelta_decay, eps=delta),
            "adam": lambda: optax.scale_by_adam(b1=adam_beta1, b2=adam_beta2, eps=delta),
        }[solver]()
        decay = optax.add_decayed_weights(weight_decay) if weight_decay else optax.identity()
        tx = optax.chain(decay, scale, optax.scale_by_learning_rate(learning_rate))
    if batch_accumulation > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=batch_accumulation).gradient_transformation()
    return tx
