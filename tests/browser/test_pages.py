"""The console's pages as the server renders them (no browser): every page renders,
every form control has a label, every script a page imports exists, and nothing refers
to another origin. What each role sees in them is shown in the browser tests."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from gateway.coordinator import create_app
from gateway.coordinator.web import PAGES

STATIC = Path(__file__).parents[2] / "gateway" / "coordinator" / "web" / "static"
URLS = {
    "login": "/console/login",
    "collaborations": "/console/",
    "collaboration": "/console/collaborations/1",
    "task_new": "/console/tasks/new",
    "task": "/console/tasks/1",
    "approvals": "/console/approvals",
    "audit": "/console/audit",
    "admin": "/console/admin",
}


class Controls(HTMLParser):
    """Collects form controls, labels, and every src/href."""

    def __init__(self):
        super().__init__()
        self.controls: list[dict] = []
        self.label_for: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("input", "select", "textarea") and a.get("type") != "hidden":
            self.controls.append(a)
        if tag == "label" and a.get("for"):
            self.label_for.add(a["for"])
        for key in ("src", "href", "action"):
            if a.get(key):
                self.links.append(a[key])


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("console")
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": f"sqlite:///{tmp / 'c.db'}",
            "INSTANCE_PATH": str(tmp),
            "SECRET_KEY": "console-pages-" + "k" * 32,
        }
    )
    return app.test_client()


def test_every_page_is_listed():
    assert set(URLS) == set(PAGES)


@pytest.mark.parametrize("name", sorted(URLS))
def test_page_renders_with_labels_and_only_local_links(client, name):
    r = client.get(URLS[name])
    assert r.status_code == 200
    assert r.mimetype == "text/html"
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    html = r.get_data(as_text=True)
    assert f"<title>{PAGES[name].title} · dsgateway</title>" in html
    parsed = Controls()
    parsed.feed(html)
    unlabelled = [
        c
        for c in parsed.controls
        if not (c.get("id") in parsed.label_for or c.get("aria-label") or c.get("aria-labelledby"))
    ]
    assert unlabelled == [], f"controls without a label on {name}: {unlabelled}"
    assert all(link.startswith(("/", "#")) for link in parsed.links), parsed.links
    assert f"/console/static/js/pages/{PAGES[name].script}.js" in parsed.links
    assert client.get(f"/console/static/js/pages/{PAGES[name].script}.js").status_code == 200


def test_scripts_import_only_local_modules_that_exist():
    scripts = sorted(STATIC.rglob("*.js"))
    assert scripts
    for script in scripts:
        text = script.read_text()
        for target in re.findall(r'^import .* from "([^"]+)";', text, re.M):
            assert target.startswith("."), f"{script.name} imports {target}"
            assert (script.parent / target).resolve().is_file(), f"{script.name}: {target}"


def test_nothing_refers_to_another_origin():
    svg_ns = "http://www.w3.org/2000/svg"
    files = [*STATIC.rglob("*.*"), *(STATIC.parent / "templates").rglob("*.html")]
    for path in files:
        text = path.read_text().replace(svg_ns, "")
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", text), path.name


def test_the_root_leads_to_the_console(client):
    r = client.get("/")
    assert r.status_code == 302 and r.headers["Location"].endswith("/console/")
