"""autogpt: the command line of the orchgpt mesh (installed as ``orchgpt_cli``).

Modules, smallest first: ``errors`` (exit codes), ``agents`` (types and
aliases), ``grammar`` (the slash-command parser), ``registry`` (meta commands,
``/help``), ``render`` (events as text, colour and JSON), ``runner`` (follow a
task to its end), ``meta`` (the meta commands), ``lexer``/``completion``/
``toolbar``/``repl`` (the prompt-toolkit REPL), ``oneshot`` (``-c`` and piped
commands) and ``__main__`` (arguments).

Start-up time matters (the prompt must appear about as fast as
``import prompt_toolkit, grpc``): nothing here imports the gRPC client or the
generated protobuf modules at import time.
"""

from __future__ import annotations

__version__ = "0.1.0"
