"""Network architectures the platform can train, keyed by the name users pick.

Importing this package imports JAX and Flax but does not initialise a JAX
backend; building a network does.
"""

import math

import jax
from flax import nnx

from .lenet import LeNet

NETWORKS = {"lenet": LeNet}


def build_network(
    name: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    rngs: nnx.Rngs,
) -> nnx.Module:
    """Instantiate network ``name`` for (height, width, channels) images.

    Raises ValueError with a message fit for the end user when the network is
    unknown or cannot take this input.
    """
    try:
        network = NETWORKS[name]
    except KeyError:
        known = ", ".join(sorted(NETWORKS))
        raise ValueError(f'Unknown network "{name}". Available networks: {known}.') from None
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(f"Images must have a height, width and channel count of at least 1; got {tuple(input_shape)}.")
    if num_classes < 2:
        raise ValueError(f"A classifier needs at least 2 classes; this dataset has {num_classes}.")
    return network(tuple(input_shape), num_classes, rngs=rngs)


def count_params(model: nnx.Module) -> int:
    """Number of trainable parameters (works on ``nnx.eval_shape`` models too)."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))


def check_input(name: str, input_shape: tuple[int, int, int], num_classes: int) -> str | None:
    """Why network ``name`` cannot take this dataset, in the user's words, or None.

    Built under ``nnx.eval_shape``: only shapes are traced, no weights are allocated.
    """
    try:
        nnx.eval_shape(lambda: build_network(name, input_shape, num_classes, rngs=nnx.Rngs(0)))
    except ValueError as exc:
        return str(exc)
    return None
