"""``/docs`` without a network: the Swagger UI page points at assets the app serves
itself, and those assets are there."""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI

from alphapanda.api.docs import ASSETS_PATH, install_offline_docs
from tests.support.api import FakeFeed, build_app, client_of

pytestmark = pytest.mark.unit


async def test_the_docs_page_loads_nothing_from_outside_the_app() -> None:
    async with client_of(build_app(FakeFeed())) as http:
        response = await http.get("/docs")
    assert response.status_code == 200
    page = response.text
    assert "cdn.jsdelivr.net" not in page
    external = re.findall(r"""(?:src|href)=["'](https?://[^"']+)""", page)
    assert external == []
    assert f"{ASSETS_PATH}/swagger-ui-bundle.js" in page
    assert "/openapi.json" in page
    assert "<title>Alpha Panda market feed - API docs</title>" in page


async def test_every_asset_the_docs_page_names_is_served() -> None:
    async with client_of(build_app(FakeFeed())) as http:
        page = (await http.get("/docs")).text
        assets = sorted(set(re.findall(rf"{ASSETS_PATH}/[\w.-]+", page)))
        assert len(assets) == 3  # the script, the stylesheet and the icon
        for asset in assets:
            response = await http.get(asset)
            assert response.status_code == 200, asset
            assert len(response.content) > 100, asset


async def test_the_monitor_roles_docs_are_titled_as_the_monitor() -> None:
    async with client_of(build_app(None)) as http:
        page = (await http.get("/docs")).text
    assert "<title>Alpha Panda market feed (monitor) - API docs</title>" in page


async def test_docs_follow_a_moved_openapi_document() -> None:
    app = FastAPI(title="t", docs_url=None, openapi_url="/schema/v1.json")
    install_offline_docs(app)
    async with client_of(app) as http:
        page = (await http.get("/docs")).text
    assert "/schema/v1.json" in page
