"""Graphs of blocks: the model, its files, validation and storage (docs/graphs.md).

The blocks themselves live with the agents (agentd.blocks); the daemon knows them by their
catalog (catalog.py), the JSON Schemas the agent program prints."""

from __future__ import annotations

from .model import Graph, GraphError, Link, Node, parse_graph

__all__ = ["Graph", "GraphError", "Link", "Node", "parse_graph"]
