"""The service's tools for agents (MCP): ``search`` and ``document``, over stdio or streamable HTTP (``/mcp``).

Both call the same :class:`SearchService` as the REST routes, so an agent's query joins the same encoding
batches, and is admitted, limited and explained the same way.
"""

from __future__ import annotations

import contextlib
from typing import Any

from mcp.server.mcpserver import MCPServer

from .service import SearchService


def build_mcp(service: SearchService, *, start_service: bool = False) -> MCPServer:
    """An MCP server with the ``search`` and ``document`` tools. ``start_service``: its lifespan starts and stops
    the service (stdio, where nothing else runs it); over HTTP the app's lifespan does."""

    @contextlib.asynccontextmanager
    async def lifespan(server: MCPServer):
        await service.start()
        try:
            yield {}
        finally:
            await service.stop()

    names = ", ".join(service.indexes)
    server = MCPServer("laconic-pyserini", instructions=f"Search the indexes {names}; read a hit with document.",
                       lifespan=lifespan if start_service else None)

    @server.tool(description=f"Search one index ({names}) with a text query; returns the top hits with their "
                             "scores, titles and texts, and with explain=true the query terms each hit matched.")
    async def search(index: str, query: str, hits: int = 10, explain: bool = False) -> dict[str, Any]:
        with service.admitted():
            body = await service.within_deadline(service.search(index, query, hits, explain=explain))
        return {"index": index, "query": query, **body}

    @server.tool(description=f"Read one document of an index ({names}) by its id.")
    async def document(index: str, docid: str) -> dict[str, Any]:
        with service.admitted():
            return {"index": index, "docid": docid, "doc": await service.within_deadline(service.document(index,
                                                                                                         docid))}

    return server


