"""Issue 10, finding 7: the sandbox holds as root and without it.

Real namespaces, real uids, real subprocesses. Each test says what it needs and is
skipped (with the reason) where the machine cannot give it.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentd.sandbox import Isolation, Limits, Sandbox, detect_isolation
from tests.support.mesh import await_for

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[1]
CA_KEY = "-----BEGIN PRIVATE KEY-----\nMESH-CA-KEY\n-----END PRIVATE KEY-----\n"
IPC_CREAT = 0o1000
IPC_RMID = 0


@pytest.fixture
async def iso() -> Isolation:
    return await detect_isolation()


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory where a daemon's files would live: not under /tmp, /var/tmp or /run
    (the sandbox has its own of those, so anything there would be hidden for free)."""
    parent = Path("/var/lib") if os.access("/var/lib", os.W_OK) else Path.home()
    d = Path(tempfile.mkdtemp(prefix="orchgpt-sbx-test-", dir=parent))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _needs_namespaces(iso: Isolation) -> None:
    if iso.mode == "none":
        pytest.skip(f"no namespaces here: {iso.reason}")


def _shm_exists(key: int) -> int:
    """The id of the host's SysV segment with this key, or -1."""
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.shmget(ctypes.c_int(key), ctypes.c_size_t(0), ctypes.c_int(0))


def _shm_remove(key: int) -> None:
    shmid = _shm_exists(key)
    if shmid >= 0:
        ctypes.CDLL(None).shmctl(shmid, IPC_RMID, None)


def _layout(base: Path) -> dict[str, Path]:
    """A daemon's certs dir (with the mesh CA key) and data dir, and a workspace root
    with two task workspaces."""
    certs = base / "certs"
    certs.mkdir(mode=0o700)
    key = certs / "ca-key.pem"
    key.write_text(CA_KEY)
    key.chmod(0o600)
    data = base / "data"
    data.mkdir(mode=0o700)
    (data / "orchgpt.db").write_text("store")
    root = base / "workspaces"
    root.mkdir(mode=0o711)
    ws, other = root / "task1", root / "task2"
    ws.mkdir(mode=0o700)
    other.mkdir(mode=0o700)
    (other / "app.py").write_text("SECRET_OF_TASK2 = 1\n")
    return {"certs": certs, "key": key, "data": data, "root": root, "ws": ws, "other": other}


PROBE = textwrap.dedent("""
    import json, os, sys
    paths = json.loads(sys.argv[1])
    out = {name: os.path.exists(p) for name, p in paths.items()}
    try:
        out["key_text"] = open(paths["key"]).read()
    except OSError as e:
        out["key_text"] = type(e).__name__
    try:
        out["other_text"] = open(paths["other"] + "/app.py").read()
    except OSError as e:
        out["other_text"] = type(e).__name__
    import ctypes
    out["nested_userns"] = ctypes.CDLL(None).unshare(0x10000000) == 0  # CLONE_NEWUSER
    print(json.dumps(out))
""")


def _probe_paths(lay: dict[str, Path]) -> dict[str, str]:
    return {k: str(lay[k]) for k in ("certs", "key", "data", "root", "other", "ws")}


def _assert_invisible(seen: dict[str, object]) -> None:
    assert seen["ws"] is True, seen  # its own workspace is there
    for name in ("certs", "key", "data", "other"):
        assert seen[name] is False, f"{name} is visible from the sandbox: {seen}"
    assert "MESH-CA-KEY" not in str(seen["key_text"]) and "SECRET_OF_TASK2" not in str(seen["other_text"])


async def test_ipc_and_run_are_private(iso: Isolation, tmp_path: Path) -> None:
    """Finding 7: generated code left a 64 MB SysV segment (mode 0666) and files in
    /run/lock on the host. Now both die with the sandbox (IPC namespace, private /run),
    and SysV memory, which RLIMIT_AS does not count, is capped like the private /tmp."""
    _needs_namespaces(iso)
    key = random.randint(0x10000000, 0x7FFFFFFF)
    lock = f"/run/lock/orchgpt-sbx-{uuid.uuid4().hex}"
    code = textwrap.dedent(f"""
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        shmid = libc.shmget(ctypes.c_int({key}), ctypes.c_size_t(64 << 20), ctypes.c_int({IPC_CREAT | 0o666}))
        print("shm", shmid, ctypes.get_errno())
        big = libc.shmget(ctypes.c_int({key} + 1), ctypes.c_size_t(1 << 30), ctypes.c_int({IPC_CREAT | 0o600}))
        print("big", big)
        open({lock!r}, "w").write("left behind")
        print("lock written")
    """)
    ws = tmp_path / "ws"
    ws.mkdir()
    try:
        r = await Sandbox(ws, Limits(timeout_s=20)).run([sys.executable, "-c", code])
        assert r.exit_code == 0, r.stdout + r.stderr
        shm_line = r.stdout.splitlines()[0].split()
        assert int(shm_line[1]) >= 0, f"shmget failed inside: {r.stdout}"  # it worked inside
        assert "lock written" in r.stdout
        assert "big -1" in r.stdout, "1 GB of SysV memory (outside RLIMIT_AS) was granted"
        assert _shm_exists(key) < 0, "the SysV segment outlived the sandbox on the host"
        assert not os.path.exists(lock), "a file in /run/lock outlived the sandbox on the host"
    finally:
        _shm_remove(key)
        _shm_remove(key + 1)
        if os.path.exists(lock):
            os.unlink(lock)


async def test_certs_data_and_other_workspaces_are_not_visible(
    iso: Isolation, base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As root: not only unreadable, absent (os.path.exists is False)."""
    _needs_namespaces(iso)
    lay = _layout(base)
    monkeypatch.setenv("ORCHGPT_WORKSPACE_ROOT", str(lay["root"]))
    sb = Sandbox(lay["ws"], Limits(timeout_s=20), hide=[lay["certs"], lay["data"]])
    r = await sb.run([sys.executable, "-c", PROBE, json.dumps(_probe_paths(lay))])
    assert r.exit_code == 0, r.stdout + r.stderr
    _assert_invisible(json.loads(r.stdout))
    # Only the allow list is there at all: no /home, /root's contents, /srv, /work, /var/lib.
    r = await sb.run(f"ls -A /; echo --; ls -A {base}; echo --; ls -A {lay['root']}; echo --; hostname")
    top, above, siblings, host = (part.split() for part in r.stdout.split("--"))
    assert not set(top) & {"home", "srv", "work", "mnt", "opt", "boot", "data", "certs"}, top
    assert above == ["workspaces"] and siblings == ["task1"], (above, siblings)
    assert host == ["sandbox"]  # its own uts namespace


def _colliding_workspaces(root: Path) -> tuple[Path, Path]:
    """Two workspace paths whose old uid (crc32(path) mod 10^6) is the same."""
    seen: dict[int, Path] = {}
    for i in range(200_000):
        p = root / f"t{i}"
        h = zlib.crc32(os.fsencode(str(p))) % 1_000_000
        if h in seen:
            return seen[h], p
        seen[h] = p
    raise AssertionError("no collision found")


async def test_live_sandboxes_never_share_a_uid(iso: Isolation, tmp_path: Path) -> None:
    """Finding 7: the uid was crc32(workspace) mod 10^6, so chosen task ids collide and
    one task reads another's files. Two live sandboxes on such a pair get two uids."""
    if os.geteuid() != 0 or iso.mode != "root-ns":
        pytest.skip("uids are allocated only when agentd runs as root with namespaces")
    a, b = _colliding_workspaces(tmp_path / "workspaces")
    for ws in (a, b):
        ws.mkdir(parents=True)
    # Each records its uid, then waits until the test lets it go: both are live at once.
    script = "id -u > uid.txt; i=0; while [ ! -e go ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done"
    runs = [asyncio.create_task(Sandbox(ws, Limits(timeout_s=40)).run(script)) for ws in (a, b)]
    try:
        await await_for(
            lambda: all((ws / "uid.txt").is_file() and (ws / "uid.txt").read_text().strip() for ws in (a, b)),
            timeout=20,
            what="both sandboxes running",
        )
        uids = [int((ws / "uid.txt").read_text()) for ws in (a, b)]
    finally:
        for ws in (a, b):
            (ws / "go").touch()
        results = await asyncio.gather(*runs)
    assert all(r.exit_code == 0 for r in results), [r.stderr for r in results]
    assert uids[0] != uids[1], f"two live sandboxes share uid {uids[0]}"
    assert [r.uid for r in results] == uids
    # Released at the end: the workspaces are the agent's again, nothing runs as those uids.
    for ws in (a, b):
        assert ws.stat().st_uid == os.geteuid()


def test_uid_leases_across_processes(tmp_path: Path) -> None:
    """The allocator's table is shared by the agents of a host (flock on a 0700 dir): a
    lease held by another live process is never handed out, and a dead one is taken back."""
    from agentd.errors import ToolError
    from agentd.sandbox import UidAllocator

    state = tmp_path / "state"
    first = 1_600_000_000
    held_ws = tmp_path / "held"
    held_ws.mkdir()
    chown = "os.chown(sys.argv[1], lease.uid, lease.uid); " if os.geteuid() == 0 else ""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys; from agentd.sandbox import UidAllocator; "
            f"a = UidAllocator({str(state)!r}, {first}, 2); lease = a.acquire(sys.argv[1]); "
            f"{chown}print(lease.uid, flush=True); sys.stdin.read()",
            str(held_ws),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        held = int(holder.stdout.readline())  # type: ignore[union-attr]
        assert held in (first, first + 1)
        assert oct(state.stat().st_mode & 0o777) == "0o700"
        alloc = UidAllocator(state, first, 2)
        mine = alloc.acquire("/w/mine")
        assert mine.uid != held
        again = alloc.acquire("/w/mine")  # the same workspace shares its live lease
        assert again.uid == mine.uid
        with pytest.raises(ToolError, match="no sandbox uid is free"):
            alloc.acquire("/w/third")
    finally:
        holder.stdin.close()  # type: ignore[union-attr]
        holder.wait(10)
    # The holder died without releasing (an agent killed mid-run): its uid is free again,
    # and the workspace it held is given back to the agent's user.
    third = alloc.acquire("/w/third")
    assert third.uid == held
    assert alloc.holders() == {mine.uid: "/w/mine", held: "/w/third"}
    assert held_ws.stat().st_uid == os.geteuid()


DRIVER = textwrap.dedent("""
    import asyncio, json, sys
    from pathlib import Path
    from agentd.sandbox import Limits, Sandbox, detect_isolation

    async def main():
        ws, probe, paths = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
        iso = await detect_isolation()
        if iso.mode == "none":
            print(json.dumps({"mode": iso.mode, "reason": iso.reason}))
            return
        r = await Sandbox(ws, Limits(timeout_s=20)).run([sys.executable, "-c", probe, paths])
        print(json.dumps({"mode": iso.mode, "reason": iso.reason, "exit": r.exit_code,
                          "stdout": r.stdout, "stderr": r.stderr, "notes": r.notes}))

    asyncio.run(main())
""")


def test_non_root_agent_cannot_see_certs_or_other_workspaces(base: Path) -> None:
    """Finding 7, as the container image runs (uid 10001): generated code read the mesh
    CA key in the certs dir and another task's workspace. Now they do not exist for it."""
    python = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv(1) to become uid 10001")
    lay = _layout(base)
    home = base / "home"  # as in the image: /home/orchgpt, with /certs and /data elsewhere
    home.mkdir()
    for p in [base, *base.rglob("*")]:
        os.chown(p, 10001, 10001)
    as_10001 = ["setpriv", "--reuid", "10001", "--regid", "10001", "--clear-groups"]
    # The agent itself (uid 10001) reads the key: only the sandbox is kept from it.
    check = subprocess.run([*as_10001, "cat", str(lay["key"])], capture_output=True, text=True, timeout=10)
    assert "MESH-CA-KEY" in check.stdout
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(REPO),
        "HOME": str(home),
        "ORCHGPT_WORKSPACE_ROOT": str(lay["root"]),
    }
    argv = [*as_10001, python, "-c", DRIVER, str(lay["ws"]), PROBE, json.dumps(_probe_paths(lay))]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=40, env=env, cwd="/")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    if out["mode"] == "none":
        pytest.skip(f"no user namespaces for uid 10001 here: {out['reason']}")
    assert out["mode"] == "user-ns", out
    assert out["exit"] == 0, out
    seen = json.loads(out["stdout"])
    _assert_invisible(seen)
    assert seen["nested_userns"] is False  # no user namespace inside the sandbox's own


async def test_no_namespaces_refused_unless_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without isolation generated code is refused, with an error naming the opt-in;
    allowed, it runs and the result says which isolation it had."""
    ws = tmp_path / "ws"
    ws.mkdir()
    monkeypatch.setenv("ORCHGPT_SANDBOX_ISOLATION", "none")  # as if the kernel had no namespaces
    monkeypatch.delenv("ORCHGPT_ALLOW_WEAK_SANDBOX", raising=False)
    await detect_isolation(refresh=True)
    with pytest.raises(Exception, match="--allow-weak-sandbox") as err:
        await Sandbox(ws, Limits(timeout_s=10)).run("echo ran > ran.txt")
    assert "ORCHGPT_ALLOW_WEAK_SANDBOX=1" in str(err.value)
    from agentd.sandbox import SandboxPolicy, WeakSandboxRefused

    assert isinstance(err.value, WeakSandboxRefused)
    assert not (ws / "ran.txt").exists()
    # Through the model's run_command tool it is not an error to retry: the task fails
    # (WeakSandboxRefused is a TaskFailed, which agentd reports as the task's error).
    from agentd.errors import TaskFailed
    from agentd.tools import Toolbox, ToolEnv
    from agentd.workspace import Workspace

    box = Toolbox(ToolEnv(Workspace(ws), Sandbox(ws, Limits(timeout_s=10))), ["run_command"])
    with pytest.raises(TaskFailed, match="--allow-weak-sandbox"):
        await box.call("run_command", {"command": "echo ran > ran.txt"})
    assert not (ws / "ran.txt").exists()

    monkeypatch.setenv("ORCHGPT_ALLOW_WEAK_SANDBOX", "1")
    policy = SandboxPolicy.from_env()
    assert policy.allow_weak and not policy.namespaces
    r = await Sandbox(ws, Limits(timeout_s=10), policy=policy).run("echo ran")
    assert r.ok and r.stdout == "ran\n"
    assert r.isolation == "none" and not r.network_isolated and not r.files_hidden
    assert any("weak sandbox" in n for n in r.notes) and any("no IPC namespace" in n for n in r.notes)

    monkeypatch.setenv("ORCHGPT_ALLOW_WEAK_SANDBOX", "maybe")
    with pytest.raises(ValueError, match="ORCHGPT_ALLOW_WEAK_SANDBOX"):
        SandboxPolicy.from_env()


def test_self_check_reports_the_isolation(base: Path) -> None:
    """`python -m agentd.sandbox`, the check the Dockerfile documents."""
    lay = _layout(base)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "ORCHGPT_CERTS": str(lay["certs"]),
        "ORCHGPT_DATA_DIR": str(lay["data"]),
    }
    env.pop("ORCHGPT_SANDBOX_ISOLATION", None)
    proc = subprocess.run(
        [sys.executable, "-m", "agentd.sandbox"], capture_output=True, text=True, timeout=40, env=env, cwd="/"
    )
    out = json.loads(proc.stdout)
    if out["isolation"] == "none":
        assert proc.returncode == 3 and out["generated_code"] == "refused"
        pytest.skip(f"no namespaces here: {out['reason']}")
    assert proc.returncode == 0, out
    assert out["inside"]["hostname"] == "sandbox"
    assert out["inside"]["visible"] == {str(lay["certs"]): False, str(lay["data"]): False}


async def test_agentd_policy_from_flag_and_certs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """agentd's start-up: --allow-weak-sandbox opts in; its certificates, the daemon's
    certs and data dirs and the workspace root are protected."""
    from agentd.__main__ import _parser
    from agentd.sandbox_setup import sandbox_policy
    from orchgpt.certs import CertPaths

    monkeypatch.delenv("ORCHGPT_ALLOW_WEAK_SANDBOX", raising=False)
    monkeypatch.setenv("ORCHGPT_CERTS", str(tmp_path / "daemon-certs"))
    monkeypatch.setenv("ORCHGPT_DATA_DIR", str(tmp_path / "data"))
    d = tmp_path / "agent-certs"
    certs = CertPaths(d / "ca.pem", d / "backend.pem", d / "backend-key.pem")
    args = _parser().parse_args(["--type", "backend", "--allow-weak-sandbox"])
    policy = await sandbox_policy(certs, tmp_path / "ws", args.allow_weak_sandbox)
    assert policy.allow_weak
    assert {str(d), str(d / "backend-key.pem"), str(tmp_path / "daemon-certs"), str(tmp_path / "data")} <= set(
        policy.protected
    )
    assert policy.workspace_root == str(tmp_path / "ws")
    args = _parser().parse_args(["--type", "backend"])
    assert not (await sandbox_policy(certs, tmp_path / "ws", args.allow_weak_sandbox)).allow_weak


def test_launch_spec_is_typed_json() -> None:
    from agentd.sandbox import LaunchSpec

    spec = LaunchSpec(
        argv=["true"],
        env={"PATH": "/bin"},
        cwd="/w",
        uid=1_500_000_001,
        rlimits={"CPU": 2},
        new_root=True,
        read_only=["/usr"],
        hide=["/certs"],
    )
    assert LaunchSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ValueError, match="unknown fields"):
        LaunchSpec.from_json('{"argv": ["true"], "env": {}, "cwd": "/", "mounts": true}')
