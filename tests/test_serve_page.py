"""The service's page in a real headless browser (Debian's chromium, driven by Playwright), and its MCP tools over
stdio: both against real server processes over the shared fixtures' SciFact indexes."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from serve_process import REPO, ServerProcess
from conftest import require

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def indexes(encoded, bm25_index):
    return {"bm25": bm25_index("scifact"), "splade": encoded("splade-tiny", "scifact")["index"]}


@pytest.fixture(scope="module")
def server(indexes, tmp_path_factory):
    process = ServerProcess([arg for name, path in indexes.items() for arg in ("--index", f"{name}={path}")],
                            log=tmp_path_factory.mktemp("serve") / "page.log")
    yield process
    process.terminate()


def test_page_shows_one_column_per_index_and_explains_a_hit(server, tmp_path):
    sync_api = require("playwright.sync_api", "pip install -e .[dev]")
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (apt-get install -y chromium chromium-driver)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 900})
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            page.wait_for_selector(".column[data-index=splade]")
            page.fill("#query", "vitamin D deficiency and bone fractures")
            page.press("#query", "Enter")
            page.wait_for_selector(".column[data-index=splade] .hit")
            page.wait_for_selector(".column[data-index=bm25] .hit")
            columns = page.eval_on_selector_all(".column", "cs => cs.map(c => c.dataset.index)")
            assert columns == ["bm25", "splade"]
            assert page.locator(".column[data-index=splade] .hit").count() == 10
            assert page.locator(".column[data-index=splade] .chip.expansion").count() > 0
            assert page.locator(".column[data-index=splade] .hit mark").count() > 0
            table = page.locator(".column[data-index=splade] .hit").first.locator("table.explanation")
            assert not table.is_visible()
            page.locator(".column[data-index=splade] .hit").first.locator("details.why summary").click()
            assert table.is_visible()
            rows = table.locator("tr").count() - 1
            assert rows > 0
            contributions = table.locator("tr td:nth-child(4)").all_inner_texts()
            score = float(page.locator(".column[data-index=splade] .hit .score").first.inner_text())
            assert sum(float(c) for c in contributions) == pytest.approx(score, abs=0.005)
            page.screenshot(path=str(tmp_path / "page.png"))
        finally:
            browser.close()


def test_mcp_tools_answer_over_stdio(indexes, tmp_path):
    """An MCP client starts ``serve --mcp-stdio`` and calls both tools."""
    require("mcp", "pip install -e .[dev]")
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    params = StdioServerParameters(command=sys.executable, args=[
        "-m", "laconic_pyserini.serve", "--mcp-stdio", "--index", f"splade={indexes['splade']}"],
        env={**os.environ, "PYTHONPATH": str(REPO), "LACONIC_PROGRESS": "0"}, cwd=str(REPO))

    async def session() -> tuple[dict, dict, list[str]]:
        with open(tmp_path / "mcp.log", "w") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write):
                async with ClientSession(read, write) as client:
                    await client.initialize()
                    tools = [tool.name for tool in (await client.list_tools()).tools]
                    found = await client.call_tool("search", {"index": "splade", "query": "aspirin", "hits": 3})
                    hit = json.loads(found.content[0].text)["candidates"][0]
                    doc = await client.call_tool("document", {"index": "splade", "docid": hit["docid"]})
                    return json.loads(found.content[0].text), json.loads(doc.content[0].text), tools

    found, doc, tools = asyncio.run(asyncio.wait_for(session(), 300))
    assert set(tools) >= {"search", "document"}
    assert [c["rank"] for c in found["candidates"]] == [1, 2, 3]
    assert doc["doc"] == found["candidates"][0]["doc"]


def test_mcp_tools_answer_over_streamable_http(server):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def session() -> dict:
        async with streamable_http_client(server.url + "/mcp/") as (read, write, *_):
            async with ClientSession(read, write) as client:
                await client.initialize()
                found = await client.call_tool("search", {"index": "bm25", "query": "aspirin", "hits": 2})
                return json.loads(found.content[0].text)

    found = asyncio.run(asyncio.wait_for(session(), 120))
    rest = server.get("/v1/bm25/search?query=aspirin&hits=2")[1]
    assert [(c["docid"], c["score"]) for c in found["candidates"]] == \
        [(c["docid"], c["score"]) for c in rest["candidates"]]
