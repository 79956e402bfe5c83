"""Rendered files as text (YAML with a header saying how it was made, JSON, shell) and their writing to disk."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml


@dataclass(frozen=True, slots=True)
class RenderedFile:
    path: PurePosixPath
    """Relative to the output directory."""
    text: str
    executable: bool = False


class RenderWriteError(OSError):
    """The output directory or one of its files cannot be written; the message names the path."""


class _Dumper(yaml.SafeDumper):
    """Block style, keys in insertion order, and no `&id001` anchors when one dict appears twice."""

    def ignore_aliases(self, data: Any) -> bool:
        return True

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        # Lists indented under their key, as Kubernetes and Compose documentation write them.
        super().increase_indent(flow, False)


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    # A multi-line string (a config file inside a ConfigMap) stays readable as a literal block.
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_presenter)


def comment(lines: Iterable[str]) -> str:
    return "".join(f"# {line}".rstrip() + "\n" for line in lines)


def yaml_text(documents: Sequence[Any], header: Sequence[str]) -> str:
    """`documents` as YAML (several are separated by `---`), after `header` as comment lines."""
    body = yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False, width=120, allow_unicode=True,
                         explicit_start=len(documents) > 1)
    return comment(header) + body


def json_text(document: Any) -> str:
    return json.dumps(document, indent=2) + "\n"


def write_files(files: Iterable[RenderedFile], out_dir: Path) -> list[Path]:
    """Writes every file under `out_dir` (created if missing); returns the paths written."""
    written = []
    for file in files:
        target = out_dir.joinpath(*file.path.parts)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(file.text)
            if file.executable:
                target.chmod(0o755)
        except OSError as error:
            raise RenderWriteError(f"cannot write {target}: {error.strerror or error}") from error
        written.append(target)
    return written


def stale_files(files: Iterable[RenderedFile], out_dir: Path) -> list[PurePosixPath]:
    """The rendered files whose copy under `out_dir` is missing or differs."""
    stale = []
    for file in files:
        target = out_dir.joinpath(*file.path.parts)
        if not target.is_file() or target.read_text() != file.text:
            stale.append(file.path)
    return stale
