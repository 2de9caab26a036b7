"""Test support: real servers and processes the tests drive the project with.

- `tests.support.scripted_openai`: a scripted OpenAI-compatible HTTP server
  (chat completions with SSE streaming and tool calls, /v1/models, /tokenize);
  see its module doc for use.
- `tests.support.mesh`: certificates, real daemons and agent processes.
"""
