"""Bad input gets a clear answer: a 400 naming the field and the reason from the API, an
error next to the field on the pages; never a 500, a crashed job or a job that hogs its
worker. Also what keeps a quiet connection quiet: an idle WebSocket stays open."""

import json
import logging
import re
import shutil
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from django.urls import reverse
from flax import nnx
from sklearn.datasets import load_digits
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from accounts.models import Visibility
from datasets import rules
from datasets.models import Dataset
from models.networks import build_network, estimate_memory, train_mode
from tests.browser import serving
from tests.conftest import ROOT, subprocess_env
from tests.factories import make_dataset, make_experiment, make_token
from training import engine, solvers
from training.engine import LRPolicy, TrainConfig
from training.forms import MAX_SEED, data_with_defaults
from training.models import Experiment

IDLE_SECONDS = 60


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's real handwritten digits, enough for the engine to judge a config."""
    loaded = load_digits()
    x = (loaded.images[..., None] * (255 / 16)).astype(np.uint8)
    y = loaded.target.astype(np.int32)
    return engine.ArrayData(x[:256], y[:256], x[256:320], y[256:320], None, 10)


@pytest.fixture
def web_tier(tmp_path):
    """The web tier (scripts/web.sh) serving the test database; yields (port, log path)."""
    log = tmp_path / "web.log"
    with serving(log) as base:
        yield int(base.rsplit(":", 1)[1]), log


# --- an idle WebSocket ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_an_idle_experiment_socket_stays_open_for_a_minute(client, alice, web_tier):
    port, log = web_tier
    experiment = make_experiment(alice)
    client.force_login(alice)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    url = f"ws://localhost:{port}/ws/experiments/{experiment.pk}/"
    with connect(url, origin=f"http://localhost:{port}", additional_headers={"Cookie": cookie}) as ws:
        deadline = time.monotonic() + IDLE_SECONDS
        while (left := deadline - time.monotonic()) > 0:
            try:
                ws.recv(timeout=left)  # the consumer may say something; it must not hang up
            except TimeoutError:
                break
            except ConnectionClosed as closed:
                pytest.fail(f"the socket closed after {IDLE_SECONDS - left:.0f} s: {closed}\n{log.read_text()}")
        ws.send('{"after_epoch": 0}')  # still answering, not merely not yet closed
        assert '"epoch": 1' in ws.recv(timeout=10)
    assert "Traceback" not in log.read_text()


# --- a refusal is one line in the log ---------------------------------------------------------


def test_a_refused_change_is_logged_in_one_line_without_a_traceback(client, bob, team, alice, caplog):
    experiment = make_experiment(alice, visibility=Visibility.TEAM, team=team, status=Experiment.Status.QUEUED)
    client.force_login(bob)
    with caplog.at_level(logging.WARNING, logger="django.request"):
        response = client.post(reverse("experiment-abort", args=[experiment.pk]))
    assert response.status_code == 403
    assert "Forbidden" in response.content.decode()  # the page still says why
    forbidden = [r for r in caplog.records if r.name == "django.request" and r.status_code == 403]
    assert len(forbidden) == 1
    assert forbidden[0].exc_info is None
    assert "Traceback" not in caplog.text


# --- numbers that do not fit --------------------------------------------------------------------


def api(client, user):
    client.defaults["HTTP_AUTHORIZATION"] = f"Token {make_token(user).key}"
    return client


def post_json(client, url, body):
    return client.post(url, json.dumps(body), content_type="application/json")


def experiment_fields(dataset, **fields):
    return {"name": "digits", "dataset": dataset.pk, "epochs": 2, **fields}


@pytest.mark.parametrize(
    ("field", "value"), [("seed", 10**30), ("seed", 2**63), ("seed", 2**32), ("keep_snapshots", 10**30)]
)
def test_a_number_too_large_for_its_column_is_refused_on_its_field(client, alice, field, value):
    dataset = make_dataset(alice)
    response = post_json(api(client, alice), "/api/experiments/", experiment_fields(dataset, **{field: value}))
    assert response.status_code == 400
    assert "less than or equal to" in response.json()["errors"][field][0]

    client.defaults.pop("HTTP_AUTHORIZATION")
    client.force_login(alice)
    page = client.post(reverse("experiment-new"), data_with_defaults(experiment_fields(dataset, **{field: value})))
    assert page.status_code == 200
    assert "less than or equal to" in page.context["form"].errors[field][0]
    assert not Experiment.objects.exists()
    jax.random.key(MAX_SEED)  # the largest seed the form takes is one JAX takes


@pytest.mark.parametrize("seed", [2**63, 2**32, -1])
def test_the_engine_refuses_a_seed_jax_cannot_take(seed):
    with pytest.raises(ValueError, match="Seed must be a whole number from 0 to 4294967295"):
        TrainConfig(seed=seed).validate()


# --- a body that is not an object -------------------------------------------------------------


@pytest.mark.parametrize("url", ["/api/experiments/", "/api/datasets/"])
@pytest.mark.parametrize("body", [[1, 2], "digits", 3, None])
def test_a_body_that_is_not_an_object_is_refused(client, alice, url, body):
    response = post_json(api(client, alice), url, body)
    assert response.status_code == 400
    assert response.json()["detail"].startswith("The body must be a JSON object")


# --- learning-rate policies that leave the numbers ----------------------------------------------


def test_a_gamma_that_makes_the_rate_infinite_is_refused_on_its_field(client, alice):
    dataset = make_dataset(alice)
    fields = experiment_fields(dataset, lr_policy="exp", exp_gamma=1e308)
    response = post_json(api(client, alice), "/api/experiments/", fields)
    assert response.status_code == 400
    assert "gamma of at most 1" in response.json()["errors"]["exp_gamma"][0]

    client.defaults.pop("HTTP_AUTHORIZATION")
    client.force_login(alice)
    page = client.post(reverse("experiment-new"), data_with_defaults(fields))
    assert "grows without bound" in page.context["form"].errors["exp_gamma"][0]
    assert not Experiment.objects.exists()
    # A rate that grows but stays computable is a choice, not a slip.
    page = client.post(reverse("experiment-new"), data_with_defaults({**fields, "exp_gamma": 1.05}))
    assert page.status_code == 302


def test_a_base_rate_past_what_training_computes_is_refused_on_its_field(client, alice):
    dataset = make_dataset(alice)
    response = post_json(api(client, alice), "/api/experiments/", experiment_fields(dataset, learning_rate=1e31))
    assert response.status_code == 400
    assert "1e+31" in response.json()["errors"]["learning_rate"][0]


@pytest.mark.parametrize(
    "params",
    [
        {"lr_policy": "exp", "exp_gamma": "1e308"},
        {"lr_policy": "step", "step_gamma": "1e300", "step_size": "1"},
        {"lr_policy": "fixed", "learning_rates": "1e308"},
    ],
)
def test_the_rate_preview_answers_json_with_the_reason(client, alice, params):
    client.force_login(alice)
    response = client.get(reverse("lr-preview"), {"epochs": "30", **params})
    assert response.status_code == 400
    body = json.loads(response.content, parse_constant=lambda word: pytest.fail(f"not JSON: {word}"))
    assert "learning rate" in body["error"]


def test_the_engine_refuses_a_rate_it_cannot_compute(digits):
    config = TrainConfig(epochs=2, lr_policy=LRPolicy(policy="exp", exp_gamma=1e308))
    with pytest.raises(ValueError, match="grows without bound"):
        engine.fit(digits, config)


# --- intervals shorter than a step ---------------------------------------------------------------


@pytest.mark.parametrize("field", ["val_interval", "snapshot_interval"])
def test_an_interval_shorter_than_a_step_is_refused_with_the_shortest(client, alice, field):
    dataset = make_dataset(alice, counts={"train": [3000, 3000], "val": [10, 10]})  # 6000 images: 93 steps of 64
    client.force_login(alice)
    page = client.post(reverse("experiment-new"), data_with_defaults(experiment_fields(dataset, **{field: 1e-9})))
    error = page.context["form"].errors[field][0]
    assert "at least one step: 0.0108 epochs (93 steps per epoch at batch size 64)" in error
    assert not Experiment.objects.exists()

    # The figure the message gives is one that passes.
    page = client.post(reverse("experiment-new"), data_with_defaults(experiment_fields(dataset, **{field: 0.0108})))
    assert page.status_code == 302


def test_the_engine_refuses_an_interval_shorter_than_a_step(digits):
    with pytest.raises(ValueError, match="at least one step"):
        engine.fit(digits, TrainConfig(epochs=1, val_interval=1e-9))


def test_when_the_next_event_falls_is_computed_not_counted_up_to():
    # Deep into a run (as a resume starts): counting walked every event before it.
    g = 10**9
    started = time.perf_counter()
    every = engine._Every(0.5, 200, after=g)
    assert every.next == g + 100
    assert not every.due(g + 99)
    assert every.due(g + 100) and every.next == g + 200
    assert every.due(g + 1000) and every.next == g + 1100
    assert time.perf_counter() - started < 1
    # The same boundaries as counting them one by one, fractions of an epoch included.
    thirds = engine._Every(1 / 3, 10, after=0)
    assert [g for g in range(1, 31) if thirds.due(g)] == [4, 7, 10, 14, 17, 20, 24, 27, 30]


# --- networks too big for the installation ---------------------------------------------------------

HUGE = "layers:\n  - {type: flatten}\n  - {type: dense, features: 960000}\n  - {type: dense}\n"


def test_a_network_too_big_for_the_installation_is_refused_with_the_figures(client, alice, settings):
    settings.TRAINING_MAX_PARAMETERS = 10**9
    settings.TRAINING_MAX_MEMORY_BYTES = 6 * 10**9
    dataset = make_dataset(alice)
    fields = experiment_fields(dataset, network="custom", network_spec=HUGE, solver="adam")
    response = post_json(api(client, alice), "/api/experiments/", fields)
    assert response.status_code == 400
    message = response.json()["errors"]["network_spec"][0]
    assert re.fullmatch(
        r"This network needs about 12\.\d GB \(756 M parameters, Adam\) at batch size 64; "
        r"this installation allows 6\.0 GB\.",
        message,
    ), message
    assert not Experiment.objects.exists()
    # Under the same cap LeNet (431,080 parameters) fits.
    lenet = post_json(client, "/api/experiments/", experiment_fields(dataset, solver="adam"))
    assert lenet.status_code == 201, lenet.json()


def test_a_network_with_more_parameters_than_allowed_is_refused(client, alice, settings):
    settings.TRAINING_MAX_PARAMETERS = 500_000_000
    dataset = make_dataset(alice)
    client.force_login(alice)
    fields = experiment_fields(dataset, network="custom", network_spec=HUGE)
    page = client.post(reverse("experiment-new"), data_with_defaults(fields))
    assert page.context["form"].errors["network_spec"] == [
        "This network has 756 M parameters; this installation allows at most 500 M."
    ]


def test_the_lenet_estimate_is_near_what_xla_plans_for_a_step():
    batch = 64
    estimate = estimate_memory("lenet", (28, 28, 1), 10, batch_size=batch, optimizer_slots=2)
    assert estimate.parameters == 431_080

    model = build_network("lenet", (28, 28, 1), 10, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(train_mode(model), nnx.Param, ...)
    tx = optax.adam(1e-3)

    def step(params, opt_state, x, y, key):
        def loss(params):
            logits = nnx.merge(graphdef, params, rest)(x, rngs=key)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        grads = jax.grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    x, y = jnp.zeros((batch, 28, 28, 1)), jnp.zeros((batch,), jnp.int32)
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, tx.init(params), x, y, jax.random.key(0)).compile()
    plan = compiled.memory_analysis()
    measured = plan.argument_size_in_bytes + plan.output_size_in_bytes + plan.temp_size_in_bytes
    measured -= plan.alias_size_in_bytes
    assert measured / 3 < estimate.bytes < measured * 3, (estimate.bytes, measured)


@pytest.mark.parametrize("solver", solvers.SOLVERS)
@pytest.mark.parametrize(("momentum", "accumulation"), [(0.9, 1), (0.0, 1), (0.9, 4)])
def test_the_solver_slots_are_what_optax_keeps(solver, momentum, accumulation):
    params = {"kernel": jnp.zeros((30, 10)), "bias": jnp.zeros((10,))}
    tx = solvers.make(solver, 0.01, momentum=momentum, weight_decay=0.001, batch_accumulation=accumulation)
    kept = sum(leaf.size for leaf in jax.tree.leaves(tx.init(params)) if leaf.ndim)  # not the step counters
    assert kept == 310 * solvers.state_slots(solver, momentum=momentum, batch_accumulation=accumulation)


# --- folders: each import root, and what is not an image --------------------------------------------


def test_a_relative_folder_is_looked_for_under_each_import_root(settings, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    (first / "other").mkdir(parents=True)
    (second / "digits").mkdir(parents=True)
    settings.DATA_IMPORT_ROOTS = [first, second]
    assert rules.resolve_import_path("digits") == (second / "digits").resolve()
    assert rules.resolve_import_path("other") == (first / "other").resolve()
    # Found under neither: the first root's, for the form to say it does not exist.
    assert rules.resolve_import_path("missing") == (first / "missing").resolve()


@pytest.fixture
def digits_with_junk(mnist_root, settings, tmp_path):
    """Two classes of real MNIST digits, and what a copied folder brings along."""
    root = settings.DATA_IMPORT_ROOTS[0] / "digits-junk"
    shutil.rmtree(root, ignore_errors=True)
    for digit in "01":
        shutil.copytree(mnist_root / "train" / digit, root / digit)
    (root / "0" / "notes.txt").write_text("where these came from")
    (root / "0" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "1" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (root / "README.md").write_text("digits")
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(next((mnist_root / "train" / "2").glob("*.png")), outside / "secret.png")
    (root / "1" / "linked.png").symlink_to(outside / "secret.png")
    (root / "0" / "more").symlink_to(outside, target_is_directory=True)
    return root


@pytest.mark.django_db(transaction=True)
def test_junk_beside_the_images_is_listed_with_its_reason(client, alice, digits_with_junk, worker):
    client.force_login(alice)
    fields = {"name": "digits", "source_folder": str(digits_with_junk), "channels": 1, "width": 28, "height": 28,
              "resize_mode": "squash", "val_percent": 20, "visibility": "private"}  # fmt: skip
    assert client.post(reverse("dataset-new"), fields).status_code == 302
    worker("datasets")

    dataset = Dataset.objects.get()
    assert dataset.status == Dataset.Status.DONE, dataset.error
    assert sorted(map(tuple, dataset.skipped)) == [
        ("0/.DS_Store", "hidden (its name starts with a dot)"),
        ("0/more", "a symbolic link, not followed"),
        ("0/notes.txt", "not an image (by its name)"),
        ("1/Thumbs.db", "not an image (by its name)"),
        ("1/linked.png", "a symbolic link, not followed"),
        ("README.md", "not in a class folder"),
    ]
    images = sum(len(list((digits_with_junk / d).glob("[0-9]*.png"))) for d in "01")
    assert dataset.train_count + sum(dataset.counts["val"]) == images  # the linked image is not among them
    assert "Thumbs.db" in client.get(dataset.get_absolute_url()).content.decode()


# --- an abort before the first snapshot ---------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_an_abort_before_any_snapshot_does_not_promise_one(client, alice, mnist_root, worker):
    client.force_login(alice)
    fields = {"name": "digits", "source_folder": str(mnist_root / "train"), "channels": 1, "width": 28,
              "height": 28, "resize_mode": "squash", "val_percent": 20, "visibility": "private"}  # fmt: skip
    client.post(reverse("dataset-new"), fields)
    worker("datasets")
    dataset = Dataset.objects.get()
    assert dataset.status == Dataset.Status.DONE, dataset.error
    client.post(reverse("experiment-new"), data_with_defaults(experiment_fields(dataset, epochs=1)))
    experiment = Experiment.objects.get()

    training = subprocess.Popen(
        [sys.executable, "manage.py", "rqworker", "--burst", "training"], cwd=ROOT, env=subprocess_env()
    )
    try:
        # Between claiming the row and its first step the job imports JAX and builds the
        # network: seconds in which an abort finds no snapshot yet.
        deadline = time.monotonic() + 60
        while Experiment.objects.get(pk=experiment.pk).status == Experiment.Status.QUEUED:
            assert time.monotonic() < deadline, "the worker never started the experiment"
            time.sleep(0.02)
        experiment.request_abort()
        training.wait(timeout=120)
    finally:
        training.kill()

    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.ABORTED
    assert not experiment.snapshots.exists()
    messages = list(experiment.log_lines.values_list("message", flat=True))
    assert "Aborted before the first snapshot, so there is nothing to resume from." in messages
    assert not any("can be resumed" in message for message in messages)
    assert not experiment.resume()
