"""Write README.md's ```python blocks to files, so that mypy --strict can check them.

    python scripts/readme-code.py OUTDIR    # -> OUTDIR/readme_1.py, readme_2.py, ...
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    for i, code in enumerate(blocks, 1):
        (out / f"readme_{i}.py").write_text(code)
        print(out / f"readme_{i}.py")


if __name__ == "__main__":
    main()
