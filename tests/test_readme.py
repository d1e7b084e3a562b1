"""The README's Python examples run as written and print what they claim."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 2
    ns: dict = {}
    for code in blocks:  # later examples build on earlier ones, as a reader would run them
        exec(compile(code, str(README), "exec"), ns)
    assert ns["split"].stride == (8, 8)
    h, w = ns["frames"].shape[-2:]
    assert ns["field"].shape == (2, h, w) and ns["field"].abs().max() <= 11
    assert ns["per_channel"].shape[1:] == (2, *ns["f"].shape[-2:])
    assert torch.equal(ns["field"], ns["block_match"](ns["gray"][0], ns["gray"][1], 31, 11))


def test_protocol_facts_live_in_the_repository():
    """The README links docs/protocol.md; nothing points users to a file they do not have."""
    root = README.parent
    assert "](docs/protocol.md" in README.read_text() and (root / "docs" / "protocol.md").is_file()
    sources = [README, *root.glob("src/**/*.py"), *root.glob("docs/*.md")]
    assert not [str(p) for p in sources if "PROTOCOL.md" in p.read_text()]
