"""Default training recipes: the solver, rate and schedule each standard network starts
with, fitted to the length of the run.

DIGITS started every network with SGD at 0.01, stepped down tenfold every 33 % of
training. For a short run that is a poor start: at 3 epochs the rate drops after the
first one, and two thirds of the run learn at a tenth of the rate. A recipe instead
decays along a half cosine over the whole run, whatever its length, after a linear
warm-up of a set number of epochs (capped at a share of a short run), with the solver
and rate that suit the network.

The new-experiment page fills a recipe in when the network or the number of epochs
changes, and the API takes the same values for any field a request leaves out; the
form's initial values are the recipe of its initial network and epochs. DIGITS'
policies all stay available: a recipe only chooses among them.

Pure Python: no JAX and no Django, so the form and the web process can use it.
LeNet's recipe is measured (tests/test_recipes.py trains it on real digits); the others
follow the published settings of their networks and are too slow to measure on a CPU.
"""

from __future__ import annotations

import dataclasses

from training.schedules import POLICIES, LRPolicy
from training.solvers import SOLVERS

# The form's initial network and number of epochs: its initial values are their recipe.
DEFAULT_NETWORK = "lenet"
DEFAULT_EPOCHS = 30

# A warm-up takes at most this % of a run, however short: the rest must train.
MAX_WARMUP = 10.0


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How a network trains by default; ``for_epochs`` fits it to a run."""

    title: str
    solver: str
    learning_rate: float
    momentum: float = 0.9  # sgd and nesterov
    weight_decay: float | None = None  # None: DIGITS' learning rate / 100
    policy: str = "cosine"
    warmup_epochs: float = 0.0  # the linear warm-up, in epochs (capped at MAX_WARMUP % of the run)
    source: str = ""  # where the values come from, for the page

    def warmup(self, epochs: int) -> float:
        """The warm-up as a % of a run of ``epochs``, rounded to a tenth."""
        if not self.warmup_epochs:
            return 0.0
        return round(min(MAX_WARMUP, 100.0 * self.warmup_epochs / max(1, epochs)), 1)

    def lr_policy(self, epochs: int) -> LRPolicy:
        return LRPolicy(policy=self.policy, warmup=self.warmup(epochs))

    def settings(self, epochs: int) -> dict:
        """The TrainConfig fields this recipe sets, for a run of ``epochs``."""
        return {
            "solver": self.solver,
            "learning_rate": self.learning_rate,
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
            "lr_policy": self.lr_policy(epochs),
        }

    def fields(self, epochs: int) -> dict:
        """The experiment form's fields this recipe sets, as the form names them."""
        return {
            "solver": self.solver,
            "learning_rates": f"{self.learning_rate:g}",
            "momentum": self.momentum,
            "weight_decay": "" if self.weight_decay is None else f"{self.weight_decay:g}",
            "lr_policy": self.policy,
            "warmup": self.warmup(epochs),
        }

    def summary(self, epochs: int) -> str:
        """What will run, in a sentence for the page."""
        solver = (
            SOLVERS[self.solver]
            if self.solver not in ("sgd", "nesterov")
            else (f"{SOLVERS[self.solver]} {self.momentum:g}")
        )
        decay = "learning rate / 100" if self.weight_decay is None else f"{self.weight_decay:g}"
        warmup = self.warmup(epochs)
        schedule = POLICIES[self.policy].lower() + " over the run"
        if warmup:
            schedule = f"{warmup:g} % warm-up, then {schedule}"
        run = f"{epochs} epoch" + ("s" if epochs != 1 else "")
        text = (
            f"Recipe for {self.title}, {run}: {solver}, learning rate {self.learning_rate:g}, "
            f"weight decay {decay}, {schedule}."
        )
        return f"{text} {self.source}" if self.source else text

    def validate(self) -> None:
        """Raise ValueError if the recipe names what the engine does not know."""
        if self.solver not in SOLVERS:
            raise ValueError(f'The recipe for {self.title} names an unknown solver "{self.solver}".')
        if not self.learning_rate > 0 or (self.weight_decay is not None and self.weight_decay < 0):
            raise ValueError(f"The recipe for {self.title} needs a positive rate and a weight decay of at least 0.")
        for epochs in (1, 3, DEFAULT_EPOCHS, 1000):
            self.lr_policy(epochs).validate()


RECIPES = {
    # Measured on real digits at 3 epochs (tests/test_recipes.py): Adam at 0.003 with a
    # cosine decay was at or near the best of every setting tried, over three seeds; a
    # warm-up made no difference to this small network, so it has none.
    "lenet": Recipe(
        "LeNet",
        "adam",
        0.003,
        source="Measured on real digits at 3 epochs.",
    ),
    # Krizhevsky et al. (2012): SGD with momentum 0.9 at 0.01, weight decay 5e-4; no
    # batch normalisation, so a warm-up of one epoch keeps the first updates from diverging.
    "alexnet": Recipe(
        "AlexNet",
        "sgd",
        0.01,
        weight_decay=5e-4,
        warmup_epochs=1,
        source="From the network's paper (AlexNet, 2012).",
    ),
    # Szegedy et al. (2014) trained with momentum SGD; 0.01 with weight decay 2e-4 and a
    # warm-up of an epoch is the usual start for this depth without batch normalisation.
    "googlenet": Recipe(
        "GoogLeNet",
        "sgd",
        0.01,
        weight_decay=2e-4,
        warmup_epochs=1,
        source="From the network's paper (GoogLeNet, 2014).",
    ),
    # He et al. (2015), ResNet-20 on CIFAR: SGD 0.1, momentum 0.9, weight decay 1e-4, with
    # a warm-up (they warmed ResNet-110 at a tenth of the rate); batch normalisation lets
    # this rate train.
    "resnet": Recipe(
        "ResNet-20",
        "sgd",
        0.1,
        weight_decay=1e-4,
        warmup_epochs=1,
        source="From the network's paper (ResNet, 2015).",
    ),
}

# A custom network: nothing is known of it, so Adam, the most forgiving of the rate.
CUSTOM_RECIPE = Recipe(
    "a custom network",
    "adam",
    0.001,
    warmup_epochs=0.5,
    source="A general start for an unknown network.",
)


def recipe_for(network: str) -> Recipe:
    """The recipe of a standard network by name; any other (custom) network's is CUSTOM_RECIPE."""
    return RECIPES.get(network, CUSTOM_RECIPE)


def form_initial_epochs(epochs) -> int:
    """``epochs`` as a form or a request gives it, or the form's default where it is not a
    whole number of at least 1 (the form then says why)."""
    try:
        epochs = int(str(epochs))
    except ValueError:
        return DEFAULT_EPOCHS
    return epochs if epochs >= 1 else DEFAULT_EPOCHS


def form_initial(network: str | None = None, epochs=None) -> dict:
    """The experiment form's recipe fields for ``network`` and ``epochs`` (the form's
    defaults where missing or wrong)."""
    network = network if isinstance(network, str) and network else DEFAULT_NETWORK
    return recipe_for(network).fields(form_initial_epochs(epochs))
