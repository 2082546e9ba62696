"""Print the `bash` blocks of one section of docs/operations.md, verbatim, for a drill to run.

    python doc_blocks.py docs/operations.md SECTION RUN_LOG

SECTION is the number of a heading (``5.1``, ``6``); the blocks of its subsections are not included (each
subsection is run by name). Each block's id (``SECTION#n``) is appended to RUN_LOG, so the test suite can
check that the drills ran every block of the guide.
"""

import re
import sys
from pathlib import Path

HEADING = re.compile(r"^(#{2,4})\s+(\d+(?:\.\d+)*)\.?\s")


def blocks(markdown: str) -> list[tuple[str, int, str, list[str]]]:
    """(section, index within the section, language, lines) of every fenced block."""
    out: list[tuple[str, int, str, list[str]]] = []
    section = "0"
    counts: dict[str, int] = {}
    lang: str | None = None
    lines: list[str] = []
    for line in markdown.splitlines():
        stripped = line.strip()
        if lang is None:
            match = HEADING.match(line)
            if match:
                section = match.group(2)
                continue
            if stripped.startswith("```"):
                lang, lines = stripped[3:].strip() or "text", []
        elif stripped.startswith("```"):
            counts[section] = counts.get(section, 0) + 1
            out.append((section, counts[section], lang, lines))
            lang = None
        else:
            lines.append(line)
    if lang is not None:
        raise SystemExit("bloque de código sin cerrar")
    return out


def main() -> None:
    guide, section, run_log = sys.argv[1:4]
    found = [b for b in blocks(Path(guide).read_text()) if b[0] == section and b[2] == "bash"]
    if not found:
        raise SystemExit(f"docs/operations.md no tiene bloques bash en la sección {section}")
    with open(run_log, "a") as log:
        for sec, index, _, _ in found:
            log.write(f"{sec}#{index}\n")
    script = []
    for sec, index, _, lines in found:
        indent = min((len(line) - len(line.lstrip()) for line in lines if line.strip()), default=0)
        script.append(f"echo '   [{sec}#{index}]' >&2")
        script.extend(line[indent:] for line in lines)
    print("\n".join(script))


if __name__ == "__main__":
    main()
