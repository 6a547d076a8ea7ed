"""The generated references (gateway/docs_reference.py): the committed files are what the
code makes now, every configuration key says what it is, and the REST API reference
holds every operation of the OpenAPI document with its request fields."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway import docs_reference as ref

ROOT = Path(__file__).resolve().parents[2]
FIX = "run `make docs` (or `.venv/bin/python -m gateway.docs_reference all`) and commit"


@pytest.fixture(scope="module")
def spec():
    return ref.openapi_document()


def test_the_configuration_reference_is_current():
    committed = ref.CONFIG_REFERENCE.read_text(encoding="utf-8")
    assert committed == ref.config_reference(), (
        f"docs/reference/configuration.md differs from the schemas: {FIX}"
    )


def test_the_rest_api_reference_is_current(spec):
    committed = ref.API_REFERENCE.read_text(encoding="utf-8")
    assert committed == ref.rest_api_reference(spec), (
        f"docs/reference/rest-api.md differs from /api/openapi.json: {FIX}"
    )


def test_every_configuration_key_is_described():
    from gateway.agent.config import _AgentSchema
    from gateway.coordinator.config import DEFAULTS, DESCRIPTIONS, OTHER_SETTINGS
    from gateway.node.config import _NodeSchema

    for schema in (_NodeSchema, _AgentSchema):
        assert ref.undocumented(schema) == [], (
            f"add metadata={{'description': ...}} to these keys of {schema.__name__}"
        )
    known = set(DEFAULTS) | set(OTHER_SETTINGS)
    assert known - set(DESCRIPTIONS) == set(), "describe them in gateway/coordinator/config.py"
    # Every setting the coordinator's code reads is in the reference.
    read = set()
    pattern = re.compile(r"""(?:config|cfg|settings)(?:\.get\(|\[)\s*["']([A-Z][A-Z0-9_]+)["']""")
    for path in (ROOT / "gateway" / "coordinator").rglob("*.py"):
        read |= set(pattern.findall(path.read_text(encoding="utf-8")))
    assert read - known == set(), (
        "settings read in gateway/coordinator/ but missing from DEFAULTS or OTHER_SETTINGS "
        "(gateway/coordinator/config.py)"
    )


def test_the_rest_api_reference_has_every_operation_and_its_fields(spec):
    text = ref.rest_api_reference(spec)
    for path, item in spec["paths"].items():
        for method in item:
            assert f"\n### {method.upper()} {path}\n" in text, (method, path)
    create_user = text.split("\n### POST /api/users\n", 1)[1].split("\n### ", 1)[0]
    assert "| `username` | string | yes |" in create_user
    assert "| `password` | string | yes | length 8..1024 |" in create_user
    assert "admins of her organisation" in create_user
    assert "Answers: 201 [UserOut](#userout), 400, 401, 403, 404, 409" in create_user
    node_me = text.split("\n### GET /api/node/me\n", 1)[1].split("\n### ", 1)[0]
    assert "Caller: node (X-Api-Key)" in node_me
    assert "\n### UserOut\n" in text and "| `last_login` | string (date-time) or null |" in text


def test_check_fails_on_a_stale_file_and_names_the_command(tmp_path):
    out = tmp_path / "configuration.md"
    out.write_text("old\n", encoding="utf-8")
    r = CliRunner().invoke(ref.docs, ["config-reference", "--check", "--output", str(out)])
    assert r.exit_code == 1 and "make docs" in r.output
    r = CliRunner().invoke(ref.docs, ["config-reference", "--output", str(out)])
    assert r.exit_code == 0 and out.read_text(encoding="utf-8") == ref.config_reference()
    r = CliRunner().invoke(ref.docs, ["config-reference", "--check", "--output", str(out)])
    assert r.exit_code == 0, r.output
