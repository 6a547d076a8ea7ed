"""Settings in layers, and the Alembic migrations: they build exactly the models'
schema on both backends, and go down and up again."""

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from gateway.coordinator import create_app, db
from gateway.coordinator.config import DEFAULTS, load_settings
from gateway.coordinator.migrate import current_revision, downgrade, head_revision, upgrade
from gateway.coordinator.models import Base


def test_settings_layers_defaults_file_test_dict_environment(tmp_path):
    path = tmp_path / "coordinator.yaml"
    path.write_text("access_token_ttl: 60\nrun_lease: 30\nlong_poll_max: 20\n")
    env = {
        "DSGATEWAY_COORDINATOR_CONFIG": str(path),
        "DSGATEWAY_COORD_RUN_LEASE": "45",
        "DSGATEWAY_COORD_DATABASE_URL": "postgresql+psycopg://db/x",
        "DSGATEWAY_COORD_AGGREGATOR_MODULES": '["my.module"]',
        "OTHER": "ignored",
    }
    settings = load_settings({"LONG_POLL_MAX": 10, "ACCESS_TOKEN_TTL": 61}, env)
    assert settings["REFRESH_TOKEN_TTL"] == DEFAULTS["REFRESH_TOKEN_TTL"]  # default
    assert settings["ACCESS_TOKEN_TTL"] == 61  # test dict over file
    assert settings["LONG_POLL_MAX"] == 10
    assert settings["RUN_LEASE"] == 45  # environment over file
    assert settings["DATABASE_URL"] == "postgresql+psycopg://db/x"  # not JSON: text
    assert settings["AGGREGATOR_MODULES"] == ["my.module"]
    assert "OTHER" not in settings


def test_embedded_defaults_sqlite_and_a_kept_signing_key(tmp_path, monkeypatch):
    for key in list(__import__("os").environ):
        if key.startswith("DSGATEWAY_COORD"):
            monkeypatch.delenv(key)
    instance = tmp_path / "inst"
    app = create_app({"INSTANCE_PATH": str(instance)})
    try:
        assert app.config["DATABASE_URL"] == f"sqlite:///{instance / 'coordinator.db'}"
        assert app.config["CELERY_BROKER_URL"].startswith("memory://")
        key = app.config["SECRET_KEY"]
        assert len(key) > 40 and (instance / "secret_key").stat().st_mode & 0o077 == 0
    finally:
        db.engine(app).dispose()
    again = create_app({"INSTANCE_PATH": str(instance)})
    assert again.config["SECRET_KEY"] == key
    db.engine(again).dispose()


def test_migrations_build_exactly_the_models(database):
    engine = create_engine(database.url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
        assert diff == []
        names = set(inspect(engine).get_table_names())
        assert set(Base.metadata.tables) | {"alembic_version"} == names
    finally:
        engine.dispose()
    assert current_revision(database.url) == head_revision()


def test_migrations_go_down_and_up(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    assert current_revision(url) == head_revision()
    downgrade(url, "base")
    assert current_revision(url) is None
    engine = create_engine(url)
    assert inspect(engine).get_table_names() == ["alembic_version"]
    engine.dispose()
    upgrade(url)
    assert current_revision(url) == head_revision()
