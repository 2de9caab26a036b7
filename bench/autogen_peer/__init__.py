"""AutoGen's distributed runtime (GrpcWorkerAgentRuntimeHost + two GrpcWorkerAgentRuntime
workers) doing the same round trips as bench.peer, in its own virtualenv.

``venv.ensure_venv()`` creates ``bench/.venv-autogen`` from ``requirements.txt``
when it is missing; ``rt.py`` runs inside it (stdlib + AutoGen only: the
orchgpt package needs a newer protobuf than AutoGen's).
"""
