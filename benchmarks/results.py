"""Write one titled section of benchmarks/RESULTS.md, keeping the others."""
from __future__ import annotations

import datetime
import platform
import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "# Benchmark results\n\nEach section names the command that produced it. Numbers are from one run on the\nmachine named in the section (2 cores, 24 GiB).\n"


def write_section(title: str, command: str, body: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    stamp = datetime.date.today().isoformat()
    section = (f"## {title}\n\nCommand: `{command}`  \nMeasured {stamp} on {platform.machine()} "
               f"({platform.processor() or 'cpu'}), Python {platform.python_version()}.\n\n{body.strip()}\n")
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    RESULTS.write_text(text)
