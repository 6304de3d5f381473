import io
import itertools
import math

from django import forms
from django.conf import settings
from django.db import transaction
from redis.exceptions import RedisError

from accounts.forms import SETTINGS_FIELDS, OwnedSettingsForm, check_sharing, offer_working_teams
from accounts.models import Visibility
from datasets.grouping import grouped_choices
from datasets.models import Dataset
from training import fetch, recipes, schedules
from training.config import (
    CUSTOM,
    EARLY_STOPPING_CHOICES,
    EXPORT_FORMAT_CHOICES,
    POLICY_CHOICES,
    SOLVER_CHOICES,
    SOLVERS,
    from_options,
    interval_problem,
    network_choices,
)
from training.models import Experiment, Snapshot, Sweep

MAX_SWEEP = 16
# The columns are PositiveIntegerField: 2**31 - 1 fits them on every database, and a seed
# below 2**32 is what jax.random.key takes.
MAX_SEED = 2**31 - 1
MAX_KEEP_SNAPSHOTS = 10_000

FLIP_CHOICES = [
    ("none", "None"),
    ("fliplr", "Horizontal"),
    ("flipud", "Vertical"),
    ("fliplrud", "Horizontal and vertical"),
]
QUAD_ROT_CHOICES = [
    ("none", "None"),
    ("rot90", "0, 90 or 270 degrees"),
    ("rot180", "0 or 180 degrees"),
    ("rotall", "0, 90, 180 or 270 degrees"),
]
MEAN_CHOICES = [("image", "Image"), ("pixel", "Pixel"), ("none", "None")]

# The initial solver, rate and schedule: the recipe of the initial network and epochs
# (training/recipes.py); the page fills in another network's, or another length's.
RECIPE = recipes.form_initial(recipes.DEFAULT_NETWORK, recipes.DEFAULT_EPOCHS)

# Form field → LRPolicy field; the names say which policy each belongs to.
POLICY_FIELDS = [
    "step_size",
    "step_gamma",
    "multistep_values",
    "multistep_gamma",
    "exp_gamma",
    "inv_gamma",
    "inv_power",
    "poly_power",
    "sigmoid_step",
    "sigmoid_gamma",
    "warmup",
]
SOLVER_FIELDS = ["momentum", "weight_decay", "rms_decay", "adadelta_decay", "adam_beta1", "adam_beta2", "delta"]
RUN_FIELDS = ["batch_accumulation", "shuffle", "val_interval", "snapshot_interval", "early_stopping", "patience"]
AUGMENTATION_FIELDS = ["use_mean", "crop_size", "flip", "quad_rot", "rotation", "noise", "hsv"]


# The policies whose gamma > 1 makes the rate grow over the run: that field is to blame
# when it grows out of range.
GROWING_GAMMA = {"step": "step_gamma", "multistep": "multistep_gamma", "exp": "exp_gamma"}


def _count(n):
    return f"{n / 1e6:.0f} M" if n >= 10**7 else f"{n / 1e6:.1f} M" if n >= 10**6 else f"{n:,}"


def _size(n):
    return f"{n / 1e9:.1f} GB" if n >= 10**9 else f"{n / 1e6:.0f} MB"


def parse_values(text, kind, label):
    """ "0.01, 0.001" → [0.01, 0.001]: several values make a sweep."""
    values = []
    for part in str(text).replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            values.append(kind(part))
        except ValueError:
            raise forms.ValidationError(f"“{part}” is not a valid {label}.") from None
    if not values:
        raise forms.ValidationError(f"Give at least one {label}.")
    return list(dict.fromkeys(values))


class ExperimentForm(forms.Form):
    """Everything DIGITS let people set for a classification model, and what it lacked.

    Several learning rates and/or batch sizes create one experiment per combination,
    grouped in a sweep.
    """

    name = forms.CharField(max_length=200)
    dataset = forms.TypedChoiceField(coerce=int)
    network = forms.ChoiceField(choices=network_choices, initial=recipes.DEFAULT_NETWORK)
    network_spec = forms.CharField(
        required=False,
        label="Custom network",
        widget=forms.Textarea(attrs={"rows": 16, "spellcheck": "false", "class": "code"}),
        help_text="Layers in YAML or JSON. “Customize” loads a standard network to start from.",
    )
    pretrained = forms.ModelChoiceField(
        queryset=Snapshot.objects.none(),
        required=False,
        label="Pretrained weights",
        empty_label="— none: random initialisation —",
        help_text="Fine-tune from a snapshot; layers that do not fit (the classifier, for another class count) "
        "start fresh.",
    )

    epochs = forms.IntegerField(min_value=1, max_value=1000, initial=recipes.DEFAULT_EPOCHS)
    batch_sizes = forms.CharField(
        label="Batch size", initial="64", help_text="Several values separated by commas create a sweep."
    )
    batch_accumulation = forms.IntegerField(
        min_value=1, max_value=256, initial=1, help_text="Batches averaged into one update."
    )
    shuffle = forms.BooleanField(required=False, initial=True, help_text="A new order every epoch.")
    seed = forms.IntegerField(
        min_value=0, max_value=MAX_SEED, initial=0, help_text="Same seed, data and settings: the same run."
    )

    solver = forms.ChoiceField(choices=SOLVER_CHOICES, initial=RECIPE["solver"])
    learning_rates = forms.CharField(
        label="Base learning rate",
        initial=RECIPE["learning_rates"],
        help_text="Several values separated by commas create a sweep.",
    )
    momentum = forms.FloatField(initial=RECIPE["momentum"], help_text="SGD and Nesterov.")
    weight_decay = forms.FloatField(
        required=False,
        min_value=0,
        initial=RECIPE["weight_decay"] or None,
        help_text="Empty: DIGITS' default, learning rate / 100.",
    )
    rms_decay = forms.FloatField(initial=0.99, label="RMS decay", help_text="RMSprop.")
    adadelta_decay = forms.FloatField(initial=0.9, label="AdaDelta decay")
    adam_beta1 = forms.FloatField(initial=0.9, label="Adam β1")
    adam_beta2 = forms.FloatField(initial=0.999, label="Adam β2")
    delta = forms.FloatField(initial=1e-8, label="Delta (ε)", help_text="AdaGrad, RMSprop, AdaDelta, Adam.")

    lr_policy = forms.ChoiceField(choices=POLICY_CHOICES, initial=RECIPE["lr_policy"], label="Policy")
    step_size = forms.FloatField(initial=33, label="Step size (%)", help_text="Step down every this % of training.")
    step_gamma = forms.FloatField(initial=0.1, label="Gamma")
    multistep_values = forms.CharField(initial="50,85", label="Step values (%)")
    multistep_gamma = forms.FloatField(initial=0.5, label="Gamma")
    exp_gamma = forms.FloatField(initial=0.95, label="Gamma")
    inv_gamma = forms.FloatField(initial=0.1, label="Gamma")
    inv_power = forms.FloatField(initial=0.5, label="Power")
    poly_power = forms.FloatField(initial=3, label="Power")
    sigmoid_step = forms.FloatField(initial=50, label="Step (%)")
    sigmoid_gamma = forms.FloatField(initial=0.1, label="Gamma")
    warmup = forms.FloatField(
        initial=RECIPE["warmup"],
        min_value=0,
        max_value=50,
        label="Warm-up (%)",
        help_text="The rate rises from near 0 over this % of training, then follows the policy. 0: none.",
    )

    use_mean = forms.ChoiceField(choices=MEAN_CHOICES, initial="image", label="Subtract mean")
    crop_size = forms.IntegerField(
        required=False, min_value=1, help_text="Random crops in training, centre crops otherwise. Empty: none."
    )
    flip = forms.ChoiceField(choices=FLIP_CHOICES, initial="none", label="Flipping")
    quad_rot = forms.ChoiceField(choices=QUAD_ROT_CHOICES, initial="none", label="Quarter turns")
    rotation = forms.FloatField(initial=0, min_value=0, max_value=180, label="Rotation (± degrees)")
    noise = forms.FloatField(initial=0, min_value=0, max_value=1, label="Noise (std. dev.)")
    hsv = forms.BooleanField(required=False, label="HSV shifting", help_text="Colour images only.")

    val_interval = forms.FloatField(
        initial=1, min_value=0, label="Validation interval (epochs)", help_text="0.5 validates twice an epoch."
    )
    snapshot_interval = forms.FloatField(initial=1, min_value=0, label="Snapshot interval (epochs)")
    keep_snapshots = forms.IntegerField(
        initial=3,
        min_value=0,
        max_value=MAX_KEEP_SNAPSHOTS,
        label="Keep snapshots",
        help_text="The newest this many, and the best. 0 keeps all.",
    )
    early_stopping = forms.ChoiceField(choices=EARLY_STOPPING_CHOICES, required=False, label="Early stopping on")
    patience = forms.IntegerField(initial=5, min_value=1, help_text="Validations without improvement.")

    queue = forms.ChoiceField(label="Run on", initial="training")
    visibility = forms.ChoiceField(
        choices=Visibility.choices,
        initial=Visibility.PRIVATE,
        help_text="Who may see it: no more people than may see its dataset and its pretrained weights.",
    )
    team = forms.ModelChoiceField(queryset=None, required=False, empty_label="— no team —")

    sections = [
        ("Dataset and network", ["name", "dataset", "network", "network_spec", "pretrained"]),
        ("Solver", ["solver", "learning_rates", "momentum", "weight_decay", "rms_decay", "adadelta_decay",
                    "adam_beta1", "adam_beta2", "delta"]),
        ("Learning rate policy", ["lr_policy", *POLICY_FIELDS]),
        ("Training", ["epochs", "batch_sizes", "batch_accumulation", "shuffle", "seed", "val_interval",
                      "early_stopping", "patience", "snapshot_interval", "keep_snapshots"]),
        ("Data transformations", AUGMENTATION_FIELDS),
        ("Run and share", ["queue", "visibility", "team"]),
    ]  # fmt: skip

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        from training import workers

        self.user = user
        self.datasets = Dataset.objects.visible_to(user).trainable().select_related("team")
        self.fields["dataset"].choices = grouped_choices(self.datasets)
        visible = Experiment.objects.visible_to(user)
        self.fields["pretrained"].queryset = Snapshot.objects.filter(experiment__in=visible).select_related(
            "experiment"
        )
        self.fields["pretrained"].label_from_instance = lambda s: f"{s.experiment.name} — epoch {s.epoch_label}"
        try:
            self.fields["queue"].choices = workers.worker_device_choices()
            self.queues_paused = False
        except RedisError:
            # Redis knows the devices; without it the experiment waits for the next free one.
            self.fields["queue"].choices = [(workers.SHARED_QUEUE, workers.SHARED_LABEL)]
            self.queues_paused = True
        offer_working_teams(self)

    # --- Field checks: each error lands next to the field that caused it. --------------
    def clean_learning_rates(self):
        rates = parse_values(self.cleaned_data["learning_rates"], float, "learning rate")
        for rate in rates:
            if not math.isfinite(rate) or rate <= 0:
                raise forms.ValidationError("The learning rate must be a number greater than 0.")
        return rates

    def clean_batch_sizes(self):
        sizes = parse_values(self.cleaned_data["batch_sizes"], int, "batch size")
        if any(size < 1 for size in sizes):
            raise forms.ValidationError("A batch size must be at least 1.")
        return sizes

    def clean_multistep_values(self):
        try:
            return list(schedules.parse_percentages(self.cleaned_data["multistep_values"]))
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_dataset(self):
        dataset = self.datasets.filter(pk=self.cleaned_data["dataset"]).first()
        if dataset is None:
            raise forms.ValidationError("Choose a ready dataset you may use.")
        return dataset

    def clean(self):
        cleaned = super().clean()
        dataset = cleaned.get("dataset") if isinstance(cleaned.get("dataset"), Dataset) else None
        check_sharing(self, cleaned, experiment_sources(dataset, cleaned.get("pretrained")))
        rates, sizes = cleaned.get("learning_rates"), cleaned.get("batch_sizes")
        if rates and sizes and len(rates) * len(sizes) > MAX_SWEEP:
            self.add_error("learning_rates", f"A sweep may have at most {MAX_SWEEP} combinations.")
        dataset = cleaned.get("dataset")
        if not isinstance(dataset, Dataset) or self.errors:
            return cleaned

        if sizes and max(sizes) > dataset.train_count:
            self.add_error("batch_sizes", f"At most the {dataset.train_count} images of the dataset's training split.")
            return cleaned
        network = self.network_for_engine()
        if cleaned.get("network") == CUSTOM and not cleaned.get("network_spec", "").strip():
            self.add_error("network_spec", "Write the custom network here, or press Customize to start from one.")
            return cleaned
        self._check_with_engine(dataset, network)
        return cleaned

    def _check_with_engine(self, dataset, network):
        """The engine has the last word on settings: it must accept every experiment this
        form creates, and its messages are written for people. The network is checked
        first, so its error lands on the network's own field."""
        from models.networks import check_input

        configs = self.train_configs()
        try:
            configs[0].augmentation.validate(dataset.image_shape)
        except ValueError as exc:
            self.add_error(None, str(exc))
            return
        input_shape = configs[0].augmentation.input_shape(dataset.image_shape)
        problem = check_input(network, input_shape, len(dataset.classes))
        if problem:
            field = "network_spec" if self.cleaned_data["network"] == CUSTOM else "network"
            self.add_error(field, problem)
            return
        for config in configs:
            try:
                config.validate()
            except ValueError as exc:
                self.add_error(None, str(exc))
                return
        self._check_run(dataset, configs)
        if not self.errors:
            self._check_memory(configs, input_shape, len(dataset.classes))

    def _check_run(self, dataset, configs):
        """What needs the steps per epoch, as the engine checks it again: intervals of at
        least one step, and a learning rate that stays computable over the whole run."""
        for config in configs:
            steps = schedules.steps_per_epoch(dataset.train_count, config.batch_size)
            for name in ("val_interval", "snapshot_interval"):
                problem = interval_problem(config, name, steps)
                if problem:
                    self.add_error(name, problem)
                    return
            try:
                schedules.check_rates(config, steps)
            except ValueError as exc:
                gamma = GROWING_GAMMA.get(config.lr_policy.policy)
                self.add_error(gamma if gamma and getattr(config.lr_policy, gamma) > 1 else "learning_rates", str(exc))
                return

    def _check_memory(self, configs, input_shape, num_classes):
        """Refuse before the queue what a worker could not hold: the caps are the
        installation's (TRAINING_MAX_PARAMETERS, TRAINING_MAX_MEMORY_BYTES)."""
        from models.networks import estimate_memory
        from training import solvers

        config = max(configs, key=lambda c: c.batch_size)  # the largest batch of a sweep needs the most
        slots = solvers.state_slots(
            config.solver, momentum=config.momentum, batch_accumulation=config.batch_accumulation
        )
        estimate = estimate_memory(
            config.network, input_shape, num_classes, batch_size=config.batch_size, optimizer_slots=slots
        )
        field = "network_spec" if self.cleaned_data["network"] == CUSTOM else "network"
        if estimate.parameters > settings.TRAINING_MAX_PARAMETERS:
            self.add_error(
                field,
                f"This network has {_count(estimate.parameters)} parameters; this installation allows at most "
                f"{_count(settings.TRAINING_MAX_PARAMETERS)}.",
            )
        elif estimate.bytes > settings.TRAINING_MAX_MEMORY_BYTES:
            self.add_error(
                field,
                f"This network needs about {_size(estimate.bytes)} ({_count(estimate.parameters)} parameters, "
                f"{SOLVERS[config.solver]}) at batch size {config.batch_size}; this installation "
                f"allows {_size(settings.TRAINING_MAX_MEMORY_BYTES)}.",
            )

    # --- What the form makes ----------------------------------------------------------
    def network_for_engine(self):
        if self.cleaned_data.get("network") == CUSTOM:
            return self.cleaned_data.get("network_spec", "")
        return self.cleaned_data.get("network")

    def options(self):
        """Experiment.options: the engine's TrainConfig fields beyond the columns."""
        data = self.cleaned_data
        options = {name: data[name] for name in SOLVER_FIELDS + RUN_FIELDS}
        options["early_stopping"] = data["early_stopping"] or None
        options["lr_policy"] = {"policy": data["lr_policy"], **{name: data[name] for name in POLICY_FIELDS}}
        options["augmentation"] = {name: data[name] for name in AUGMENTATION_FIELDS}
        return options

    def train_configs(self):
        """The TrainConfig of each experiment this form creates, made as the job makes it."""
        data = self.cleaned_data
        return [
            from_options(
                network=self.network_for_engine(),
                epochs=data["epochs"],
                batch_size=size,
                learning_rate=rate,
                solver=data["solver"],
                seed=data["seed"],
                options=self.options(),
            )
            for rate, size in itertools.product(data["learning_rates"], data["batch_sizes"])
        ]

    @transaction.atomic
    def create(self):
        """One experiment, or one per learning rate × batch size in a sweep."""
        data = self.cleaned_data
        combinations = list(itertools.product(data["learning_rates"], data["batch_sizes"]))
        shared = {
            "owner": self.user,
            "team": data["team"],
            "visibility": data["visibility"],
        }
        sweep = Sweep.objects.create(name=data["name"], **shared) if len(combinations) > 1 else None
        experiments = []
        for rate, size in combinations:
            name = data["name"] if sweep is None else f"{data['name']} · lr {rate:g} · batch {size}"
            experiment = Experiment.objects.create(
                name=name,
                dataset=data["dataset"],
                sweep=sweep,
                network=data["network"],
                network_spec=data["network_spec"] if data["network"] == CUSTOM else "",
                pretrained=data["pretrained"],
                epochs=data["epochs"],
                batch_size=size,
                learning_rate=rate,
                solver=data["solver"],
                seed=data["seed"],
                options=self.options(),
                keep_snapshots=data["keep_snapshots"],
                queue=data["queue"],
                **shared,
            )
            experiment.submit()
            experiments.append(experiment)
        return sweep, experiments


def experiment_sources(dataset, pretrained):
    """What an experiment is made from, for the sharing rule: its dataset, and the experiment
    whose snapshot it starts from."""
    return [(dataset, "an experiment on it"), (pretrained and pretrained.experiment, "a fine-tune of its snapshots")]


def sharing_of(datasets, snapshots):
    """{"datasets": {id: [visibility, team id]}, "snapshots": {...}}: what the form's script
    needs to offer only the visibilities the chosen dataset and weights allow."""
    return {
        "datasets": {d.pk: [d.visibility, d.team_id] for d in datasets},
        "snapshots": {s.pk: [s.experiment.visibility, s.experiment.team_id] for s in snapshots},
    }


class ExperimentSettingsForm(OwnedSettingsForm):
    """An experiment's name and who sees it, under the same rule as when it was made."""

    class Meta:
        model = Experiment
        fields = SETTINGS_FIELDS

    def sharing_sources(self):
        return experiment_sources(self.instance.dataset, self.instance.pretrained)

    def made_from_this(self):
        return list(Experiment.objects.filter(pretrained__experiment=self.instance).select_related("team"))


def initial_from(experiment):
    """The form's initial values to clone an experiment."""
    options = dict(experiment.options)
    policy = options.pop("lr_policy", {})
    augmentation = options.pop("augmentation", {})
    initial = {
        "name": f"{experiment.name} (clone)",
        "dataset": experiment.dataset_id,
        "network": experiment.network,
        "network_spec": experiment.network_spec,
        "pretrained": experiment.pretrained_id,
        "epochs": experiment.epochs,
        "batch_sizes": str(experiment.batch_size),
        "learning_rates": f"{experiment.learning_rate:g}",
        "solver": experiment.solver,
        "seed": experiment.seed,
        "keep_snapshots": experiment.keep_snapshots,
        "queue": experiment.queue,
        "visibility": experiment.visibility,
        "team": experiment.team_id,
        "lr_policy": policy.get("policy", "fixed"),
        "warmup": 0.0,  # experiments from before warm-ups had none
        **{k: v for k, v in policy.items() if k != "policy"},
        **augmentation,
        **options,
    }
    if isinstance(initial.get("multistep_values"), list | tuple):
        initial["multistep_values"] = ",".join(f"{v:g}" for v in initial["multistep_values"])
    initial["early_stopping"] = initial.get("early_stopping") or ""
    return initial


class ClassifyForm(forms.Form):
    """One image, uploaded or fetched from a URL, and what to show about it. The page and
    the API both use it; a URL is fetched while cleaning, so its refusal lands on it."""

    image = forms.FileField(required=False, help_text="Any common format, any size, color or gray.")
    url = forms.CharField(
        label="or the URL of an online image",
        required=False,
        max_length=2000,
        widget=forms.URLInput(attrs={"placeholder": "https://…"}),
    )
    snapshot = forms.ModelChoiceField(queryset=None, empty_label=None)
    layers = forms.BooleanField(label="Show layers", required=False)
    tiles = forms.BooleanField(required=False)  # the API asks; the page always draws them
    saliency = forms.BooleanField(label="Saliency", required=False)
    saliency_class = forms.CharField(label="Saliency also for", required=False)

    def __init__(self, *args, snapshots, classes=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.classes = list(classes)
        self.fields["snapshot"].queryset = snapshots
        self.fields["snapshot"].label_from_instance = lambda s: f"Epoch {s.epoch_label}"
        choices = [("", "only the top class")] + [(label, label) for label in self.classes]
        self.fields["saliency_class"].widget = forms.Select(choices=choices)

    def clean_saliency_class(self):
        """The class index: a label, or else an index (a script may know either)."""
        value = str(self.cleaned_data["saliency_class"]).strip()
        if value == "":
            return None
        if value in self.classes:
            return self.classes.index(value)
        if value.isdigit() and int(value) < len(self.classes):
            return int(value)
        shown = ", ".join(self.classes[:10]) + (", …" if len(self.classes) > 10 else "")
        raise forms.ValidationError(
            f"There is no class “{value}”. Give one of the labels ({shown}) or an index from 0 to "
            f"{len(self.classes) - 1}."
        )

    def clean(self):
        cleaned = super().clean()
        image, url = cleaned.get("image"), cleaned.get("url")
        if "url" in self.errors or "image" in self.errors:
            return cleaned
        if image and url:
            self.add_error("url", "Give an image file or a URL, not both.")
        elif not image and not url:
            self.add_error("image", "Choose an image file, or give the URL of one.")
        elif url:
            try:
                cleaned["image"] = io.BytesIO(fetch.fetch(url, url_limits()))
            except fetch.FetchError as exc:
                self.add_error("url", str(exc))
        return cleaned

    @property
    def image_field(self):
        """The field a bad image is the fault of."""
        return "url" if self.cleaned_data.get("url") else "image"


def url_limits():
    """How far the server goes for a URL to classify; an installation may change it."""
    defaults = fetch.Limits()
    return fetch.Limits(
        max_bytes=getattr(settings, "CLASSIFY_URL_MAX_BYTES", defaults.max_bytes),
        connect_timeout=getattr(settings, "CLASSIFY_URL_CONNECT_TIMEOUT", defaults.connect_timeout),
        total_timeout=getattr(settings, "CLASSIFY_URL_TIMEOUT", defaults.total_timeout),
        max_redirects=defaults.max_redirects,
        allowed_hosts=tuple(getattr(settings, "CLASSIFY_URL_ALLOWED_HOSTS", ())),
    )


def data_with_defaults(data):
    """Form data for a script that names only what it cares about: every field it left
    out takes the form's initial value, as if submitted untouched; the solver, rate and
    schedule are the recipe of the network and epochs it gives, as the page fills them in."""
    merged = {}
    form = ExperimentForm.base_fields
    recipe = recipes.form_initial(data.get("network"), data.get("epochs"))
    for name, field in form.items():
        initial = recipe.get(name, field.initial)
        if initial is None:
            continue
        if isinstance(field, forms.BooleanField):
            merged[name] = "on" if initial else ""
        else:
            merged[name] = str(initial)
    aliases = {"learning_rate": "learning_rates", "batch_size": "batch_sizes"}
    for key, value in data.items():
        key = aliases.get(key, key)
        if isinstance(value, bool):
            value = "on" if value else ""
        elif isinstance(value, list | tuple):
            value = ",".join(str(v) for v in value)
        merged[key] = value
    return merged


class ExportForm(forms.Form):
    """Which format to export a snapshot as: the page's buttons and the API submit it."""

    format = forms.ChoiceField(choices=EXPORT_FORMAT_CHOICES)
