"""Find the files `data.path` names and tell what format each one is in.

`data.path` may be a file, a directory (its files with a supported extension, in sorted
order) or a glob, either local or a URI that `pyarrow.fs` understands; `resolve_files`
turns it into `SourceFile`s. `format_of` picks the parser from `data.format` or the
extension, and `check_content` catches bytes that plainly contradict that choice before
a parser turns them into a confusing error. Internal to `raytune_llm.data`; `readers`
is the public entry point.
"""

from __future__ import annotations

import codecs
import fnmatch
import glob
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs

from raytune_llm.config.schema import DataConfig
from raytune_llm.errors import DataError

__all__ = ["SUPPORTED_EXTENSIONS", "SourceFile", "check_content", "format_of", "resolve_files"]

#: File extension -> format used when `data.format` is "auto".
SUPPORTED_EXTENSIONS: Mapping[str, str] = {
    ".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv",
    ".parquet": "parquet", ".txt": "phrasebank",
}

_PARQUET_MAGIC = b"PAR1"


@dataclass(frozen=True)
class SourceFile:
    """One input file: `display` is what users see (messages, `_source`), `path` what we open."""

    display: str
    path: str
    fs: pafs.FileSystem | None = None  # None: a local path, read with plain Python

    def read_bytes(self) -> bytes:
        """The whole file; remote files go through the pyarrow filesystem that found them."""
        if self.fs is None:
            with open(self.path, "rb") as handle:
                return handle.read()
        with self.fs.open_input_stream(self.path) as stream:
            return bytes(stream.read())


# Finding files ------------------------------------------------------------------------------
def _has_glob(path: str) -> bool:
    return any(char in path for char in "*?[")


def _wanted_in_directory(name: str, extensions: Collection[str]) -> bool:
    # Hidden files and Spark/Hadoop markers (_SUCCESS, _metadata) are never data rows.
    extension = os.path.splitext(name)[1].lower()
    return not name.startswith((".", "_")) and extension in extensions


def resolve_files(path: str, extensions: Collection[str] = tuple(SUPPORTED_EXTENSIONS)) -> list[SourceFile]:
    """The files `path` names, sorted; a `DataError` if it names none.

    `extensions` picks the files of a directory; a file named directly, or by a glob, is
    taken whatever its extension.
    """
    if "://" in path:
        files = _resolve_uri(path, extensions)
    else:
        files = _resolve_local(os.path.expanduser(path), extensions)
    if not files and _has_glob(path):
        raise DataError(f"no files match {path!r}; check data.path")
    if not files:
        raise DataError(f"directory {path} has no files ending in {', '.join(extensions)}; check data.path")
    return files


def _resolve_local(path: str, extensions: Collection[str]) -> list[SourceFile]:
    if _has_glob(path):
        matches = sorted(glob.glob(path, recursive=True))
        return [SourceFile(p, p) for p in matches if os.path.isfile(p)]
    if os.path.isdir(path):
        names = sorted(os.listdir(path))
        paths = [os.path.join(path, n) for n in names if _wanted_in_directory(n, extensions)]
        return [SourceFile(p, p) for p in paths if os.path.isfile(p)]
    if os.path.isfile(path):
        return [SourceFile(path, path)]
    raise DataError(f"file not found: {path}; check data.path")


def _resolve_uri(uri: str, extensions: Collection[str]) -> list[SourceFile]:
    """Like `_resolve_local` for s3://, gs://, file:// ...; globs only in the last path part."""
    scheme = uri.split("://", 1)[0]
    try:
        fs, base = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowException, ValueError) as exc:
        raise DataError(f"cannot open {uri}: {exc}; check data.path") from None

    def found(paths: list[str]) -> list[SourceFile]:
        return [SourceFile(f"{scheme}://{p}", p, fs) for p in sorted(paths)]

    if _has_glob(base):
        parent, _, pattern = base.rpartition("/")
        infos = fs.get_file_info(pafs.FileSelector(parent, allow_not_found=True))
        return found([i.path for i in infos if i.is_file and fnmatch.fnmatch(i.base_name, pattern)])
    info = fs.get_file_info(base)
    if info.type == pafs.FileType.NotFound:
        raise DataError(f"file not found: {uri}; check data.path")
    if info.type == pafs.FileType.Directory:
        infos = fs.get_file_info(pafs.FileSelector(base))
        return found([i.path for i in infos if i.is_file and _wanted_in_directory(i.base_name, extensions)])
    return found([base])


# Telling the format -------------------------------------------------------------------------
def format_of(display: str, cfg: DataConfig) -> tuple[str, str]:
    """The format to parse `display` with, and who said so (for error messages)."""
    if cfg.format != "auto":
        return cfg.format, "data.format"
    extension = os.path.splitext(display)[1].lower()
    fmt = SUPPORTED_EXTENSIONS.get(extension)
    if fmt is None:
        raise DataError(
            f"cannot tell the format of {display} from its extension {extension or '(none)'!r}; "
            f"set data.format to one of {', '.join(sorted(set(SUPPORTED_EXTENSIONS.values())))}"
        )
    return fmt, "its extension"


def check_content(data: bytes, fmt: str, display: str, told_by: str, encoding: str) -> None:
    """Catch a file whose bytes plainly do not match its format before parsing it."""
    is_parquet = data[:4] == _PARQUET_MAGIC
    if fmt == "parquet":
        if not (is_parquet and data[-4:] == _PARQUET_MAGIC):
            raise DataError(
                f"file is not what {told_by} says: {display} is not a Parquet file "
                "(no PAR1 magic bytes); set data.format or rename the file"
            )
        return
    # UTF-16/32 text legitimately holds NUL bytes; in any other text they mean binary.
    wide = codecs.lookup(encoding).name.startswith(("utf-16", "utf-32"))
    if is_parquet or (not wide and b"\x00" in data[:4096]):
        kind = "a Parquet file" if is_parquet else "binary data"
        raise DataError(
            f"file is not what {told_by} says: {display} holds {kind}, not {fmt} text; "
            f"rename it or set data.format{'=parquet' if is_parquet else ''}"
        )
