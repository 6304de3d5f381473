"""The standard networks users pick by name: LeNet, AlexNet, GoogLeNet, ResNet-20.

Each is spec text generated for the image size (see its module), so the
network "Customize" puts in the editor is exactly the one that trains.
"""

from __future__ import annotations

import functools

from flax import nnx

from ..network import Plan, SpecNetwork, plan_network
from ..spec import Spec, SpecError, parse_spec
from . import alexnet, googlenet, lenet, resnet

# Past this the scan for a minimum size gives up; every standard network
# fits far smaller images.
_MAX_MIN_SIZE = 512


class StandardNetwork:
    """One standard network. Calling it builds the network for a dataset, as
    the hand-written LeNet class this replaces did."""

    def __init__(self, name: str, module):
        self.name = name
        self.title: str = module.TITLE
        self.native_shape: tuple[int, int, int] = module.NATIVE_SHAPE
        self._spec_text = module.spec_text

    def __repr__(self) -> str:
        return f"<StandardNetwork {self.name}>"

    def spec_text(self, input_shape: tuple[int, ...] | None = None) -> str:
        """The YAML spec for images of ``input_shape`` (default: the size the
        network was designed for). Only height and width change the text."""
        height, width = (input_shape or self.native_shape)[:2]
        return self._spec_text(height, width)

    def spec(self, input_shape: tuple[int, ...] | None = None) -> Spec:
        return _parse(self.spec_text(input_shape))

    @functools.cached_property
    def min_size(self) -> int:
        """Smallest square image side this network takes.

        Scanned rather than bisected: the stems change with the size, so
        whether a size fits need not be monotonic across the switch.
        """
        for side in range(1, _MAX_MIN_SIZE + 1):
            error = plan_network(self.spec((side, side)), (side, side, 3), 2).error
            if error is None:
                return side
        raise AssertionError(f"{self.title} fits no image up to {_MAX_MIN_SIZE} pixels")

    def plan(self, input_shape, num_classes: int) -> Plan:
        return plan_network(self.spec(input_shape), input_shape, num_classes)

    def too_small(self, plan: Plan) -> SpecError | None:
        """The user's words for a plan that failed because the images are too
        small: not pinned to a layer, since the user did not write them."""
        height, width = plan.input_shape[:2]
        if plan.error is None or not plan.error.too_small or min(height, width) >= self.min_size:
            return None
        return SpecError(
            f"{self.title} needs images of at least {self.min_size}x{self.min_size} pixels; "
            f"this dataset's images are {height}x{width}.",
            too_small=True,
        )

    def __call__(self, input_shape, num_classes: int, *, rngs: nnx.Rngs) -> SpecNetwork:
        plan = self.plan(tuple(input_shape), num_classes)
        error = self.too_small(plan) or plan.error
        if error is not None:
            raise error
        return SpecNetwork(plan, rngs=rngs)


@functools.lru_cache(maxsize=32)
def _parse(text: str) -> Spec:
    return parse_spec(text)


NETWORKS: dict[str, StandardNetwork] = {
    name: StandardNetwork(name, module)
    for name, module in (("lenet", lenet), ("alexnet", alexnet), ("googlenet", googlenet), ("resnet", resnet))
}

__all__ = ["NETWORKS", "StandardNetwork"]
