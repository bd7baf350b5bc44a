"""The operator page: a read-only view of runs, rounds, metrics and the control plane.

The page is a static shell (HTML, one stylesheet, a few ES modules, an icon) shipped in the
package under ``elsa_cloud/static``. It holds no data and needs no token: the operator types the
admin token into it and its scripts call the JSON operator API (``/v1/runs``, ``/v1/nodes``) with
it as a bearer token. Nothing it serves or loads comes from another origin, which its
Content-Security-Policy enforces.
"""

from __future__ import annotations

import re
from importlib.resources import files
from importlib.resources.abc import Traversable

from fastapi import APIRouter
from fastapi.responses import Response

from elsa.errors import NotFoundError

router = APIRouter(tags=["operator page"], include_in_schema=False)

#: the page and its assets come from this origin only; it may call only this origin's API
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

#: media type of each asset extension the page uses
_MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

_ASSET_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}\.(js|css|svg)")
_PAGE = "operator.html"


def _static(name: str) -> Traversable:
    return files("elsa_cloud").joinpath("static", name)


def _headers(cache_control: str) -> dict[str, str]:
    return {
        "content-security-policy": CONTENT_SECURITY_POLICY,
        "cache-control": cache_control,
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        "x-frame-options": "DENY",
    }


@router.get("/operator")
def operator_page() -> Response:
    """The page's HTML shell (no data, no token; never cached)."""
    body = _static(_PAGE).read_bytes()
    return Response(body, media_type="text/html; charset=utf-8", headers=_headers("no-store"))


@router.get("/operator/static/{name}")
def operator_asset(name: str) -> Response:
    """A script, stylesheet or icon of the page; 404 for any other name."""
    match = _ASSET_NAME.fullmatch(name)  # checked first: the name never reaches the file system otherwise
    if match is None or not (asset := _static(name)).is_file():
        raise NotFoundError(f"the operator page has no asset {name!r}")
    media_type = _MEDIA_TYPES[f".{match.group(1)}"]
    return Response(asset.read_bytes(), media_type=media_type, headers=_headers("no-cache"))
