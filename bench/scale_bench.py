"""Do the pages cost the same with 10,000 experiments as with 10?

One user (bob) sees 10 experiments and 5 datasets of his team, then 10,000 experiments and
500 datasets (with 2,000 more of another user's, which he may not see, in the same tables).
At each size: the console, the API's experiment list and one experiment's page (50
epochs, snapshots, a log), each requested 50 times in this process through Django's test
client (the whole middleware stack, no network): p50 and p95 time, queries per request
and the bytes answered; the large size's p95 over the small one's is the ratio. The goal
is the same query count at both sizes and a p95 under 150 ms.

On the current database: SQLite by default, PostgreSQL when DATABASE_URL names one (a
database of its own is made beside it and dropped after).

    python -m bench.scale_bench [--quick]
"""

import argparse
import statistics
import time
from datetime import timedelta

from bench.site import throwaway_site

SMALL = 10
GOAL_P95_MS = 150


def populate(experiments, datasets, *, hidden=0, start=0):
    """Rows of alice's shared with the team bob is in, made in bulk; `hidden` experiments
    of charlie's that bob may not see. Returns bob."""
    from django.utils import timezone

    from accounts.models import Membership, Team, User, Visibility
    from datasets.models import Dataset
    from training.models import EpochMetric, Experiment

    team, _ = Team.objects.get_or_create(name="Vision")
    users = {}
    for name, role in (("alice", Membership.Role.ADMIN), ("bob", Membership.Role.MEMBER), ("charlie", None)):
        users[name] = User.objects.filter(username=name).first()
        if users[name] is None:
            users[name] = User.objects.create_user(name, password=f"{name}-password")
            if role:
                Membership.objects.create(user=users[name], team=team, role=role)
    now = timezone.now()
    shared = {"owner": users["alice"], "team": team, "visibility": Visibility.TEAM}
    done = {"status": Dataset.Status.DONE, "classes": [str(i) for i in range(10)], "counts": {"train": [100] * 10}}
    have = Dataset.objects.filter(owner=users["alice"]).count()
    Dataset.objects.bulk_create(
        Dataset(name=f"digits {i:04d}", created=now - timedelta(minutes=i), source_folder="/nowhere", **shared, **done)
        for i in range(have, datasets)
    )
    sets = list(Dataset.objects.filter(owner=users["alice"]).values_list("pk", flat=True))
    have = Experiment.objects.filter(owner=users["alice"]).count()
    # One in a hundred still queued or running, as a busy installation's console has them.
    statuses = ["running" if i % 100 == 0 else "queued" if i % 100 == 1 else "done" for i in range(experiments)]
    made = Experiment.objects.bulk_create(
        Experiment(
            name=f"run {i:05d}",
            dataset_id=sets[i % len(sets)],
            network=("lenet", "alexnet", "resnet")[i % 3],
            status=statuses[i],
            created=now - timedelta(seconds=i),
            **shared,
        )
        for i in range(have, experiments)
    )
    if hidden:
        private = Dataset.objects.create(name="charlie's", owner=users["charlie"], **done)
        made += Experiment.objects.bulk_create(
            Experiment(name=f"private {i}", owner=users["charlie"], dataset=private, status="done")
            for i in range(hidden)
        )
    EpochMetric.objects.bulk_create(
        EpochMetric(experiment=e, epoch=epoch, train_loss=1 / epoch, val_loss=1.1 / epoch, val_accuracy=0.9)
        for e in made
        for epoch in range(1, 6)
    )
    # The planner's statistics, as a running installation has them (PostgreSQL's autovacuum
    # analyzes a table that grew): right after a bulk insert it would guess at the rows.
    from django.db import connection

    tables = ", ".join(model._meta.db_table for model in (Dataset, Experiment, EpochMetric))
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {tables}" if connection.vendor == "postgresql" else "ANALYZE")
    return users["bob"]


def detailed_experiment():
    """An experiment with a long history: 50 epochs, 10 snapshots, 200 log lines."""
    from accounts.models import User
    from training.models import EpochMetric, Experiment, LogLine, Snapshot

    alice = User.objects.get(username="alice")
    experiment = Experiment.objects.filter(owner=alice, status="done").order_by("pk").first()
    EpochMetric.objects.filter(experiment=experiment).delete()
    EpochMetric.objects.bulk_create(
        EpochMetric(
            experiment=experiment, epoch=e, train_loss=1 / e, val_loss=1.2 / e, val_accuracy=1 - 1 / (e + 1),
            learning_rate=0.01, images_per_second=5000, seconds=2.0,
        )
        for e in range(1, 51)
    )  # fmt: skip
    Snapshot.objects.bulk_create(Snapshot(experiment=experiment, epoch=e, path="/nowhere") for e in range(5, 51, 5))
    LogLine.objects.bulk_create(LogLine(experiment=experiment, message=f"epoch {i // 4 + 1} step") for i in range(200))
    Experiment.objects.filter(pk=experiment.pk).update(epochs=50)
    return experiment


def measure(client, url, requests):
    """(p50 ms, p95 ms, queries of one request, bytes) of `requests` GETs after a warm-up."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(3):
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    count = len(queries)  # read now: the next request empties the connection's log
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        client.get(url)
        times.append(1000 * (time.perf_counter() - started))
    p95 = statistics.quantiles(times, n=20)[-1]
    return statistics.median(times), p95, count, len(response.content)


def pages(experiment):
    return {
        "console": "/",
        "api list": "/api/experiments/",
        "experiment": experiment.get_absolute_url(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2,000 experiments, 10 requests")
    args = parser.parse_args()
    large, datasets, requests = (2000, 100, 10) if args.quick else (10_000, 500, 50)

    with throwaway_site() as vendor:
        from django.test import Client

        client = Client()
        client.force_login(populate(SMALL, 5))
        experiment = detailed_experiment()
        small = {name: measure(client, url, requests) for name, url in pages(experiment).items()}
        started = time.perf_counter()
        populate(large, datasets, hidden=2000)
        filled = time.perf_counter() - started
        big = {name: measure(client, url, requests) for name, url in pages(experiment).items()}

    print(
        f"scale on {vendor}: {SMALL} → {large:,} experiments and 5 → {datasets} datasets visible to one user "
        f"(+2,000 hidden; filled in {filled:.1f} s), {requests} requests each"
    )
    met = True
    for name in small:
        (s50, s95, sq, sb), (b50, b95, bq, bb) = small[name], big[name]
        met &= bq == sq and b95 < GOAL_P95_MS
        print(
            f"scale {name:10}  {SMALL}: p50 {s50:5.1f} ms p95 {s95:5.1f} ms {sq:2} queries {sb / 1024:5.1f} kB"
            f"  {large:,}: p50 {b50:5.1f} ms p95 {b95:5.1f} ms {bq:2} queries {bb / 1024:5.1f} kB"
            f"  p95 ratio {b95 / s95:.2f}"
        )
    print(f"scale goal (same queries, p95 < {GOAL_P95_MS} ms): {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
