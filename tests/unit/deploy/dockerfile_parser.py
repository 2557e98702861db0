"""A small Dockerfile reader for the tests: instructions per stage, ARG defaults substituted,
ENV as a dict, exec-form ENTRYPOINT/CMD, and `.dockerignore` matching. There is no Docker engine
here, so the tests read the Dockerfile the way the builder would."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Instruction:
    keyword: str
    value: str
    line: int


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[Instruction] = field(default_factory=list)
    args: dict[str, str] = field(default_factory=dict)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        """ENV of this stage, in order, with $VAR / ${VAR} expanded from earlier values."""
        env: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for token in shlex.split(instruction.value):
                key, _, value = token.partition("=")
                env[key] = expand(value, {**self.args, **env})
        return env

    def exec_form(self, keyword: str) -> list[str] | None:
        found = self.all(keyword)
        return json.loads(found[-1].value) if found else None


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    @property
    def final(self) -> Stage:
        return self.stages[-1]


def expand(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: values.get(m.group(1), m.group(0)), text)


def _logical_lines(text: str) -> list[tuple[int, str]]:
    lines: list[tuple[int, str]] = []
    buffer, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue  # comment lines inside a continuation are dropped by the builder
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        buffer += stripped
        lines.append((start, buffer))
        buffer = ""
    if buffer:
        lines.append((start, buffer))
    return lines


def parse(path: Path, build_args: dict[str, str] | None = None) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in _logical_lines(path.read_text(encoding="utf-8")):
        keyword, _, value = line.partition(" ")
        keyword, value = keyword.upper(), value.strip()
        if keyword == "FROM":
            parts = value.split()
            base = expand(parts[0], {**global_args, **(build_args or {})})
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(base=base, name=name))
            continue
        if keyword == "ARG":
            key, _, default = value.partition("=")
            default = (build_args or {}).get(key, default.strip('"'))
            if stages:
                stages[-1].args[key] = default
            else:
                global_args[key] = default
        if stages:
            stages[-1].instructions.append(Instruction(keyword, value, number))
    return Dockerfile(global_args, stages)


# ---- .dockerignore ------------------------------------------------------------------------------
def ignore_patterns(path: Path) -> list[str]:
    if not path.is_file():
        return []
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def _match(pattern: str, relative: str) -> bool:
    pattern = pattern.strip("/")
    if pattern.startswith("**/"):
        tail = pattern[3:]
        parts = relative.split("/")
        return any(fnmatch.fnmatchcase("/".join(parts[i:]), tail) or fnmatch.fnmatchcase(parts[i], tail)
                   for i in range(len(parts)))
    return fnmatch.fnmatchcase(relative, pattern)


def is_ignored(relative: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern also excludes everything below it."""
    parts = relative.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        if any(_match(body, candidate) for candidate in candidates):
            ignored = not negate
    return ignored
