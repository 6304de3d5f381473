"""Requests generated from the API's own OpenAPI schema, sent to the real WSGI application
as alice: none may answer 500. A few examples per operation keep it to seconds; classify is
left out, since a generated `url` would be fetched from the network."""

import json
import zlib

import pytest
import schemathesis
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from config.wsgi import application
from tests.factories import make_experiment, make_token

MAIN_ENDPOINTS = r"^/api/(datasets|experiments)/(\{id\}/((log|abort|resume)/)?)?$"


@pytest.fixture
def experiment(alice):
    return make_experiment(alice)


@pytest.fixture
def token(alice):
    return make_token(alice).key


def load_schema():
    # The schema the application serves at /api/schema/, generated in-process: reading it
    # over HTTP would need a user before the test database exists.
    document = SchemaGenerator().get_schema(request=None, public=True)
    loaded = schemathesis.openapi.from_dict(json.loads(OpenApiJsonRenderer().render(document)))
    loaded.app = application  # requests go to the WSGI application, in this process
    return loaded.include(path_regex=MAIN_ENDPOINTS, method=["GET", "POST", "PATCH"])


schema = load_schema()


# The WSGI handler closes the database connection after each request, as in production;
# only a committed database survives that.
@pytest.mark.django_db(transaction=True)
@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_generated_request_gets_a_server_error(case, token, experiment):
    # Generated ids would almost never name a row: half the cases go to alice's own.
    if case.path_parameters and zlib.crc32(repr(case.body).encode()) % 2:
        case.path_parameters["id"] = experiment.dataset_id if "/datasets/" in case.path else experiment.pk
    case.call_and_validate(headers={"Authorization": f"Token {token}"}, checks=[not_a_server_error])
