"""What a sandboxed run may use (the harness and the jail both read it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    wall_s: float = 5.0  # the whole run: every test, every restart of the candidate
    cpu_s: int = 5  # per candidate process
    memory_mb: int = 512  # address space of the candidate
    file_mb: int = 8  # largest file it may write
    disk_mb: int = 16  # its working directory (a tmpfs in the jail)
    open_files: int = 64
    processes: int = 0  # new processes (and threads) the code may start
    reply_kb: int = 1024  # largest value one call may return
    output_kb: int = 64  # what tokenmill reads from the harness
    hook: bool = True  # the audit hook (the second layer); off only to test the jail alone
