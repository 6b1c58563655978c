"""The service's foundation on real databases: the migrations make the schema the models
describe, on SQLite and on a real PostgreSQL; times come back in UTC; secrets are encrypted
with rotation; the configuration comes from a file and the environment."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from skymix.errors import OptionsError, SecretKeyError
from skymix.service.config import ServiceConfig
from skymix.service.crypto import SecretBox, keys_of, new_key
from skymix.service.db import Database, current_revision, head_revision
from skymix.service.models import App, AppSettings, Base


def test_migrations_make_the_schema_the_models_describe(database_url: str) -> None:
    db = Database(database_url)
    try:
        assert current_revision(db.engine) is None
        db.migrate()
        assert current_revision(db.engine) == head_revision()
        db.migrate()  # at the head: nothing to do, nothing lost
        tables = set(inspect(db.engine).get_table_names())
        assert {"apps", "app_settings", "recordings", "jobs", "outbox"} <= tables
        with db.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        db.close()


def test_an_older_database_is_upgraded_with_its_rows(database_url: str) -> None:
    db = Database(database_url)
    try:
        db.migrate("0001")
        with db.session() as session:
            session.add(App(app_id="acme", key_id="k1", key_hash="0" * 64))
        db.migrate()
        with db.session() as session:
            assert session.get(App, "acme") is not None
    finally:
        db.close()


def test_times_come_back_in_utc_and_naive_ones_are_refused(database_url: str) -> None:
    db = Database(database_url)
    try:
        db.migrate()
        local = datetime(2026, 12, 7, 4, 30, tzinfo=timezone(timedelta(hours=1)))
        with db.session() as session:
            session.add(App(app_id="acme", key_id="k1", key_hash="0" * 64, created_at=local))
        with db.session() as session:
            app = session.get(App, "acme")
            assert app is not None
            assert app.created_at == local and app.created_at.tzinfo is UTC
        with pytest.raises(Exception, match="naive datetime"), db.session() as session:
            session.add(App(app_id="b", key_id="k2", key_hash="0", created_at=datetime(2026, 1, 1)))
    finally:
        db.close()


def test_settings_rows_hold_no_secret_in_clear(database_url: str) -> None:
    box = SecretBox([new_key()])
    db = Database(database_url)
    try:
        db.migrate()
        secret = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKWQON"
        with db.session() as session:
            session.add(App(app_id="acme", key_id="k1", key_hash="0" * 64))
            session.flush()
            session.add(
                AppSettings(
                    app_id="acme",
                    document_enc=box.encrypt(json.dumps({"secret_access_key": secret})),
                    recording_enabled=True,
                )
            )
        with db.engine.connect() as connection:
            rows = connection.execute(text("SELECT * FROM app_settings")).all()
        assert len(rows) == 1 and secret not in repr(rows)
        with db.session() as session:
            stored = session.get(AppSettings, "acme")
            assert stored is not None and secret in box.decrypt(stored.document_enc)
    finally:
        db.close()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'data' / 'skymix.db'}")
    try:
        db.migrate()
        with db.engine.connect() as connection:
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
        with pytest.raises(Exception, match="FOREIGN KEY"), db.session() as session:
            session.add(AppSettings(app_id="nobody", document_enc="x", recording_enabled=True))
    finally:
        db.close()


def test_secrets_rotate_from_an_old_key_to_a_new_one() -> None:
    old, new = new_key(), new_key()
    token = SecretBox([old]).encrypt("whsec_secret")
    both = SecretBox([new, old])
    assert both.decrypt(token) == "whsec_secret"
    rotated = both.rotate(token)
    assert SecretBox([new]).decrypt(rotated) == "whsec_secret"
    with pytest.raises(SecretKeyError) as info:
        SecretBox([new]).decrypt(token)
    assert old not in str(info.value) and new not in str(info.value)
    with pytest.raises(SecretKeyError):
        SecretBox([new]).decrypt(token[:-4] + "AAAA")  # altered: refused
    with pytest.raises(SecretKeyError) as bad:
        SecretBox(["not a key " + old[10:]])
    assert old[10:] not in str(bad.value)


def test_the_embedded_default_makes_a_private_key_file_once(tmp_path: Path) -> None:
    config = ServiceConfig.load(environ={}, data_dir=tmp_path / "data")
    first = keys_of(config)
    assert keys_of(config) == first and len(first) == 1
    key_file = tmp_path / "data" / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not [p for p in key_file.parent.iterdir() if p.name != "secret.key"]


def test_configuration_from_a_file_and_the_environment(tmp_path: Path) -> None:
    config_file = tmp_path / "skymix.toml"
    config_file.write_text('port = 9000\nworkers = 3\ndata_dir = "/srv/skymix"\n')
    key = new_key()
    env = {"SKYMIX_PORT": "9100", "SKYMIX_SECRET_KEY": f"{key}, {new_key()}"}
    config = ServiceConfig.load(config_file, env)
    assert (config.port, config.workers, config.data_dir) == (9100, 3, Path("/srv/skymix"))
    assert config.secret_keys[0] == key and len(config.secret_keys) == 2
    assert config.host == "127.0.0.1"
    assert config.database == "sqlite:////srv/skymix/skymix.db"
    with pytest.raises(OptionsError) as info:
        ServiceConfig.load(config_file, {"SKYMIX_PORT": "80000"})
    assert info.value.field == "SKYMIX_PORT"
    with pytest.raises(OptionsError) as info:
        ServiceConfig.load(environ={"SKYMIX_DATABASE_URL": "mysql://x"})
    assert info.value.field == "SKYMIX_DATABASE_URL"
    config_file.write_text("secret_keys = 'a-key-given-as-a-string'\n")
    with pytest.raises(OptionsError) as info:
        ServiceConfig.load(config_file, {})
    assert "a-key-given-as-a-string" not in str(info.value)
    assert os.fspath(config_file) in str(info.value)


def test_the_configuration_shows_no_key_and_no_password_and_absolute_paths() -> None:
    key = new_key()
    env = {"SKYMIX_SECRET_KEY": key, "SKYMIX_DATABASE_URL": "postgresql://u:pw-Secret9@h/db"}
    config = ServiceConfig.load(environ=env, data_dir=Path("rel/data"))
    shown = repr(config) + str(config)
    assert key not in shown and "pw-Secret9" not in shown and "<1 keys>" in shown
    assert config.data_dir == Path.cwd() / "rel" / "data"
    assert ServiceConfig.load(environ={}).data_dir == Path.cwd() / "skymix-data"
