"""What a page costs does not grow with the installation: no new Redis connection per
request, and the API's lists cost the same queries at 10 and at 2,000 experiments."""

from urllib.parse import urlparse

import psutil
import redis
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.models import Visibility
from tests.factories import make_dataset
from tests.test_console import many_experiments


def redis_sockets():
    """The local ports of this process's TCP connections to the queues' Redis."""
    port = urlparse(settings.REDIS_URL).port or 6379
    return {c.laddr.port for c in psutil.Process().net_connections(kind="tcp") if c.raddr and c.raddr.port == port}


def redis_client_ids(probe):
    """Redis's ids of this process's connections to it (Redis numbers every connection it
    accepts, never reusing an id), less the probe's own (its last command is CLIENT LIST)."""
    ports = redis_sockets()
    return {
        client["id"]
        for client in probe.client_list()
        if int(client["addr"].rsplit(":", 1)[1]) in ports and not client["cmd"].startswith("client")
    }


def test_console_requests_reuse_one_redis_connection(client, alice):
    many_experiments(alice, 3, make_dataset(alice))
    client.force_login(alice)
    # The console lists the devices and their queues; the form lists the live devices.
    pages = [reverse("console"), reverse("experiment-new")]
    probe = redis.Redis.from_url(settings.REDIS_URL)
    # The pool opens a connection more while one is in use (a pipeline): let it fill.
    for _ in range(3):
        for url in pages:
            assert client.get(url).status_code == 200
    warm = redis_client_ids(probe)
    assert warm, "no connection to Redis outlived the request"
    seen = set()
    for _ in range(10):
        for url in pages:
            assert client.get(url).status_code == 200
            seen |= redis_client_ids(probe)
    probe.close()
    # A client per request would be a new connection, with a new id, after every request.
    assert seen == warm


def api_queries(client, url):
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries), response.json()["count"]


def test_the_api_lists_cost_the_same_at_10_and_at_2000_experiments(client, alice, bob, team):
    client.force_login(bob)
    dataset = make_dataset(alice, visibility=Visibility.TEAM, team=team)
    many_experiments(alice, 10, dataset, visibility=Visibility.TEAM, team=team)
    small = {url: api_queries(client, url) for url in ("/api/experiments/", "/api/datasets/")}
    assert small["/api/experiments/"][1] == 10
    many_experiments(alice, 1990, dataset, visibility=Visibility.TEAM, team=team)
    for url, (queries, _) in small.items():
        assert api_queries(client, url)[0] == queries, url
    assert api_queries(client, "/api/experiments/")[1] == 2000
