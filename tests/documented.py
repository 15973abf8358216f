"""The shell commands the operator documents show: every line of a ```bash block in
README.md and deploy/README.md, every command line in a config/*.yaml header comment
(``#   streamlstm ...``), and every inline code span of those files that is a complete
command (a known program and at least one argument, no "..."). ``a && b`` is two
commands; a trailing ``# comment`` is not part of one; ``\\`` joins lines."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "deploy/README.md")
PROGRAMS = {
    "streamlstm", "python", "python3", "python3.11", "pip", "promtool", "amtool", "systemctl",
    "kubectl", "docker", "useradd", "install", "journalctl", "mkdir", "cp", "vi",
}  # fmt: skip


def _split(line: str) -> list[str]:
    line = re.sub(r"\s+#\s.*$", "", line).strip()  # a trailing comment
    return [c.strip() for c in line.split(" && ") if c.strip()]


def _program(cmd: str) -> str:
    return Path(cmd.split()[0]).name


def fenced(text: str) -> list[str]:
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                out.extend(re.sub(r"\s+", " ", c) for c in _split(line))
    return out


def block_after(text: str, heading: str) -> list[str]:
    """The commands of the first ```bash block after ``heading``, in order."""
    m = re.search(r"```bash\n.*?```", text[text.index(heading) :], re.S)
    assert m is not None, f"no bash block after {heading!r}"
    return fenced(m.group(0))


def spans(text: str) -> list[str]:
    prose = re.sub(r"```.*?```", "", text, flags=re.S).replace("\n", " ")
    out = []
    for span in re.findall(r"`([^`]+)`", prose):
        words = span.split()
        if len(words) > 1 and words[0] in PROGRAMS and "..." not in span:
            out.append(re.sub(r"\s+", " ", span))
    return out


def config_comments(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        m = re.match(r"#\s{2,}(\S.*)$", line)
        if m and _program(m.group(1)) in PROGRAMS:
            out.extend(_split(m.group(1)))
    return out


def commands() -> dict[str, list[str]]:
    """command -> the documents that show it."""
    found: dict[str, list[str]] = {}
    for doc in DOCS:
        text = (ROOT / doc).read_text()
        for cmd in fenced(text) + spans(text):
            if doc not in found.setdefault(cmd, []):
                found[cmd].append(doc)
    for path in sorted((ROOT / "config").glob("*.yaml")):
        for cmd in config_comments(path.read_text()):
            found.setdefault(cmd, []).append(f"config/{path.name}")
    return found
