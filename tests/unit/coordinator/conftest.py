from tests.unit.coordinator.fixtures import (  # noqa: F401 (fixtures)
    app,
    client,
    database,
    fed,
    postgres_database,
    runner,
    world,
)
