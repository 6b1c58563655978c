"""Schemathesis against a live ``skymix serve`` (SQLite): every operation of the service's own
OpenAPI document, with an application's valid key and with none; no answer is a 5xx and every
answer conforms to the document (status code, content type, headers, body schema). Bounded: a
few examples per operation keep the file short. Then what the generated cases do not reach: a
method a path does not have (405 naming the path's methods in Allow) and a body over the limit
(413), each as the document says."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import allow_header_conformance

from service_tools import Service

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    allow_header_conformance,
]
#: Examples per operation and key: enough to reach each operation's answers, small enough
#: that the file stays well under a minute and a half.
EXAMPLES = 25
_TURNS = itertools.count()
METHODS = ("get", "put", "post", "patch", "delete")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, str]]:
    """One service for the module on SQLite, with application acme; its key."""
    tmp = tmp_path_factory.mktemp("openapi")
    # many requests without a key from one address: the failed-authentication limit is high
    # enough here that the unauthenticated cases see 401 as well as 429
    service = Service(tmp / "data", f"sqlite:///{tmp / 'skymix.db'}")
    service.data_dir.mkdir(parents=True)
    key = service.create_app("acme")
    with service:
        yield service, key
    log = service.log()
    assert "Traceback" not in log
    assert key not in log


BOUNDED = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def as_acme(case: Any) -> None:
    """Every other case made about application acme (its path's and body's app_id), so that the
    settings routes answer more than 404 and 403."""
    if next(_TURNS) % 2:
        return
    if case.path_parameters and "app_id" in case.path_parameters:
        case.path_parameters["app_id"] = "acme"
    if isinstance(case.body, dict) and "app_id" in case.body:
        case.body["app_id"] = "acme"


def fuzz(
    service: Service,
    headers: dict[str, str],
    check: Callable[[Any, Any], None],
    prepare: Callable[[Any], None] = lambda case: None,
) -> None:
    """Every operation of the live document, EXAMPLES cases each (``prepare``d) sent with
    ``headers`` and validated; ``check(case, answer)`` on top. Every operation's first failure
    is reported. (Schemathesis's pytest plug-in does not run on this pytest: the cases are
    drawn here with Hypothesis.)"""
    document = schemathesis.openapi.from_url(f"{service.url}/openapi.json")
    failures: list[str] = []
    operations = 0
    for result in document.get_all_operations():
        if isinstance(result, Err):
            failures.append(f"an operation schemathesis cannot read: {result.err()}")
            continue
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @BOUNDED
        def run(case: Any) -> None:
            prepare(case)
            answer = case.call_and_validate(base_url=service.url, headers=headers, checks=CHECKS)
            check(case, answer)

        try:
            run()
        except Exception as exc:  # noqa: BLE001 - collected: every operation gets its run
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert operations >= 8
    assert not failures, "\n\n".join(failures)


def test_every_operation_with_a_valid_key(live: tuple[Service, str]) -> None:
    service, key = live

    def authenticated(case: Any, answer: Any) -> None:
        assert answer.status_code != 401, answer.text

    fuzz(service, {"Authorization": f"Bearer {key}"}, authenticated, as_acme)


def test_every_operation_without_a_key(live: tuple[Service, str]) -> None:
    service, _ = live

    def refused(case: Any, answer: Any) -> None:
        if case.path.startswith("/rest"):
            assert answer.status_code in (401, 429), answer.text

    fuzz(service, {}, refused)


def test_a_method_a_path_lacks_is_405_naming_its_methods(live: tuple[Service, str]) -> None:
    service, key = live
    document = httpx.get(f"{service.url}/openapi.json").json()
    headers = {"Authorization": f"Bearer {key}"}
    checked = 0
    for path, operations in document["paths"].items():
        documented = {m for m in operations if m in METHODS}
        missing = [m for m in METHODS if m not in documented]
        if not missing or "{" in path:
            continue
        answer = httpx.request(missing[0].upper(), f"{service.url}{path}", headers=headers)
        assert answer.status_code == 405, (path, answer.text)
        allowed = {m.strip().lower() for m in answer.headers["allow"].split(",")}
        assert allowed - {"head"} == documented, (path, answer.headers["allow"])
        checked += 1
    assert checked >= 3


def test_a_body_over_the_limit_is_413_as_documented(live: tuple[Service, str]) -> None:
    service, key = live
    document = httpx.get(f"{service.url}/openapi.json").json()
    body = b"{" + b" " * (2 << 20) + b"}"
    routes = (
        ("/rest/recordings", "/rest/recordings", "post"),
        ("/rest/recording/notifications/acme", "/rest/recording/notifications/{app_id}", "put"),
    )
    for path, template, method in routes:
        answer = httpx.request(
            method.upper(),
            f"{service.url}{path}",
            content=body,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        assert answer.status_code == 413
        assert "413" in document["paths"][template][method]["responses"], (path, method)
        assert isinstance(answer.json()["detail"], str)
