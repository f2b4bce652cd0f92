"""One error type for every user-facing failure.

A `TokenmillError` names *what* was wrong (the file, line, record or field) and *how to
fix it*; the CLI prints it as one line and exits non-zero, without a traceback.
"""

from __future__ import annotations


class TokenmillError(Exception):
    """A failure the user can fix. `where` names the file/record/field, `fix` the remedy."""

    def __init__(self, message: str, *, where: str | None = None, fix: str | None = None):
        self.message = message
        self.where = where
        self.fix = fix
        super().__init__(self.__str__())

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.fix:
            text += f" — {self.fix}"
        return text


class SourceError(TokenmillError):
    """Bad prompt source: malformed file, missing field, empty source, unknown world."""


class LakeError(TokenmillError):
    """The lake cannot be read or written as asked."""


class EngineError(TokenmillError):
    """An engine cannot be built or run (missing model, missing backend, mismatch)."""


def unreadable_file(path: str, err: BaseException, lake: str | None = None) -> LakeError:
    """The error for a lake file a stage could not read: corrupted, truncated, or removed
    after it was listed. Names the file and how to find and fix every such file."""
    lake_opt = f" --lake {lake}" if lake else ""
    if isinstance(err, FileNotFoundError):
        return LakeError("the file disappeared while it was being read (removed by another process?)", where=path,
                         fix="re-run the command; if it keeps happening, check what else writes to or cleans the lake")
    detail = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return LakeError(f"cannot read this lake file ({detail})", where=path,
                     fix=f"run `tokenmill check{lake_opt}` to list unreadable files, then restore or remove them and re-run")
