"""Bridges between the mesh and other transports (`orchgpt bridge ...`).

Each bridge is a process of its own and a mesh client with its own client
certificate; it uses only the public MeshClient API.
"""
