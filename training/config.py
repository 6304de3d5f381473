"""One experiment's training configuration, and the one way to make it from a row.

The engine trains from a ``TrainConfig``; the form checks one before anything is
queued, the job builds one from the experiment, and classification, Visualize and the
exports read the same row the same way, through ``from_experiment``. Pure Python: no
JAX and no Django at import, so the web process and the form can use it freely. Only
``TrainConfig.validate`` asks the network registry (models.networks, which imports
JAX and Flax) whether a bare name is a standard network, and only when it is given one.

The choices a person picks from come from the cores that implement them: solvers from
``training.solvers``, learning-rate policies from ``training.schedules``, standard
networks from ``models.networks`` (``network_choices``).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from collections.abc import Mapping

from training.schedules import POLICIES, LRPolicy  # noqa: F401  (the policies' home; re-exported)
from training.solvers import SOLVERS

# A custom network is spec text in the experiment's network_spec; every other value of
# its network is the name of a standard one.
CUSTOM = "custom"
CUSTOM_TITLE = "Custom network"
EARLY_STOPPING = {"val_loss": "Validation loss", "val_accuracy": "Validation accuracy"}

# As models.networks reads it: a bare word is a network name, anything else spec text.
_NETWORK_NAME = re.compile(r"[\w.-]+")


def _standard_networks():
    from models.networks import NETWORKS

    return NETWORKS


def standard_networks():
    """(name, title) of every standard network, from the registry (so it imports JAX; call
    it, don't run it at import: a web process needs JAX only for the form and classifying)."""
    from models.networks import STANDARD_NETWORKS

    return STANDARD_NETWORKS


def network_choices():
    """The form's choices: every standard network, then the custom one."""
    return [*standard_networks(), (CUSTOM, CUSTOM_TITLE)]


def network_title(name):
    if name == CUSTOM:
        return CUSTOM_TITLE
    network = _standard_networks().get(name)
    return network.title if network is not None else name


SOLVER_CHOICES = list(SOLVERS.items())
POLICY_CHOICES = list(POLICIES.items())
EARLY_STOPPING_CHOICES = [("", "Off"), *EARLY_STOPPING.items()]

# What training.export_formats writes (it imports JAX; the pages and the ORM read these).
EXPORT_FORMATS = {"onnx": "ONNX", "stablehlo": "StableHLO"}
EXPORT_FORMAT_CHOICES = list(EXPORT_FORMATS.items())
# Standard networks a format cannot hold, and why; tests/test_exports.py checks the reason.
# Custom networks are tried: the export job checks every file and says why one failed.
EXPORT_LIMITS = {
    ("resnet", "onnx"): (
        "ResNet-20 does not export to ONNX: jax2onnx converts it, but onnxruntime rejects the file "
        "(the shapes of its residual additions come out wrong). StableHLO holds it."
    ),
}


def export_problem(network, fmt):
    """Why a standard network cannot be exported to `fmt`, or None."""
    return EXPORT_LIMITS.get((network, fmt))


# --- Data transformations ---------------------------------------------------------

MEANS = ("none", "image", "pixel")
FLIPS = ("none", "fliplr", "flipud", "fliplrud")
# DIGITS' "quadrilateral rotation" choices -> the quarter turns each may draw.
QUAD_ROTATIONS = {"none": (0,), "rot90": (0, 1, 3), "rot180": (0, 2), "rotall": (0, 1, 2, 3)}


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """What happens to images on their way into the network; DIGITS' names and defaults.

    Frozen so it can be a static argument of the jitted steps.
    """

    use_mean: str = "image"  # subtract the dataset's mean "image", its per-channel mean "pixel", or "none"
    crop_size: int | None = None  # square crop: random in training, centre otherwise; the network's input size
    flip: str = "none"  # random "fliplr" (horizontal), "flipud" (vertical), "fliplrud" (each independently)
    quad_rot: str = "none"  # random quarter turns: "rot90" (0/90/270), "rot180" (0/180), "rotall"
    rotation: float = 0.0  # random rotation, uniform in ± this many degrees (bilinear)
    noise: float = 0.0  # standard deviation of added Gaussian noise
    hsv: bool = False  # random hue/saturation/value shifts (colour images only)
    hsv_h: float = 0.02  # standard deviations of those shifts
    hsv_s: float = 0.04
    hsv_v: float = 0.06

    @property
    def is_random(self) -> bool:
        """Whether the training transform differs from ``eval_transform``."""
        return bool(
            self.crop_size is not None
            or self.flip != "none"
            or self.quad_rot != "none"
            or self.rotation
            or self.noise
            or self.hsv
        )

    def input_shape(self, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """The (height, width, channels) the network receives for dataset images of ``image_shape``."""
        if self.crop_size is None:
            return tuple(image_shape)
        return (self.crop_size, self.crop_size, image_shape[2])

    def validate(self, image_shape: tuple[int, int, int] | None = None) -> None:
        """Raise ValueError with a user-facing message for the first bad field."""
        if self.use_mean not in MEANS:
            raise ValueError(f'Mean subtraction must be one of {", ".join(MEANS)}; got "{self.use_mean}".')
        if self.crop_size is not None:
            if not _is_int(self.crop_size) or self.crop_size < 1:
                raise ValueError(f"Crop size must be a whole number of at least 1; got {self.crop_size!r}.")
            if image_shape is not None and self.crop_size > min(image_shape[:2]):
                raise ValueError(
                    f"Crop size {self.crop_size} is larger than the images ({image_shape[0]}x{image_shape[1]})."
                )
        if self.flip not in FLIPS:
            raise ValueError(f'Flipping must be one of {", ".join(FLIPS)}; got "{self.flip}".')
        if self.quad_rot not in QUAD_ROTATIONS:
            raise ValueError(
                f'Quarter-turn rotation must be one of {", ".join(QUAD_ROTATIONS)}; got "{self.quad_rot}".'
            )
        if image_shape is not None and self.quad_rot in ("rot90", "rotall"):
            height, width, _ = self.input_shape(image_shape)
            if height != width:
                raise ValueError(
                    f"90-degree rotations need square images (or a crop size); these are {height}x{width}."
                )
        _check_range(self.rotation, "Rotation", 0, 180)
        _check_range(self.noise, "Noise", 0, 1)
        if not isinstance(self.hsv, bool):
            raise ValueError(f"HSV shifting must be true or false; got {self.hsv!r}.")
        for name in ("hsv_h", "hsv_s", "hsv_v"):
            _check_range(getattr(self, name), f"HSV {name[-1].upper()} shift", 0, 0.5)


def _check_range(value, name: str, low: float, high: float) -> None:
    if not (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)):
        raise ValueError(f"{name} must be a number from {low:g} to {high:g}; got {value!r}.")
    if not low <= value <= high:
        raise ValueError(f"{name} must be a number from {low:g} to {high:g}; got {value!r}.")


# --- The whole configuration -------------------------------------------------------


@dataclasses.dataclass
class TrainConfig:
    """One experiment's settings, with DIGITS' (Caffe's) defaults."""

    network: str | Mapping = "lenet"  # a standard name, or a spec (YAML/JSON text or mapping)
    epochs: int = 5
    batch_size: int = 64
    learning_rate: float = 0.01  # the base rate the policy scales
    solver: str = "sgd"  # one of SOLVERS
    momentum: float = 0.9  # sgd and nesterov
    seed: int = 0  # weights, shuffles, augmentation and dropout all follow from it
    weight_decay: float | None = None  # None: DIGITS' learning_rate / 100; L2 except adamw (decoupled)
    rms_decay: float = 0.99  # rmsprop
    adadelta_decay: float = 0.9  # adadelta (Caffe's momentum, which DIGITS set to 0.9)
    adam_beta1: float = 0.9  # adam, adamw (Caffe's momentum)
    adam_beta2: float = 0.999  # adam, adamw (Caffe's momentum2)
    delta: float = 1e-8  # adagrad, rmsprop, adadelta, adam, adamw: Caffe's numerical-stability term
    lr_policy: LRPolicy = dataclasses.field(default_factory=LRPolicy)
    batch_accumulation: int = 1  # batches averaged into one update (Caffe's iter_size)
    shuffle: bool = True  # a fresh order every epoch; off: the dataset's order every epoch
    val_interval: float = 1.0  # validate every this many epochs (0.5: twice an epoch); 0: only at the end
    snapshot_interval: float = 1.0  # snapshot every this many epochs; 0: only at the end
    early_stopping: str | None = None  # None, "val_loss" or "val_accuracy"
    patience: int = 5  # validations in a row without improvement before early stopping
    augmentation: Augmentation = dataclasses.field(default_factory=Augmentation)

    @property
    def resolved_weight_decay(self) -> float:
        return self.learning_rate / 100.0 if self.weight_decay is None else float(self.weight_decay)

    def validate(self) -> None:
        """Raise ValueError with a user-facing message for the first bad field."""
        # A bare name must be a known one; a spec (text or mapping) is for build_network to judge.
        name = self.network.strip() if isinstance(self.network, str) else None
        if name is not None and _NETWORK_NAME.fullmatch(name) and name not in _standard_networks():
            known = ", ".join(sorted(_standard_networks()))
            raise ValueError(f'Unknown network "{self.network}". Available networks: {known}.')
        if not _is_real(self.learning_rate) or not math.isfinite(self.learning_rate) or self.learning_rate <= 0:
            raise ValueError(f"Learning rate must be a finite number greater than 0; got {self.learning_rate!r}.")
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise ValueError(f"Batch size must be a whole number of at least 1; got {self.batch_size!r}.")
        if not _is_int(self.epochs) or self.epochs < 1:
            raise ValueError(f"Number of epochs must be a whole number of at least 1; got {self.epochs!r}.")
        if self.solver not in SOLVERS:
            raise ValueError(f'Unknown solver "{self.solver}". Available solvers: {", ".join(SOLVERS)}.')
        for name, label in (
            ("momentum", "Momentum"),
            ("rms_decay", "RMS decay"),
            ("adadelta_decay", "AdaDelta decay"),
            ("adam_beta1", "Adam beta1"),
            ("adam_beta2", "Adam beta2"),
        ):
            value = getattr(self, name)
            if not _is_real(value) or not 0 <= value < 1:
                raise ValueError(f"{label} must be a number from 0 up to (not including) 1; got {value!r}.")
        if self.weight_decay is not None and not (
            _is_real(self.weight_decay) and math.isfinite(self.weight_decay) and self.weight_decay >= 0
        ):
            raise ValueError(f"Weight decay must be a number of at least 0; got {self.weight_decay!r}.")
        if not _is_real(self.delta) or not 0 < self.delta < 1:
            raise ValueError(f"Delta must be a small number greater than 0; got {self.delta!r}.")
        if not _is_int(self.seed) or not 0 <= self.seed < 2**32:
            raise ValueError(f"Seed must be a whole number from 0 to {2**32 - 1}; got {self.seed!r}.")
        if not isinstance(self.lr_policy, LRPolicy):
            raise ValueError("The learning rate policy must be an LRPolicy.")
        self.lr_policy.validate()
        if not _is_int(self.batch_accumulation) or self.batch_accumulation < 1:
            raise ValueError(
                f"Batch accumulation must be a whole number of at least 1; got {self.batch_accumulation!r}."
            )
        if not isinstance(self.shuffle, bool):
            raise ValueError(f"Shuffle must be true or false; got {self.shuffle!r}.")
        for name, label in (("val_interval", "Validation interval"), ("snapshot_interval", "Snapshot interval")):
            value = getattr(self, name)
            if not _is_real(value) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{label} must be a number of epochs of at least 0; got {value!r}.")
        if self.early_stopping not in (None, *EARLY_STOPPING):
            raise ValueError(f'Early stopping watches "val_loss" or "val_accuracy"; got {self.early_stopping!r}.')
        if not _is_int(self.patience) or self.patience < 1:
            raise ValueError(f"Patience must be a whole number of at least 1; got {self.patience!r}.")
        if not isinstance(self.augmentation, Augmentation):
            raise ValueError("The data transformations must be an Augmentation.")
        self.augmentation.validate()


_INTERVAL_LABELS = {"val_interval": "The validation interval", "snapshot_interval": "The snapshot interval"}


def interval_problem(config: TrainConfig, name: str, steps_per_epoch: int) -> str | None:
    """Why ``config``'s interval ``name`` (in epochs) is too short for this many steps
    per epoch, or None. Below one step it would come after every step anyway; so tiny
    an interval is a slip, not a wish."""
    interval = getattr(config, name)
    if interval == 0 or round(interval * steps_per_epoch, 6) >= 1:
        return None
    shortest = _round_up(1 / steps_per_epoch)
    return (
        f"{_INTERVAL_LABELS[name]} must be 0 (only at the end) or at least one step: {shortest:g} epochs "
        f"({steps_per_epoch} steps per epoch at batch size {config.batch_size})."
    )


def _round_up(value: float, digits: int = 3) -> float:
    """``value`` rounded up to ``digits`` significant digits: a floor shown this way is
    one that typing it back passes."""
    quantum = 10.0 ** (math.floor(math.log10(value)) - digits + 1)
    return math.ceil(round(value / quantum, 9)) * quantum


# --- From an experiment -------------------------------------------------------------


def network_of(network, network_spec):
    """What the engine builds: the spec text of a custom network, else the standard name."""
    return network_spec if network == CUSTOM else network


def from_options(*, network, epochs, batch_size, learning_rate, solver, seed, options):
    """A TrainConfig from an experiment's columns and its ``options`` (the rest of the
    TrainConfig, as the form stored it: solver parameters, ``lr_policy`` and
    ``augmentation`` as dicts, intervals, early stopping). Unknown options are refused."""
    options = dict(options)
    lr_policy = LRPolicy(**options.pop("lr_policy", {}))
    augmentation = Augmentation(**options.pop("augmentation", {}))
    known = {field.name for field in dataclasses.fields(TrainConfig)}
    unknown = set(options) - known
    if unknown:
        raise ValueError(f"Unknown training options: {', '.join(sorted(unknown))}.")
    return TrainConfig(
        network=network,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        solver=solver,
        seed=seed,
        lr_policy=lr_policy,
        augmentation=augmentation,
        **options,
    )


def from_experiment(experiment) -> TrainConfig:
    """The engine's TrainConfig from an experiment row (anything with its fields)."""
    return from_options(
        network=network_of(experiment.network, experiment.network_spec),
        epochs=experiment.epochs,
        batch_size=experiment.batch_size,
        learning_rate=experiment.learning_rate,
        solver=experiment.solver,
        seed=experiment.seed,
        options=experiment.options,
    )


def augmentation_of(experiment) -> Augmentation:
    """Only the data transformations: what classifying and exporting need, without the
    checks a whole TrainConfig would make of the other options."""
    return Augmentation(**experiment.options.get("augmentation", {}))


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
