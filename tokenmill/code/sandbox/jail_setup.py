"""The jail's first stage: inside fresh mount, PID, network, IPC and UTS namespaces, as
root there, build a root filesystem of read-only system files and an empty tmpfs working
directory, pivot into it; then fork the candidate, which sets the kernel limits, drops
every privilege and execs the candidate's interpreter, while this process waits as the
namespace's init. Runs as `python -I -S -c <this source> <config json>` under
`unshare` (see jail.py); trusted code, imports only the standard library.

The new root (a small tmpfs) holds:
  /usr, /lib, /lib64, /bin   read-only binds of the host's (or symlinks, as the host has them)
  <python prefix>            read-only bind of the interpreter's installation, at its own path
  /etc/ld.so.cache, /etc/localtime   read-only binds (the dynamic loader needs the first)
  /dev/null, zero, random, urandom   binds of the host's devices
  /sandbox                   the working directory: a tmpfs of `disk_mb`, the only writable place
and nothing else: no /proc, /sys, /home, /root, /tmp, no lake, no sockets of the host.
"""

import ctypes
import json
import os
import resource
import sys

cfg = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
MNT_DETACH = 2
PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 38, 24, 47, 4
SYS_PIVOT_ROOT = 155  # x86_64; aarch64 has 41
if os.uname().machine in ("aarch64", "arm64"):
    SYS_PIVOT_ROOT = 41


def fail(msg):
    sys.stderr.write(f"sandbox: {msg}\n")
    sys.exit(70)


def call(ret, what):
    if ret != 0:
        fail(f"{what}: {os.strerror(ctypes.get_errno())}")


def mount(src, dst, fstype, flags, data=None):
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    call(libc.mount(enc(src), enc(dst), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {src or ''} on {dst}")


def locked_flags(path):
    """The mount flags a bind of `path` must keep (in a user namespace they are locked)."""
    f = os.statvfs(path).f_flag
    out = 0
    for st, ms in ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
                   (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME), (os.ST_RELATIME, MS_RELATIME)):
        if f & st:
            out |= ms
    return out


def bind(src, dst, writable=False, flags=MS_NOSUID):
    if os.path.isdir(src):
        os.makedirs(dst, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        open(dst, "a").close()
    mount(src, dst, None, MS_BIND)
    mount(None, dst, None, MS_REMOUNT | MS_BIND | flags | locked_flags(src) | (0 if writable else MS_RDONLY))


root = cfg["root"]
mount(None, "/", None, MS_REC | MS_PRIVATE)
mount("tokenmill-jail", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=0755")
for path in cfg["system"]:  # /usr, /lib, …: a symlink stays a symlink
    if os.path.islink(path):
        os.symlink(os.readlink(path), root + path)
    elif os.path.exists(path):
        bind(path, root + path)
for path in cfg["prefixes"]:
    if not os.path.exists(root + path) or not os.path.ismount(root + path):
        bind(path, root + path)
for path in cfg["files"]:
    if os.path.exists(path):
        bind(path, root + path)
for path in ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom"):
    bind(path, root + path, writable=True, flags=MS_NOSUID | MS_NOEXEC)
work = root + "/sandbox"
os.makedirs(work)
mount("tokenmill-sandbox", work, "tmpfs", MS_NOSUID | MS_NODEV,
      f"size={cfg['disk_mb']}m,nr_inodes=1024,mode=0700,uid={cfg['tmpfs_uid']},gid={cfg['tmpfs_uid']}")

os.chdir(root)
call(libc.syscall(SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
call(libc.umount2(b".", MNT_DETACH), "detaching the old root")
os.chdir("/")
mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
os.chdir("/sandbox")

def become_candidate():
    """In the child: limits, no privileges, then the candidate's interpreter."""
    mb = 1 << 20
    lim = cfg["limits"]
    resource.setrlimit(resource.RLIMIT_CPU, (lim["cpu_s"], lim["cpu_s"] + 1))
    resource.setrlimit(resource.RLIMIT_AS, (lim["memory_mb"] * mb,) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (lim["file_mb"] * mb,) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lim["open_files"],) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (cfg["nproc"],) * 2)
    uid = cfg["uid"]
    if uid is not None:  # real root: become a uid of this run's own, which owns nothing
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)  # clears every capability
    else:  # root of a user namespace: drop its capabilities for good before exec
        cap = 0
        while libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
            cap += 1
        libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    call(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    os.closerange(3, 1 << 16)
    os.execve(cfg["python"], [cfg["python"], "-I", "-S", "-c", cfg["source"]], cfg["env"])


# This process is the PID namespace's init; the candidate is its child. (An init ignores
# the signals it has no handler for — SIGXCPU of the CPU limit among them — so the
# candidate must not be the init.) When the candidate ends, the init exits with its
# status (128 + signal for a signal), and the kernel kills whatever else is left.
child = os.fork()
if child == 0:
    try:
        become_candidate()
    except BaseException as e:  # noqa: BLE001
        sys.stderr.write(f"sandbox: cannot start the candidate ({type(e).__name__}: {e})\n")
        os._exit(70)
os.closerange(0, 1 << 16)  # the pipes are the candidate's alone
while True:
    pid, status = os.waitpid(-1, 0)
    if pid == child:
        os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
