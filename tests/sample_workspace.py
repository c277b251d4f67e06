"""A small but real workspace for context-engine tests: a Python package in a
src layout, a TypeScript module tree, docs, a binary file, ignored files, and
a git repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

FILES: dict[str, str] = {
    ".gitignore": "build/\n*.log\n",
    "pyproject.toml": "[project]\nname = 'shop'\n",
    "README.md": "# Shop\n\nThe checkout flow lives in src/shop/checkout.py.\n",
    "src/shop/__init__.py": "",
    "src/shop/models.py": (
        "class Cart:\n    def total(self):\n        return sum(self.items)\n\n"
        "def make_cart():\n    return Cart()\n"),
    "src/shop/pricing.py": (
        "from shop.models import Cart\n\n"
        "def apply_discount(cart: Cart, pct: float) -> float:\n"
        "    return cart.total() * (1 - pct)\n"),
    "src/shop/checkout.py": (
        "from .pricing import apply_discount\nfrom shop import models\nimport json\n\n"
        "def checkout(cart):\n    cart = models.make_cart()\n"
        "    return json.dumps(apply_discount(cart, 0.1))\n"),
    "web/util.ts": "export function fmt(n: number): string { return n.toFixed(2); }\n",
    "web/index.ts": "import { fmt } from './util';\nexport const show = (n: number) => fmt(n);\n",
    "build/out.txt": "generated\n",
    "debug.log": "noise\n",
}


def make_workspace(root: Path, *, git: bool = True) -> Path:
    for rel, text in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary")
    if git:
        def run(*args: str) -> None:
            subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t",
                            *args], cwd=root, check=True, capture_output=True)
        run("init", "-q", "-b", "main")
        run("add", "-A")
        run("commit", "-q", "-m", "initial")
    return root
