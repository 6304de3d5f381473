"""Classify one image and look inside: per-layer statistics and tiles against a LeNet run
by hand, saliency, images fetched from a URL (and the URLs refused), and the API and page
for the owner, a team member and an outsider."""

import base64
import io
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jax
import numpy as np
import pytest
from django.urls import reverse
from flax import nnx
from PIL import Image
from sklearn.datasets import load_digits

from accounts.models import Visibility
from models.networks import build_network, describe
from tests.browser import browser_page, free_port, log_in, platform_server, shot  # noqa: F401 - platform_server is a fixture
from tests.factories import make_dataset, make_experiment
from training import engine, fetch, inference, inside
from training.models import Snapshot

CLASSES = [str(i) for i in range(10)]


# --- a trained LeNet, shared by the module ------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """LeNet after two epochs on scikit-learn's handwritten digits at 28x28 (about two
    seconds on a CPU): the weights file, the mean image and a held-out digit per class."""
    digits = load_digits()
    small = (digits.images * (255 / 16)).astype(np.uint8)
    images = np.stack([np.asarray(Image.fromarray(im).resize((28, 28), Image.Resampling.BILINEAR)) for im in small])
    x, y = images[..., None], digits.target.astype(np.int32)
    held_out = {label: x[np.flatnonzero(y == label)[-1]] for label in range(10)}
    train_x, train_y = x[:1200], y[:1200]
    mean = train_x.mean(axis=0, dtype=np.float32)
    data = engine.ArrayData(train_x, train_y, x[1200:1400], y[1200:1400], mean, 10)
    result = engine.fit(data, engine.TrainConfig(network="lenet", epochs=2, batch_size=64, learning_rate=0.05))
    folder = tmp_path_factory.mktemp("lenet")
    weights = folder / "snapshot.ckpt"
    weights.write_bytes(engine.serialize_model(result.model))
    return {"weights": weights, "mean": mean, "digits": held_out}


@pytest.fixture
def experiment(alice, team, trained):
    dataset = make_dataset(alice, visibility=Visibility.TEAM, team=team, classes=CLASSES)
    dataset.directory.mkdir(parents=True, exist_ok=True)
    np.save(dataset.directory / "mean.npy", trained["mean"])
    experiment = make_experiment(alice, dataset, visibility=Visibility.TEAM, team=team)
    Snapshot.objects.create(experiment=experiment, epoch=2, path=str(trained["weights"]))
    return experiment


def png(array):
    buffer = io.BytesIO()
    Image.fromarray(array[..., 0]).save(buffer, format="PNG")
    return buffer.getvalue()


def upload(trained, label=3):
    image = io.BytesIO(png(trained["digits"][label]))
    image.name = f"{label}.png"
    return image


def decode(data_url):
    assert data_url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))))


def classify_api(client, experiment, **data):
    return client.post(reverse("api-experiment-classify", args=[experiment.pk]), data)


# --- LeNet by hand ------------------------------------------------------------------------


def lenet_by_hand(weights, x):
    """Every LeNet layer's output for input x (1, 28, 28, 1), from the weights alone."""

    def conv(x, kernel, bias):
        out = jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return np.asarray(out) + bias

    def pool(x):
        n, h, w, c = x.shape
        return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))

    conv1 = conv(x, weights["layers/0/kernel"], weights["layers/0/bias"])
    pool1 = pool(conv1)
    conv2 = conv(pool1, weights["layers/2/kernel"], weights["layers/2/bias"])
    pool2 = pool(conv2)
    flat = pool2.reshape(1, -1)
    ip1 = np.maximum(flat @ weights["layers/5/kernel"] + weights["layers/5/bias"], 0)
    ip2 = ip1 @ weights["layers/6/kernel"] + weights["layers/6/bias"]
    return [conv1, pool1, conv2, pool2, flat, ip1, ip2]


def test_layer_statistics_match_the_network_run_by_hand(client, alice, experiment, trained):
    client.force_login(alice)
    response = classify_api(client, experiment, image=upload(trained), layers="true")
    assert response.status_code == 200, response.content
    body = response.json()
    layers = body["layers"]
    # The spec's names, as Visualize shows them (the unnamed flatten by its path).
    visualize = client.post(reverse("network-visualize"), {"network": "lenet"}, content_type="application/json")
    assert [row["name"] or row["path"] for row in visualize.json()["rows"]] == [layer["name"] for layer in layers]
    assert [layer["type"] for layer in layers] == ["conv", "max_pool", "conv", "max_pool", "flatten", "dense", "dense"]
    assert body["total_params"] == 431_080 == sum(layer["params"] for layer in layers)

    weights = dict(np.load(trained["weights"]))
    x = ((trained["digits"][3].astype(np.float32) - trained["mean"]) / 255.0)[np.newaxis]
    for layer, expected in zip(layers, lenet_by_hand(weights, x), strict=True):
        expected = expected[0]
        assert layer["shape"] == list(expected.shape)
        assert layer["mean"] == pytest.approx(float(expected.mean()), rel=1e-4, abs=1e-5)
        assert layer["std"] == pytest.approx(float(expected.std()), rel=1e-4)
        counts, edges = np.histogram(expected, bins=inside.HISTOGRAM_BINS)
        assert np.allclose(layer["histogram"]["edges"], edges, rtol=1e-4, atol=1e-5)
        # A value within float rounding of a bin edge may fall on either side of it.
        assert np.abs(np.array(layer["histogram"]["counts"]) - counts).sum() <= 2
        assert sum(layer["histogram"]["counts"]) == expected.size
        assert "tiles" not in layer  # only when asked for

    for layer, key in ((layers[0], "layers/0/kernel"), (layers[5], "layers/5/kernel")):
        kernel = weights[key]
        assert layer["weights"]["shape"] == list(kernel.shape)
        assert layer["weights"]["mean"] == pytest.approx(float(kernel.mean()), rel=1e-5, abs=1e-7)
        assert layer["weights"]["std"] == pytest.approx(float(kernel.std()), rel=1e-5)
        assert (
            layer["weights"]["histogram"]["counts"]
            == np.histogram(kernel.astype(np.float64), bins=inside.HISTOGRAM_BINS)[0].tolist()
        )
    assert layers[1]["weights"] is None and layers[4]["weights"] is None
    # The same forward pass gives the same answer as plain classification.
    plain = classify_api(client, experiment, image=upload(trained)).json()
    assert [p["label"] for p in plain["predictions"]] == [p["label"] for p in body["predictions"]]
    assert plain["predictions"][0]["probability"] == pytest.approx(body["predictions"][0]["probability"], rel=1e-5)


def test_tiles_draw_one_tile_per_channel(client, bob, experiment, trained):
    client.force_login(bob)
    body = classify_api(client, experiment, image=upload(trained, 7), layers="true", tiles="true").json()
    conv1 = body["layers"][0]
    grid = decode(conv1["tiles"])
    # 20 channels of 24x24: 5 columns by 4 rows, one pixel between tiles.
    assert grid.shape == (4 * 25 - 1, 5 * 25 - 1)
    weights = dict(np.load(trained["weights"]))
    x = ((trained["digits"][7].astype(np.float32) - trained["mean"]) / 255.0)[np.newaxis]
    activations = lenet_by_hand(weights, x)[0][0]
    low, high = activations.min(), activations.max()
    for channel in range(20):
        top, left = (channel // 5) * 25, (channel % 5) * 25
        expected = np.round((activations[..., channel] - low) / (high - low) * 255)
        assert np.abs(grid[top : top + 24, left : left + 24].astype(int) - expected).max() <= 1, channel
    assert (grid[24, :] == 255).all() and (grid[:, 24] == 255).all()
    # The first layer's kernels as small images, one per output channel; a vector as one grid.
    assert decode(conv1["weights"]["tiles"]).shape == (4 * 6 - 1, 5 * 6 - 1)
    assert decode(body["layers"][2]["weights"]["tiles"]).shape == (7 * 6 - 1, 8 * 6 - 1)  # 50 channels
    assert decode(body["layers"][5]["tiles"]).shape == (23, 23)  # 500 values, ceil(sqrt(500)) square
    assert body["layers"][5]["weights"]["tiles"] is None


def test_tiles_cap_and_subsample_large_layers():
    tiles = inside.activation_tiles(np.random.default_rng(0).random((200, 200, 300), np.float32))
    assert (tiles.count, tiles.total) == (inside.MAX_TILES, 300)
    assert tiles.tile_shape == (50, 50)  # every fourth pixel: at most MAX_TILE_SIDE
    assert tiles.image.shape == (16 * 51 - 1, 16 * 51 - 1)


# --- saliency -----------------------------------------------------------------------------


def test_saliency_covers_the_input_and_depends_on_the_class(alice, experiment, trained):
    snapshot = experiment.snapshots.get()
    classification = inference.classify(snapshot, upload(trained, 3), saliency=True, saliency_class=8)
    top, picked = classification.saliency
    assert top.label == classification.predictions[0].label and picked.label == "8"
    for entry in (top, picked):
        assert entry.values.shape == (28, 28)
        assert np.isfinite(entry.values).all() and entry.values.max() > 0
        overlay = decode(entry.overlay)
        assert overlay.shape[:2] == (112, 112) and overlay.shape[2] == 3
    assert np.abs(top.values - picked.values).max() > 0.05 * top.values.max()
    # The same image and class give the same map: the noise is seeded.
    again = inference.classify(snapshot, upload(trained, 3), saliency_class=8).saliency
    assert np.array_equal(again[1].values, picked.values)


def test_saliency_works_for_a_network_without_convolutions():
    spec = "layers:\n  - {type: flatten}\n  - {type: dense, features: 16, activation: relu}\n  - {type: dense}\n"
    model = build_network(spec, (8, 8, 3), 4, rngs=nnx.Rngs(1))
    x = np.random.default_rng(0).random((1, 8, 8, 3), np.float32)
    first, second = inside.saliency(model, x, 0), inside.saliency(model, x, 3)
    assert first.shape == (8, 8) and np.isfinite(first).all()
    assert not np.allclose(first, second)


def test_layer_paths_match_visualize_for_nested_layers():
    spec = """
layers:
  - {type: conv, name: stem, features: 4, kernel: 3}
  - type: branches
    name: mixed
    branches:
      - - {type: conv, features: 2, kernel: 1}
      - - {type: max_pool, window: 3, stride: 1, padding: SAME}
  - type: residual
    layers:
      - {type: conv, features: 6, kernel: 3, use_bias: false}
      - {type: batch_norm}
    shortcut:
      - {type: conv, features: 6, kernel: 1}
  - {type: global_avg_pool}
  - {type: dense}
"""
    model = build_network(spec, (8, 8, 3), 3, rngs=nnx.Rngs(0))
    rows = describe(spec, (8, 8, 3), 3).rows
    x = np.zeros((1, 8, 8, 3), np.float32)
    weights = inside.weight_views(model, tiles=True)
    _, views = inside.layer_views(model, rows, x, weights, tiles=True)
    assert [view.path for view in views] == [row.path for row in rows]
    assert list(model.layer_modules()) == [row.path for row in rows]
    by_path = {view.path: view for view in views}
    assert by_path["layers[1]"].shape == (8, 8, 6)  # the branches' concatenation
    assert by_path["layers[2].layers[1]"].weights is not None  # batch norm's scale
    assert by_path["layers[2]"].weights is None
    assert weights["layers[2].layers[0]"].tiles.count == 6  # deeper kernels: mean over inputs


# --- images from a URL --------------------------------------------------------------------


class ImageServer:
    """A real HTTP server on the loopback, serving what the fetch tests need."""

    def __init__(self, image: bytes):
        self.port = free_port()
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                route = {
                    "/digit.png": lambda: self.reply(200, "image/png", image),
                    "/page.html": lambda: self.reply(200, "text/html", b"<html>not a picture</html>"),
                    "/large.png": lambda: self.reply(200, "image/png", image * 50),
                    "/to-private": lambda: self.redirect("http://10.0.0.5/digit.png"),
                    "/to-metadata": lambda: self.redirect("http://169.254.169.254/latest/meta-data/"),
                    "/to-digit": lambda: self.redirect("/digit.png"),
                    "/loop": lambda: self.redirect("/loop"),
                    "/stall": self.stall,
                }.get(self.path)
                if route is None:
                    self.reply(404, "text/plain", b"no")
                else:
                    route()

            def reply(self, status, content_type, body):
                # HTTP/1.0 without Content-Length: the size cap must hold while streaming.
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.end_headers()
                self.wfile.write(body)

            def redirect(self, location):
                self.send_response(302)
                self.send_header("Location", location)
                self.end_headers()

            def stall(self):
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.end_headers()
                self.wfile.write(image[:10])
                self.wfile.flush()
                server.release.wait(30)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def image_server(trained):
    server = ImageServer(png(trained["digits"][5]))
    yield server
    server.close()


def allowing(server, **limits):
    return fetch.Limits(allowed_hosts=(f"127.0.0.1:{server.port}",), **limits)


def test_an_allowed_server_gives_the_image_also_after_a_redirect(image_server, trained):
    body = fetch.fetch(image_server.url("/digit.png"), allowing(image_server))
    assert body == png(trained["digits"][5])
    assert fetch.fetch(image_server.url("/to-digit"), allowing(image_server)) == body


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/to-private", "refused: 10.0.0.5 is a private address"),
        ("/to-metadata", "refused: 169.254.169.254 is a cloud metadata address"),
        ("/loop", "refused: more than 3 redirects"),
        ("/large.png", "refused: the image is larger than 1,000 bytes"),
        ("/page.html", "text/html, not an image"),
    ],
)
def test_fetching_refuses_what_breaks_a_rule(image_server, path, message):
    with pytest.raises(fetch.FetchError, match=message):
        fetch.fetch(image_server.url(path), allowing(image_server, max_bytes=1000))


def test_a_stalling_server_runs_into_the_deadline(image_server):
    with pytest.raises(fetch.FetchError, match=r"refused: the download took longer than 0.5 s"):
        fetch.fetch(image_server.url("/stall"), allowing(image_server, total_timeout=0.5))


def test_only_public_http_addresses_are_fetched_without_the_allow_list(image_server):
    with pytest.raises(fetch.FetchError, match=r"refused: 127.0.0.1 is a loopback address"):
        fetch.fetch(image_server.url("/digit.png"))
    with pytest.raises(fetch.FetchError, match=r"refused: 127.0.0.1 is a loopback address"):
        fetch.fetch(f"http://localhost:{image_server.port}/digit.png")
    # Allowing another port of the same host lets nothing through.
    with pytest.raises(fetch.FetchError, match="loopback"):
        fetch.fetch(image_server.url("/digit.png"), fetch.Limits(allowed_hosts=(f"127.0.0.1:{image_server.port + 1}",)))
    with pytest.raises(fetch.FetchError, match=r"refused: only http:// and https:// URLs can be fetched, not ftp://"):
        fetch.fetch("ftp://example.com/digit.png")
    with pytest.raises(fetch.FetchError, match=r"refused: ::1 is a loopback address"):
        fetch.fetch("http://[::1]/digit.png")
    assert fetch.refusal("::ffff:10.1.2.3") == "::ffff:10.1.2.3 is a private address"
    assert fetch.refusal("fd00:ec2::254") == "fd00:ec2::254 is a cloud metadata address"
    assert fetch.refusal("224.0.0.251") == "224.0.0.251 is a multicast address"
    assert fetch.refusal("240.0.0.1") == "240.0.0.1 is a reserved address"
    assert fetch.refusal("169.254.10.1") == "169.254.10.1 is a link-local address"
    assert fetch.refusal("8.8.8.8") is None


def test_the_api_classifies_an_image_from_a_url(client, alice, experiment, trained, image_server, settings):
    settings.CLASSIFY_URL_ALLOWED_HOSTS = [f"127.0.0.1:{image_server.port}"]
    client.force_login(alice)
    response = client.post(
        reverse("api-experiment-classify", args=[experiment.pk]),
        {"url": image_server.url("/digit.png"), "saliency": True},
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    from_upload = classify_api(client, experiment, image=upload(trained, 5))  # the bytes the server sends
    assert response.json()["predictions"] == from_upload.json()["predictions"]
    assert len(response.json()["saliency"]) == 1
    refused = client.post(
        reverse("api-experiment-classify", args=[experiment.pk]),
        {"url": image_server.url("/to-private")},
        content_type="application/json",
    )
    assert refused.status_code == 400
    assert refused.json()["errors"] == {"url": ["refused: 10.0.0.5 is a private address."]}


# --- the API and the page: who may, and bad input -----------------------------------------


@pytest.mark.parametrize("who", ["alice", "bob"])
def test_owner_and_team_member_look_inside(client, experiment, trained, who, request):
    client.force_login(request.getfixturevalue(who))
    response = classify_api(
        client, experiment, image=upload(trained, 4), layers="true", tiles="true", saliency="true", saliency_class="9"
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert len(body["predictions"]) == 5 and len(body["layers"]) == 7
    labels = [entry["label"] for entry in body["saliency"]]
    assert labels[0] == body["predictions"][0]["label"] and labels[-1] == "9"
    assert len(labels) == (1 if labels[0] == "9" else 2)
    assert decode(body["saliency"][0]["overlay"]).shape == (112, 112, 3)


def test_an_outsider_gets_404(client, charlie, experiment, trained):
    client.force_login(charlie)
    assert classify_api(client, experiment, image=upload(trained), layers="true").status_code == 404
    page = client.post(reverse("experiment-classify", args=[experiment.pk]), {"image": upload(trained)})
    assert page.status_code == 404


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({}, "image", "Choose an image file, or give the URL of one."),
        ({"url": "https://example.com/digit.png", "image": True}, "url", "Give an image file or a URL, not both."),
        ({"saliency": "true", "saliency_class": "cat", "image": True}, "saliency_class", "There is no class “cat”"),
        ({"saliency_class": "10", "image": True}, "saliency_class", "an index from 0 to 9"),
        ({"url": "ftp://example.com/digit.png"}, "url", "refused: only http:// and https://"),
        ({"snapshot": "latest", "image": True}, "snapshot", "Give the snapshot's epoch as a number."),
    ],
)
def test_bad_input_is_answered_with_400_and_a_message(client, alice, experiment, trained, data, field, words):
    client.force_login(alice)
    if data.pop("image", None):
        data["image"] = upload(trained)
    response = classify_api(client, experiment, **data)
    assert response.status_code == 400, response.content
    assert words in " ".join(response.json()["errors"][field])


def test_the_page_shows_layers_and_saliency_and_errors_beside_their_field(client, bob, experiment, trained):
    client.force_login(bob)
    url = reverse("experiment-classify", args=[experiment.pk])
    snapshot = experiment.snapshots.get()
    page = client.post(
        url,
        {"snapshot": snapshot.pk, "image": upload(trained, 2), "layers": "on", "saliency": "on", "saliency_class": "6"},
    )
    assert page.status_code == 200
    html = page.content.decode()
    classification = page.context["classification"]
    assert len(classification.layers) == 7 and classification.saliency[-1].label == "6"
    assert (
        'id="layer-histograms"' in html and html.count('class="tiles"') == 7 + 2
    )  # every output, the two convolutions' kernels
    assert html.count("data-histogram=") == 7 + 4  # every layer's output, the four weighted layers
    assert "conv1" in html and "431,080 parameters" in html and "Saliency for 6" in html
    assert "<script>" not in html.split('id="classify"')[1].split("</section>")[0]

    refused = client.post(url, {"snapshot": snapshot.pk, "url": "http://127.0.0.1:9/digit.png"})
    assert refused.context["classification"] is None
    assert refused.context["classify_form"].errors["url"] == ["refused: 127.0.0.1 is a loopback address."]
    html = refused.content.decode()
    field = html.split('id="field-url"')[1].split("</div>")[0]
    assert "refused: 127.0.0.1 is a loopback address." in field
    both_missing = client.post(url, {"snapshot": snapshot.pk})
    assert both_missing.context["classify_form"].errors["image"] == ["Choose an image file, or give the URL of one."]


# --- in a real browser ----------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_page_draws_the_layers_and_saliency_in_a_browser(
    platform_server,  # noqa: F811
    experiment,
    trained,
    monkeypatch,
    tmp_path,
):
    from playwright.sync_api import expect

    digit = tmp_path / "three.png"
    digit.write_bytes(png(trained["digits"][3]))
    with browser_page(monkeypatch) as page:
        log_in(page, platform_server, "alice", "alice-password")
        page.goto(f"{platform_server}/experiments/{experiment.pk}/")
        page.set_input_files("#id_image", str(digit))
        page.check("#id_layers")
        page.check("#id_saliency")
        page.select_option("#id_saliency_class", "8")
        page.click("button:has-text('Classify')")
        expect(page.locator("#predictions tbody tr")).to_have_count(5)
        expect(page.locator("#layers tbody tr")).to_have_count(7)
        expect(page.locator("figure.saliency figcaption").last).to_have_text(re.compile("Saliency for 8"))
        drawn = "Array.from(document.querySelectorAll('canvas[data-histogram]')).filter(c => Chart.getChart(c)).length"
        page.wait_for_function(f"{drawn} === 11")  # the page script draws them after the table
        assert page.evaluate("Array.from(document.querySelectorAll('img.tiles')).every(i => i.naturalWidth > 0)")
        shot(page, "classify-inside")

        page.fill("#id_url", "http://127.0.0.1:9/digit.png")
        page.click("button:has-text('Classify')")
        expect(page.locator("#field-url .error")).to_have_text("refused: 127.0.0.1 is a loopback address.")
        expect(page.locator("#layers")).to_have_count(0)
