"""Cloud: the operator page is served from the package, with strict headers, local assets only
and no data or token in it."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from importlib.resources import files
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from .conftest import ADMIN_TOKEN, Cloud
from .support import assert_error

pytestmark = pytest.mark.anyio

PAGE = "http://test/operator"
#: the one absolute URL the assets may hold: the SVG namespace, an identifier that is never fetched
SVG_NAMESPACE = "http://www.w3.org/2000/svg"
MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


class _Links(HTMLParser):
    """Every URL-valued attribute of a page, and every element's attributes by id."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.by_id: dict[str, dict[str, str | None]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.urls += [v for k, v in attrs if k in ("src", "href", "action", "formaction") and v is not None]
        if found.get("id"):
            self.by_id[str(found["id"])] = found


def _links(html: str) -> _Links:
    parser = _Links()
    parser.feed(html)
    return parser


async def _assets(client: httpx.AsyncClient, html: str) -> dict[str, httpx.Response]:
    """The page's assets by URL path: those it links, and the ES modules its scripts import."""
    pending = [urljoin(PAGE, url) for url in _links(html).urls]
    seen: dict[str, httpx.Response] = {}
    while pending:
        url = pending.pop()
        path = urlsplit(url).path
        if path in seen:
            continue
        seen[path] = response = await client.get(path)
        if path.endswith(".js"):
            imports = re.findall(r"""^import\b[^;]*?from\s+["']([^"']+)["']""", response.text, re.MULTILINE)
            pending += [urljoin(url, name) for name in imports]
    return seen


def _is_local(url: str) -> bool:
    parts = urlsplit(url)
    return not parts.scheme and not parts.netloc and not url.startswith("//")


async def test_page_is_served_with_strict_headers(cloud: Cloud) -> None:
    response = await cloud.client.get("/operator")  # no token: the shell holds no data
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    directives = [part.partition(" ") for part in response.headers["content-security-policy"].split("; ")]
    policy = {name: value for name, _, value in directives}
    assert policy["default-src"] == "'none'"
    for directive in ("script-src", "style-src", "img-src", "connect-src"):
        assert policy[directive] == "'self'", directive
    assert policy["frame-ancestors"] == "'none'" and policy["form-action"] == "'none'"
    assert "<title>ELSA operator</title>" in response.text


async def test_page_loads_only_local_assets(cloud: Cloud) -> None:
    html = (await cloud.client.get("/operator")).text
    links = _links(html)
    assert links.urls, "the page links its script, stylesheet and icon"
    assert all(_is_local(url) for url in links.urls), links.urls
    assets = await _assets(cloud.client, html)
    # every file shipped with the page is reached from it, and nothing else is
    shipped = {f.name for f in files("elsa_cloud").joinpath("static").iterdir()} - {"operator.html"}
    assert {p.rsplit("/", 1)[1] for p in assets} == shipped
    for path, response in assets.items():
        assert path.startswith("/operator/static/"), path
        assert response.status_code == 200, (path, response.text)
        suffix = path[path.rindex(".") :]
        assert response.headers["content-type"].startswith(MEDIA_TYPES[suffix]), path
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "content-security-policy" in response.headers
        # nothing is fetched from another origin: no absolute URL besides the SVG namespace
        absolute = set(re.findall(r"https?://[^\s\"'`)]+", response.text)) - {SVG_NAMESPACE}
        assert not absolute, (path, absolute)
        assert "@import" not in response.text and "url(" not in response.text, path


async def test_page_holds_no_token_and_only_reads(cloud: Cloud) -> None:
    html = (await cloud.client.get("/operator")).text
    assets = await _assets(cloud.client, html)
    for text in [html, *(r.text for r in assets.values())]:
        assert ADMIN_TOKEN not in text
        assert cloud.settings.join_secret not in text
    # the token field has no name and the form no action: a submission can never put it in a URL
    token_input = _links(html).by_id["token-input"]
    assert token_input["type"] == "password" and "name" not in token_input
    assert "action" not in _links(html).by_id["token-form"]
    scripts = "\n".join(r.text for p, r in assets.items() if p.endswith(".js"))
    assert "fetch(" in scripts and "sessionStorage" in scripts and "localStorage" not in scripts
    # read-only: no request names a method, so every request the page makes is a GET
    assert not re.search(r"\bmethod\s*:", scripts)
    assert not re.search(r"\b(POST|PUT|PATCH|DELETE)\b", scripts)


async def test_page_is_not_part_of_the_api_document(cloud: Cloud) -> None:
    paths = (await cloud.client.get("/openapi.json")).json()["paths"]
    assert not [p for p in paths if p.startswith("/operator")]


@pytest.mark.parametrize(
    "name",
    ["missing.js", "operator.html", "__init__.py", "py.typed", "..%2F__init__.py", "Operator.js", "a.json"],
)
async def test_only_the_pages_assets_are_served(cloud: Cloud, name: str) -> None:
    response = await cloud.client.get(f"/operator/static/{name}")
    assert_error(response, 404, "not_found")
