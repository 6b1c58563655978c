"""The notification-settings API against a live ``skymix serve`` on SQLite and PostgreSQL, with
real keys on a real SeaweedFS: CRUD, masked secrets kept through GET-edit-PUT and PATCH, two
applications isolated, validation naming the field, the S3 key check refusing keys that cannot
write (or skipped and recorded), optimistic versions without lost writes, and no secret in a row,
a response or the log."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from deliver_tools import HOOK_SECRET
from postgres import Postgres
from seaweed import S3_ADMIN, S3_READ_ONLY, SeaweedS3
from service_tools import Service
from skymix.deliver.settings import RecordingSettings
from skymix.service.api.settings_api import merge_patch
from skymix.service.crypto import SecretBox
from skymix.service.db import Database

SETTINGS = "/rest/recording/notifications"
HOOK_URL = "http://127.0.0.1:9/hooks"  # loopback: this module's service allows private URLs
_NAMES = itertools.count(1)


def database_for(request: pytest.FixtureRequest, folder: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{folder / 'skymix.db'}"
    server: Postgres = request.getfixturevalue("postgres")
    return server.create_database(f"settings{next(_NAMES)}")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """One service per database for the module, allowing private notification addresses (the
    SeaweedFS endpoint and the receivers are on 127.0.0.1); each test uses its own apps."""
    folder = tmp_path_factory.mktemp("settings")
    env = {"SKYMIX_ALLOW_PRIVATE_NOTIFY": "1"}
    with Service(folder / "data", database_for(request, folder), env=env) as running:
        yield running


def document(
    seaweed: SeaweedS3, app_id: str, *, keys: Any = S3_ADMIN, **changes: Any
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "app_id": app_id,
        "recording_enabled": True,
        "storage": {
            "arn": f"arn:aws:s3:{seaweed.region}::{seaweed.bucket}/{app_id}/",
            "access_key_id": keys.access_key,
            "secret_access_key": keys.secret_key,
            "endpoint_url": seaweed.endpoint_url,
            "link_expiry_s": 600,
        },
        "notifications": {
            "enabled": True,
            "url": HOOK_URL,
            "secret": HOOK_SECRET,
            "emails": ["ops@example.com"],
        },
    }
    doc.update(changes)
    return doc


def stored(service: Service, app_id: str) -> tuple[dict[str, Any], list[tuple[object, ...]]]:
    """The settings as stored (decrypted with the service's key) and the raw row."""
    db = Database(service.database_url)
    try:
        with db.engine.connect() as connection:
            raw = [
                tuple(row)
                for row in connection.execute(
                    text("SELECT * FROM app_settings WHERE app_id = :a"), {"a": app_id}
                )
            ]
    finally:
        db.close()
    enc = next(str(v) for v in raw[0] if isinstance(v, str) and v.startswith("gAAAA"))
    revealed = RecordingSettings.from_json(SecretBox([service.secret_key]).decrypt(enc))
    return revealed.to_json(reveal=True), raw


def problem(answer: httpx.Response) -> dict[str, Any]:
    """The one problem of a 422 answer."""
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert isinstance(detail, list) and len(detail) == 1
    assert set(detail[0]) == {"loc", "msg", "type"}
    return dict(detail[0])


SECRETS = [S3_ADMIN.secret_key, S3_READ_ONLY.secret_key, HOOK_SECRET]


def test_crud_with_secrets_masked_and_kept(service: Service, seaweed: SeaweedS3) -> None:
    key = service.create_app("crud")
    with service.client(key) as client:
        created = client.post(SETTINGS, json=document(seaweed, "crud"))
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["verified"] is True and body["version"] == 1
        assert body["storage"]["secret_access_key"] == "****" + S3_ADMIN.secret_key[-4:]
        assert body["notifications"]["secret"] == "****" + HOOK_SECRET[-4:]
        assert created.headers["etag"] == '"1"'
        assert created.headers["location"] == f"{SETTINGS}/crud"
        assert not any(secret in created.text for secret in SECRETS)
        again = client.post(SETTINGS, json=document(seaweed, "crud"))
        assert again.status_code == 409

        read = client.get(f"{SETTINGS}/crud")
        assert read.status_code == 200 and read.json() == body

        # GET, edit, PUT: the masked secrets sent back keep the stored ones
        edited = read.json()
        for meta in ("verified", "version", "created_at", "updated_at"):
            del edited[meta]
        edited["notifications"]["emails"] = ["a@example.com", "b@example.org"]
        put = client.put(f"{SETTINGS}/crud", json=edited)
        assert put.status_code == 200, put.text
        assert put.json()["version"] == 2 and put.json()["verified"] is True
        assert put.json()["notifications"]["emails"] == ["a@example.com", "b@example.org"]
        revealed, _ = stored(service, "crud")
        assert revealed["storage"]["secret_access_key"] == S3_ADMIN.secret_key
        assert revealed["notifications"]["secret"] == HOOK_SECRET

        # PATCH: a merge patch; a masked secret is "unchanged", null removes a field
        patch = {
            "recording_enabled": False,
            "storage": {
                "link_expiry_s": 60,
                "secret_access_key": "****" + S3_ADMIN.secret_key[-4:],
            },
            "notifications": {"emails": None},
        }
        patched = client.patch(
            f"{SETTINGS}/crud",
            json=patch,
            headers={"content-type": "application/merge-patch+json"},
        )
        assert patched.status_code == 200, patched.text
        out = patched.json()
        assert out["version"] == 3 and out["recording_enabled"] is False
        assert out["storage"]["link_expiry_s"] == 60 and out["notifications"]["emails"] == []
        assert out["storage"]["secret_access_key"] == "****" + S3_ADMIN.secret_key[-4:]
        assert out["created_at"] == body["created_at"] and out["updated_at"] > body["updated_at"]
        revealed, raw = stored(service, "crud")
        assert revealed["storage"]["secret_access_key"] == S3_ADMIN.secret_key
        assert revealed["notifications"]["secret"] == HOOK_SECRET
        # the row itself holds no secret in clear, nor any field of the document
        assert not any(secret in repr(raw) for secret in SECRETS)
        assert S3_ADMIN.access_key not in repr(raw) and "ops@example.com" not in repr(raw)

        # a masked value that is not the stored secret's mask is refused, not stored
        wrong = client.patch(f"{SETTINGS}/crud", json={"notifications": {"secret": "****ABCD"}})
        assert problem(wrong)["loc"] == ["body", "notifications", "secret"]
        assert "masked" in problem(wrong)["msg"]

        assert client.delete(f"{SETTINGS}/crud").status_code == 204
        assert client.get(f"{SETTINGS}/crud").status_code == 404
        assert client.delete(f"{SETTINGS}/crud").status_code == 404
        assert client.patch(f"{SETTINGS}/crud", json={}).status_code == 404


def test_applications_see_only_their_own_settings(service: Service, seaweed: SeaweedS3) -> None:
    one, two = service.create_app("iso-one"), service.create_app("iso-two")
    with service.client(one) as first, service.client(two) as second:
        created = first.post(
            SETTINGS, json=document(seaweed, "iso-one"), params={"verify": "false"}
        )
        assert created.status_code == 201
        unknown = second.get(f"{SETTINGS}/nobody-at-all")
        assert unknown.status_code == 404
        for answer in (
            second.get(f"{SETTINGS}/iso-one"),
            second.put(f"{SETTINGS}/iso-one", json=document(seaweed, "iso-one")),
            second.patch(f"{SETTINGS}/iso-one", json={"recording_enabled": False}),
            second.delete(f"{SETTINGS}/iso-one"),
        ):
            assert answer.status_code == 404
            assert answer.content == unknown.content
        # a document naming another application is refused whoever that is
        foreign = second.post(SETTINGS, json=document(seaweed, "iso-one"))
        assert foreign.status_code == 403
        assert foreign.json()["detail"][0]["loc"] == ["body", "app_id"]
        nobody = second.post(SETTINGS, json=document(seaweed, "nobody-at-all"))
        assert nobody.status_code == 403 and nobody.json() == foreign.json()
        renamed = first.patch(f"{SETTINGS}/iso-one", json={"app_id": "iso-two"})
        assert renamed.status_code == 403
        assert first.get(f"{SETTINGS}/iso-one").json()["version"] == 1


def test_keys_that_cannot_write_are_refused_unless_verify_is_false(
    service: Service, seaweed: SeaweedS3
) -> None:
    key = service.create_app("verify")
    with service.client(key) as client:
        read_only = document(seaweed, "verify", keys=S3_READ_ONLY)
        refused = problem(client.post(SETTINGS, json=read_only))
        assert refused["loc"] == ["body", "storage"] and refused["type"] == "access_denied"
        assert "s3:PutObject" in refused["msg"] and "AccessDenied" in refused["msg"]
        assert client.get(f"{SETTINGS}/verify").status_code == 404

        skipped = client.post(SETTINGS, json=read_only, params={"verify": "false"})
        assert skipped.status_code == 201 and skipped.json()["verified"] is False

        # a change of keys is checked: the admin's pass and the settings become verified
        admin = {"access_key_id": S3_ADMIN.access_key, "secret_access_key": S3_ADMIN.secret_key}
        fixed = client.patch(f"{SETTINGS}/verify", json={"storage": admin})
        assert fixed.status_code == 200, fixed.text
        assert fixed.json()["verified"] is True and fixed.json()["version"] == 2

        # a change of other fields runs no check and keeps the flag
        other = client.patch(f"{SETTINGS}/verify", json={"storage": {"link_expiry_s": 30}})
        assert other.json()["verified"] is True and other.json()["version"] == 3

        # keys that cannot write are refused on a change too, and nothing is stored
        keys = {"access_key_id": S3_READ_ONLY.access_key}
        keys["secret_access_key"] = S3_READ_ONLY.secret_key
        back = {"storage": keys}
        assert "s3:PutObject" in problem(client.patch(f"{SETTINGS}/verify", json=back))["msg"]
        assert client.get(f"{SETTINGS}/verify").json()["version"] == 3
        unverified = client.patch(f"{SETTINGS}/verify", json=back, params={"verify": "false"})
        assert unverified.json()["verified"] is False and unverified.json()["version"] == 4


#: (a change to a good document, where the problem is, words of the message)
INVALID: list[tuple[dict[str, Any], list[str | int], str]] = [
    ({"storage": {"arn": "arn:aws:s3:us-east-1::"}}, ["storage", "arn"], "bucket"),
    ({"notifications": {"url": "ftp://example.com/x"}}, ["notifications", "url"], "http"),
    (
        {"notifications": {"emails": ["ok@example.com", "not-an-address"]}},
        ["notifications", "emails", 1],
        "e-mail",
    ),
    ({"storage": {"access_key_id": ""}}, ["storage", "access_key_id"], "non-empty"),
    ({"storage": {"secret_access_key": ""}}, ["storage", "secret_access_key"], "non-empty"),
    ({"storage": {"link_expiry_s": 0}}, ["storage", "link_expiry_s"], ""),
    ({"storage": {"key_template": "../{room}"}}, ["storage", "key_template"], "'..'"),
    ({"colour": "blue"}, ["colour"], ""),
]


def test_validation_names_the_field(service: Service, seaweed: SeaweedS3) -> None:
    key = service.create_app("valid")
    with service.client(key) as client:
        for change, loc, words in INVALID:
            doc = document(seaweed, "valid")
            for name, value in change.items():
                doc[name] = {**doc[name], **value} if isinstance(value, dict) else value
            answer = problem(client.post(SETTINGS, json=doc))
            assert answer["loc"] == ["body", *loc], change
            assert words in answer["msg"], answer
            assert not any(secret in str(answer) for secret in SECRETS)
        assert client.get(f"{SETTINGS}/valid").status_code == 404


def test_bodies_that_are_not_a_json_object(service: Service) -> None:
    key = service.create_app("shapes")
    with service.client(key) as client:
        for body in (b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe"):
            answer = problem(client.post(SETTINGS, content=body))
            assert answer["loc"] == ["body"]
        bad_match = client.put(f"{SETTINGS}/shapes", json={}, headers={"If-Match": "soon"})
        assert bad_match.status_code == 422  # FastAPI's own check of the header's pattern
        assert bad_match.json()["detail"][0]["loc"] == ["header", "if-match"]


def test_concurrent_patches_lose_no_write(service: Service, seaweed: SeaweedS3) -> None:
    key = service.create_app("race")
    with service.client(key) as client:
        created = client.post(SETTINGS, json=document(seaweed, "race"), params={"verify": "false"})
        assert created.status_code == 201
        # If-Match on an old version: 409, nothing changed
        stale = client.patch(
            f"{SETTINGS}/race", json={"recording_enabled": False}, headers={"If-Match": '"7"'}
        )
        assert stale.status_code == 409
        fresh = client.patch(
            f"{SETTINGS}/race", json={"recording_enabled": False}, headers={"If-Match": '"1"'}
        )
        assert fresh.status_code == 200 and fresh.headers["etag"] == '"2"'
    patches = [
        {"recording_enabled": True},
        {"storage": {"link_expiry_s": 123}},
        {"storage": {"key_template": "{room}/{recording_id}.mp4"}},
        {"storage": {"delete_local_after_upload": True}},
        {"notifications": {"emails": ["x@example.com"]}},
        {"notifications": {"enabled": False}},
    ]
    answers: list[int] = []
    start = threading.Barrier(len(patches))

    def send(patch: dict[str, Any]) -> None:
        with service.client(key) as own:
            start.wait()
            answers.append(own.patch(f"{SETTINGS}/race", json=patch).status_code)

    threads = [threading.Thread(target=send, args=(patch,)) for patch in patches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert answers == [200] * len(patches)
    with service.client(key) as client:
        final = client.get(f"{SETTINGS}/race").json()
    assert final["version"] == 2 + len(patches)
    assert final["recording_enabled"] is True
    assert final["storage"]["link_expiry_s"] == 123
    assert final["storage"]["key_template"] == "{room}/{recording_id}.mp4"
    assert final["storage"]["delete_local_after_upload"] is True
    assert final["notifications"]["emails"] == ["x@example.com"]
    assert final["notifications"]["enabled"] is False


def test_private_notification_addresses_are_refused(
    database_url: str, seaweed: SeaweedS3, tmp_path: Path
) -> None:
    with Service(tmp_path / "data", database_url) as strict:  # no SKYMIX_ALLOW_PRIVATE_NOTIFY
        key = strict.create_app("guarded")
        with strict.client(key) as client:
            for url in (
                "http://127.0.0.1:8080/hook",
                "http://10.1.2.3/hook",
                "http://169.254.169.254/latest",
                "http://[::1]/hook",
                "http://0.0.0.0/hook",
                "http://localhost/hook",
            ):
                doc = document(seaweed, "guarded")
                doc["notifications"]["url"] = url
                answer = problem(client.post(SETTINGS, json=doc, params={"verify": "false"}))
                assert answer["loc"] == ["body", "notifications", "url"], url
                assert "refused" in answer["msg"]
            # the bucket's endpoint is guarded the same way
            public = document(seaweed, "guarded")
            public["notifications"]["url"] = "https://93.184.215.14/hook"
            loopback = problem(client.post(SETTINGS, json=public))
            assert loopback["loc"] == ["body", "storage", "endpoint_url"]
            del public["storage"]
            accepted = client.post(SETTINGS, json=public)
            assert accepted.status_code == 201, accepted.text
            assert accepted.json()["verified"] is False  # no storage: nothing proven
    assert not any(secret in strict.log() for secret in SECRETS)


def test_the_log_holds_no_secret(service: Service) -> None:
    """Last in the module: every secret the tests sent, never in the service's log."""
    log = service.log()
    assert "notification settings of crud created" in log
    assert not any(secret in log for secret in SECRETS)
    assert "Traceback" not in log


@pytest.mark.parametrize(
    ("target", "patch", "result"),
    [  # RFC 7396, appendix A
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"a": "foo"}, "bar", "bar"),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_merge_patch_follows_rfc_7396(target: Any, patch: Any, result: Any) -> None:
    assert merge_patch(target, patch) == result
