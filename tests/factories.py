from accounts import tokens
from accounts.models import Visibility
from datasets.models import Dataset
from training.models import EpochMetric, Experiment


def make_dataset(owner, *, visibility=Visibility.PRIVATE, team=None, **fields):
    defaults = {
        "name": f"{owner.username} digits",
        "source_folder": "/nowhere",
        "status": Dataset.Status.DONE,
        "classes": ["0", "1"],
        "counts": {"train": [40, 40], "val": [10, 10]},
    }
    return Dataset.objects.create(owner=owner, visibility=visibility, team=team, **{**defaults, **fields})


def make_experiment(owner, dataset=None, *, visibility=Visibility.PRIVATE, team=None, **fields):
    dataset = dataset or make_dataset(owner, visibility=visibility, team=team)
    defaults = {"name": f"{owner.username} lenet", "status": Experiment.Status.DONE, "epochs": 2}
    experiment = Experiment.objects.create(
        owner=owner, dataset=dataset, visibility=visibility, team=team, **{**defaults, **fields}
    )
    EpochMetric.objects.create(
        experiment=experiment, epoch=1, train_loss=1.5, val_loss=1.2, val_accuracy=0.61, learning_rate=0.01
    )
    return experiment


def make_token(user, name="test token", **opts):
    """A new API token; its secret is on `.key`, as DRF's authtoken had it."""
    token, secret = tokens.create(user, name, **opts)
    token.key = secret
    return token
