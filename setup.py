"""Package discovery (the rest of the metadata is in pyproject.toml).

The folders map to import packages as: orchgpt/ -> orchgpt, agentd/ -> agentd,
cli/ -> orchgpt_cli (a name no other distribution's top-level `cli` can clash with).
"""

from setuptools import find_packages, setup

packages = find_packages(include=["orchgpt", "orchgpt.*", "agentd", "agentd.*"])
packages += ["orchgpt_cli", *(f"orchgpt_cli.{p}" for p in find_packages("cli"))]

setup(packages=packages, package_dir={"orchgpt_cli": "cli"})
