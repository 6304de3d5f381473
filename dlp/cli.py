"""`dlp`: the Deep Learning Platform from a terminal, over its REST API and WebSockets.

    dlp login http://127.0.0.1:8000 --token-stdin < token.txt
    dlp datasets create digits --archive digits.zip --wait
    dlp experiments create lenet-1 --dataset 3 --epochs 1 --follow
    dlp experiments download 7 -o snapshots/

Every command takes --json for the API's answer as it is. An error prints the server's
words on stderr and exits with 1 (2 for a wrong command line).
"""

import argparse
import getpass
import json
import sys
import time

from dlp import __version__
from dlp.api import ApiError, Client, normalise_url, save_login
from dlp.follow import ENDED, follow_experiment
from dlp.output import ProgressBar, percent, print_fields, print_json, print_table, size

POLL_SECONDS = 1.0


# --- Arguments ---------------------------------------------------------------------------------


def settings_of(pairs):
    """`--set key=value` pairs as API fields: JSON values where they parse (numbers, true,
    lists), text otherwise."""
    body = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ApiError(f"--set takes key=value, not “{pair}”.")
        try:
            body[key] = json.loads(value)
        except ValueError:
            body[key] = value
    return body


def numbers(text):
    """A number, or several separated by commas (a sweep)."""
    try:
        values = [float(part) if "." in part or "e" in part.lower() else int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"“{text}” is not a number or a list of numbers like 0.01,0.1") from None
    return values[0] if len(values) == 1 else values


def parser():
    # --json is accepted before or after the command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the API's JSON")
    main = argparse.ArgumentParser(prog="dlp", description=__doc__.split("\n\n")[0], parents=[common])
    main.add_argument("--version", action="version", version=f"dlp {__version__}")
    commands = main.add_subparsers(dest="command", required=True, metavar="COMMAND")

    login = commands.add_parser("login", parents=[common], help="save the platform's URL and your API token")
    login.add_argument("url", help="the platform, e.g. http://127.0.0.1:8000")
    login.add_argument("--token-stdin", action="store_true", help="read the token from stdin instead of a prompt")
    login.set_defaults(run=cmd_login)

    # Datasets
    datasets = commands.add_parser("datasets", help="image datasets").add_subparsers(dest="action", required=True)
    listing = datasets.add_parser("list", parents=[common], help="the datasets you may see")
    list_options(listing)
    listing.set_defaults(run=cmd_datasets_list)
    show = datasets.add_parser("show", parents=[common], help="a dataset: status, classes, counts")
    show.add_argument("id", type=int)
    show.set_defaults(run=cmd_datasets_show)
    create = datasets.add_parser("create", parents=[common], help="build a dataset from a server folder or an archive")
    create.add_argument("name")
    source = create.add_mutually_exclusive_group(required=True)
    source.add_argument("--folder", help="a server folder of class folders, under an import root")
    source.add_argument("--archive", help="a local .zip or .tar.gz of class folders, uploaded")
    create.add_argument("--width", type=int)
    create.add_argument("--height", type=int)
    create.add_argument("--channels", type=int, choices=[1, 3])
    create.add_argument("--val-percent", type=int)
    create.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other field of the form")
    create.add_argument("--wait", action="store_true", help="wait until it is built")
    create.set_defaults(run=cmd_datasets_create)

    # Experiments
    experiments = commands.add_parser("experiments", help="training runs").add_subparsers(dest="action", required=True)
    listing = experiments.add_parser("list", parents=[common], help="the experiments you may see")
    list_options(listing)
    listing.add_argument("--dataset", type=int, help="only on this dataset (id)")
    listing.set_defaults(run=cmd_experiments_list)
    show = experiments.add_parser("show", parents=[common], help="an experiment with its metrics per epoch")
    show.add_argument("id", type=int)
    show.set_defaults(run=cmd_experiments_show)
    create = experiments.add_parser(
        "create", parents=[common], help="train a network on a dataset (several rates or batch sizes: a sweep)"
    )
    create.add_argument("name")
    create.add_argument("--dataset", type=int, required=True, help="the dataset's id")
    create.add_argument("--network", help="a standard network, e.g. lenet")
    create.add_argument("--epochs", type=int)
    create.add_argument("--batch-size", type=numbers, help="e.g. 64, or 32,64 for a sweep")
    create.add_argument("--learning-rate", type=numbers, help="e.g. 0.01, or 0.01,0.1 for a sweep")
    create.add_argument("--solver")
    create.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other field of the form")
    create.add_argument("--follow", action="store_true", help="then follow it live until it ends")
    create.set_defaults(run=cmd_experiments_create)
    for name, text, run in (
        ("abort", "stop a queued or running experiment", cmd_experiments_abort),
        ("resume", "resume an aborted or failed experiment from its last snapshot", cmd_experiments_resume),
        ("follow", "print its epochs live as they end, then the final metrics", cmd_experiments_follow),
    ):
        action = experiments.add_parser(name, parents=[common], help=text)
        action.add_argument("id", type=int)
        action.set_defaults(run=run)
    download = experiments.add_parser("download", parents=[common], help="download a snapshot (a zip)")
    download.add_argument("id", type=int)
    download.add_argument("--epoch", type=float, help="the snapshot's epoch; the newest by default")
    download.add_argument("-o", "--output", default=".", help="the folder to save it in")
    download.set_defaults(run=cmd_experiments_download)

    # Exports
    exports = commands.add_parser("exports", help="snapshots as ONNX or StableHLO").add_subparsers(
        dest="action", required=True
    )
    create = exports.add_parser("create", parents=[common], help="export a snapshot")
    create.add_argument("experiment", type=int)
    create.add_argument("--epoch", type=float, help="the snapshot's epoch; the newest by default")
    create.add_argument("--format", required=True, help="onnx or stablehlo")
    create.add_argument("--wait", action="store_true", help="wait until it is done")
    create.set_defaults(run=cmd_exports_create)
    show = exports.add_parser("show", parents=[common], help="an export's status")
    show.add_argument("id", type=int)
    show.set_defaults(run=cmd_exports_show)
    download = exports.add_parser("download", parents=[common], help="download a finished export (a zip)")
    download.add_argument("id", type=int)
    download.add_argument("-o", "--output", default=".", help="the folder to save it in")
    download.set_defaults(run=cmd_exports_download)

    # Evaluations
    evaluations = commands.add_parser("evaluations", help="a snapshot over many images").add_subparsers(
        dest="action", required=True
    )
    create = evaluations.add_parser("create", parents=[common], help="evaluate a snapshot (one source)")
    create.add_argument("experiment", type=int)
    create.add_argument("--snapshot", type=float, help="the snapshot's epoch; the newest by default")
    source = create.add_mutually_exclusive_group(required=True)
    source.add_argument("--split", choices=["val", "test"], help="the dataset's own split")
    source.add_argument("--folder", help="a server folder of class folders")
    source.add_argument("--list", dest="list_path", help="a server file of `path [label]` lines")
    source.add_argument("--archive", help="a local .zip or .tar.gz of class folders, uploaded")
    create.add_argument("--wait", action="store_true", help="wait until it is done")
    create.set_defaults(run=cmd_evaluations_create)
    show = evaluations.add_parser("show", parents=[common], help="an evaluation's progress, then its metrics")
    show.add_argument("id", type=int)
    show.set_defaults(run=cmd_evaluations_show)
    listing = evaluations.add_parser("list", parents=[common], help="the evaluations of an experiment")
    listing.add_argument("experiment", type=int)
    listing.set_defaults(run=cmd_evaluations_list)
    return main


def list_options(listing):
    listing.add_argument("--status", help="queued, running, done, failed or aborted")
    listing.add_argument("--search", help="the name contains this")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")


# --- Login -------------------------------------------------------------------------------------


def cmd_login(args):
    url = normalise_url(args.url)
    if args.token_stdin:
        token = sys.stdin.readline().strip()
    else:
        token = getpass.getpass("API token (from /accounts/token/): ").strip()
    if not token:
        raise ApiError("No token given.")
    Client(url, token).get("")  # the index answers only a valid token
    path = save_login(url, token)
    if wants_json(args):
        print_json({"url": url, "config": str(path)})
    else:
        print(f"Logged in to {url}; saved in {path}.")


# --- Datasets ----------------------------------------------------------------------------------

DATASET_COLUMNS = [
    ("id", lambda d: d["id"]),
    ("name", lambda d: d["name"]),
    ("status", lambda d: d["status"]),
    ("classes", lambda d: len(d["classes"] or [])),
    ("images", lambda d: image_count(d)),
    ("size", lambda d: f"{d['width']}x{d['height']}x{d['channels']}"),
    ("owner", lambda d: d["owner"]),
    ("created", lambda d: d["created"][:16].replace("T", " ")),
]


def image_count(dataset):
    counts = dataset.get("counts") or {}
    return sum(sum(per_class) for per_class in counts.values()) if counts else None


def cmd_datasets_list(args):
    rows = Client.from_login().pages("datasets/", limit=args.limit, status=args.status, search=args.search)
    show_rows(args, rows, DATASET_COLUMNS, "No datasets.")


def cmd_datasets_show(args):
    show_dataset(args, Client.from_login().get(f"datasets/{args.id}/"))


def show_dataset(args, dataset):
    if wants_json(args):
        return print_json(dataset)
    print_fields(dataset, ["id", "name", "status", "error", "owner", "team", "visibility", "source_type",
                           "source_folder", "archive_name", "width", "height", "channels", "resize_mode",
                           "encoding", "classes"])  # fmt: skip
    counts = dataset.get("counts") or {}
    for split, per_class in counts.items():
        print(f"{split:<12}  {sum(per_class)} images")
    if dataset.get("stored_bytes"):
        print(f"{'stored':<12}  {size(dataset['stored_bytes'])}")


def cmd_datasets_create(args):
    client = Client.from_login()
    body = {"name": args.name}
    for field in ("width", "height", "channels", "val_percent"):
        if getattr(args, field) is not None:
            body[field] = getattr(args, field)
    body.update(settings_of(args.set))
    if args.folder:
        dataset = client.post("datasets/", {"source_type": "folder", "source_folder": args.folder, **body})
    else:
        fields = {key: form_value(value) for key, value in {"source_type": "archive", **body}.items()}
        dataset = upload_archive(client, "datasets/", fields, args.archive)
    if args.wait:
        dataset = wait_for(client, f"datasets/{dataset['id']}/", "building", dataset_progress)
    if wants_json(args):
        return print_json(dataset)
    print(f"Dataset {dataset['id']} “{dataset['name']}”: {dataset['status']}.")
    return exit_status(dataset)


def form_value(value):
    if isinstance(value, bool):
        return "on" if value else ""
    return "" if value is None else str(value)


def dataset_progress(dataset):
    return dataset.get("progress_done") or 0, dataset.get("progress_total") or 0


# --- Experiments -------------------------------------------------------------------------------

EXPERIMENT_COLUMNS = [
    ("id", lambda e: e["id"]),
    ("name", lambda e: e["name"]),
    ("status", lambda e: e["status"]),
    ("network", lambda e: e["network"]),
    ("dataset", lambda e: e["dataset"]),
    ("epochs", lambda e: e["epochs"]),
    ("lr", lambda e: e["learning_rate"]),
    ("batch", lambda e: e["batch_size"]),
    ("sweep", lambda e: e["sweep"]),
    ("snapshots", lambda e: len(e["snapshots"])),
    ("owner", lambda e: e["owner"]),
]
METRIC_COLUMNS = [
    ("epoch", lambda m: m["epoch"]),
    ("train loss", lambda m: m["train_loss"]),
    ("val loss", lambda m: m["val_loss"]),
    ("val accuracy", lambda m: percent(m["val_accuracy"])),
    ("lr", lambda m: m["learning_rate"]),
    ("images/s", lambda m: round(m["images_per_second"] or 0)),
]


def cmd_experiments_list(args):
    client = Client.from_login()
    rows = client.pages("experiments/", limit=args.limit, status=args.status, search=args.search, dataset=args.dataset)
    show_rows(args, rows, EXPERIMENT_COLUMNS, "No experiments.")


def cmd_experiments_show(args):
    experiment = Client.from_login().get(f"experiments/{args.id}/")
    if wants_json(args):
        return print_json(experiment)
    print_fields(experiment, ["id", "name", "status", "error", "owner", "team", "visibility", "dataset", "sweep",
                              "network", "epochs", "batch_size", "learning_rate", "solver", "device",
                              "snapshots"])  # fmt: skip
    print()
    print_table(experiment["metrics"], METRIC_COLUMNS, "No epoch has ended yet.")


def cmd_experiments_create(args):
    client = Client.from_login()
    body = {"name": args.name, "dataset": args.dataset}
    for field in ("network", "epochs", "batch_size", "learning_rate", "solver"):
        if getattr(args, field) is not None:
            body[field] = getattr(args, field)
    body.update(settings_of(args.set))
    created = client.post("experiments/", body)
    experiments = created["experiments"] if "sweep" in created and "experiments" in created else [created]
    if args.follow and len(experiments) != 1:
        raise ApiError(f"Sweep {created['sweep']} made {len(experiments)} experiments; follow them one by one.")
    if args.follow:
        if not wants_json(args):
            print(f"Experiment {created['id']} “{created['name']}”: {created['status']}.")
        return follow(args, client, created["id"])
    if wants_json(args):
        return print_json(created)
    if len(experiments) == 1:
        print(f"Experiment {created['id']} “{created['name']}”: {created['status']}.")
    else:
        print(f"Sweep {created['sweep']}: {len(experiments)} experiments.")
        print_table(experiments, EXPERIMENT_COLUMNS)


def cmd_experiments_abort(args):
    experiment = Client.from_login().post(f"experiments/{args.id}/abort/")
    if wants_json(args):
        return print_json(experiment)
    if experiment["status"] == "aborted":
        print(f"Experiment {args.id} is aborted.")
    else:
        print(f"Experiment {args.id} stops after its current step and keeps a final snapshot.")


def cmd_experiments_resume(args):
    experiment = Client.from_login().post(f"experiments/{args.id}/resume/")
    if wants_json(args):
        return print_json(experiment)
    print(f"Experiment {args.id}: {experiment['status']}, from its last snapshot.")


def cmd_experiments_follow(args):
    return follow(args, Client.from_login(), args.id)


def follow(args, client, pk):
    """Epoch lines as they arrive (JSON lines with --json), then the final metrics."""

    def on_event(event):
        if wants_json(args):
            print(json.dumps(event), flush=True)
        elif event["type"] == "epoch":
            print(epoch_line(event), flush=True)
        elif event["type"] == "status" and event["status"] not in ENDED:
            print(f"{event['label']}{': ' + event['message'] if event.get('message') else ''}", flush=True)

    follow_experiment(client, pk, on_event)
    experiment = client.get(f"experiments/{pk}/")
    if wants_json(args):
        print(json.dumps({"type": "final", **experiment}), flush=True)
    else:
        print(final_line(experiment))
    return exit_status(experiment)


def epoch_line(event):
    words = [f"epoch {event['epoch']:g}"]
    for key, label in (("train_loss", "train loss"), ("val_loss", "val loss")):
        if event.get(key) is not None:
            words.append(f"{label} {event[key]:.4f}")
    if event.get("val_accuracy") is not None:
        words.append(f"val accuracy {percent(event['val_accuracy'])}")
    if event.get("learning_rate") is not None:
        words.append(f"lr {event['learning_rate']:.3g}")
    if event.get("images_per_second"):
        words.append(f"{event['images_per_second']:.0f} images/s")
    return "  ".join(words)


def final_line(experiment):
    status = experiment["status"]
    words = [f"{status.capitalize()}{': ' + experiment['error'] if experiment.get('error') else ''}."]
    validated = [m for m in experiment["metrics"] if m["val_loss"] is not None]
    if validated:
        last = validated[-1]
        words.append(
            f"Final (epoch {last['epoch']:g}): val loss {last['val_loss']:.4f}, "
            f"val accuracy {percent(last['val_accuracy'])}."
        )
    elif experiment["metrics"]:
        last = experiment["metrics"][-1]
        if last["train_loss"] is not None:
            words.append(f"Final (epoch {last['epoch']:g}): train loss {last['train_loss']:.4f}.")
    count = len(experiment["snapshots"])
    words.append(f"{count} snapshot{'s' if count != 1 else ''}.")
    return " ".join(words)


def cmd_experiments_download(args):
    client = Client.from_login()
    epoch = args.epoch if args.epoch is not None else latest_snapshot(client, args.id)
    saved(args, download(client, f"experiments/{args.id}/snapshots/{epoch:g}/download/", args.output))


# --- Exports -----------------------------------------------------------------------------------


def cmd_exports_create(args):
    client = Client.from_login()
    epoch = args.epoch if args.epoch is not None else latest_snapshot(client, args.experiment)
    export = client.post(f"experiments/{args.experiment}/snapshots/{epoch:g}/exports/", {"format": args.format})
    if args.wait:
        export = wait_for(client, f"exports/{export['id']}/", "exporting")
    show_export(args, export)
    return exit_status(export)


def cmd_exports_show(args):
    show_export(args, Client.from_login().get(f"exports/{args.id}/"))


def show_export(args, export):
    if wants_json(args):
        return print_json(export)
    print_fields(export, ["id", "experiment", "snapshot", "format", "status", "error", "size_bytes", "download"])


def cmd_exports_download(args):
    saved(args, download(Client.from_login(), f"exports/{args.id}/download/", args.output))


# --- Evaluations -------------------------------------------------------------------------------

EVALUATION_COLUMNS = [
    ("id", lambda e: e["id"]),
    ("snapshot", lambda e: e["snapshot"]),
    ("source", lambda e: e["source"]),
    ("status", lambda e: e["status"]),
    ("images", lambda e: e["count"]),
    ("top-1", lambda e: percent(e["top1"])),
    ("top-5", lambda e: percent(e["top5"])),
    ("owner", lambda e: e["owner"]),
]


def cmd_evaluations_create(args):
    client = Client.from_login()
    fields = {"snapshot": args.snapshot} if args.snapshot is not None else {}
    path = f"experiments/{args.experiment}/evaluations/"
    if args.archive:
        evaluation = upload_archive(client, path, {k: f"{v:g}" for k, v in fields.items()}, args.archive)
    else:
        source = {"split": args.split, "folder": args.folder, "list": args.list_path}
        evaluation = client.post(path, {**fields, **{k: v for k, v in source.items() if v is not None}})
    if args.wait:
        evaluation = wait_for(client, f"evaluations/{evaluation['id']}/", "evaluating", dataset_progress)
    show_evaluation(args, evaluation)
    return exit_status(evaluation)


def cmd_evaluations_show(args):
    show_evaluation(args, Client.from_login().get(f"evaluations/{args.id}/"))


def cmd_evaluations_list(args):
    rows = Client.from_login().get(f"experiments/{args.experiment}/evaluations/")
    show_rows(args, rows, EVALUATION_COLUMNS, "No evaluations.")


def show_evaluation(args, evaluation):
    if wants_json(args):
        return print_json(evaluation)
    print_fields(evaluation, ["id", "experiment", "snapshot", "source", "split", "path", "upload_name", "status",
                              "error", "count"])  # fmt: skip
    if evaluation.get("top1") is not None:
        print(f"{'top-1':<11}  {percent(evaluation['top1'])}")
        print(f"{'top-5':<11}  {percent(evaluation['top5'])}")


# --- Shared ------------------------------------------------------------------------------------


def wants_json(args):
    return getattr(args, "json", False)


def show_rows(args, rows, columns, empty):
    if wants_json(args):
        print_json(rows)
    else:
        print_table(rows, columns, empty)


def latest_snapshot(client, experiment):
    """The epoch of the experiment's newest snapshot."""
    snapshots = client.get(f"experiments/{experiment}/")["snapshots"]
    if not snapshots:
        raise ApiError(f"Experiment {experiment} has no snapshot yet.")
    return max(snapshots)


def upload_archive(client, path, fields, archive):
    """POSTs the form `fields` with the archive file, its progress on stderr."""
    bar = ProgressBar("uploading")
    try:
        return client.upload(path, fields, {"archive": archive}, progress=bar)
    except FileNotFoundError:
        raise ApiError(f"No file {archive}.") from None
    finally:
        bar.end()


def download(client, path, output):
    """The file at `path` saved in the folder `output` by the name the server gives, its
    progress on stderr; its path."""
    bar = ProgressBar("downloading")
    try:
        return client.download(path, output, progress=bar)
    finally:
        bar.end()


def saved(args, path):
    if wants_json(args):
        print_json({"path": str(path), "bytes": path.stat().st_size})
    else:
        print(f"Saved {path} ({size(path.stat().st_size)}).")


def wait_for(client, path, doing, progress=None):
    """Polls a job until it ends, with its progress on stderr."""
    bar = ProgressBar(doing)
    try:
        while True:
            job = client.get(path)
            if job["status"] in ENDED:
                return job
            if progress:
                bar(*progress(job))
            time.sleep(POLL_SECONDS)
    finally:
        bar.end()


def exit_status(job):
    return 0 if job.get("status") in (None, "done", "queued", "running") else 1


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except ApiError as exc:
        print(f"dlp: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
