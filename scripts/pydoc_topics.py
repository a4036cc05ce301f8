"""Write the real text configs/text-gpt.yaml reads: the Python language reference that ships with Python as
pydoc_data.topics (no download), one .txt file per topic, keeping the 43 topics that share no 50-character
passage with a longer kept one (as shipped, 'specialnames' holds 'attribute-access' whole, and data.leak fails).

    .venv/bin/python scripts/pydoc_topics.py data/pydoc-topics      (what `make data/pydoc-topics` runs)
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.text.corpus import clean_topics, write_folder  # noqa: E402


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "data/pydoc-topics")
    docs = clean_topics()
    write_folder(out, docs)
    print(f"{out}: {len(docs)} topics, {sum(map(len, docs.values()))} characters")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
