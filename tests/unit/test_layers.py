"""The package's layers: imports run one way only (core <- http <- net <- cli <- entry points).

Walks every module of ``p2p`` with ``ast`` (nothing is imported), so a wrong-way import
fails here before it tangles anything. The core is pure as well: no sockets, no servers,
no processes.
"""

import ast
import os
import unittest

from tests.support import ROOT

LAYERS = ("core", "http", "net", "cli")  # lowest first: each may import only those before it
IO_MODULES = {"socket", "socketserver", "selectors", "select", "subprocess", "http", "urllib.request"}


def imports_of(path):
    """The absolute module names a file imports (relative imports are not used here)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                yield node.lineno, "." * node.level + (node.module or "")
            elif node.module == "p2p":
                for alias in node.names:
                    yield node.lineno, f"p2p.{alias.name}"
            else:
                yield node.lineno, node.module


def layer_of(module):
    """The layer a ``p2p`` module belongs to, or None for the package root and others."""
    parts = module.split(".")
    if parts[0] == "p2p" and len(parts) > 1 and parts[1] in LAYERS:
        return parts[1]
    return None


def package_modules():
    for layer in LAYERS:
        folder = os.path.join(ROOT, "p2p", layer)
        for name in sorted(os.listdir(folder)):
            if name.endswith(".py"):
                yield layer, os.path.join(folder, name)


class LayerTests(unittest.TestCase):
    def test_every_import_runs_down_the_layers(self):
        wrong = []
        for layer, path in package_modules():
            for line, module in imports_of(path):
                target = layer_of(module)
                if module.startswith("."):
                    wrong.append(f"{path}:{line}: relative import {module}")
                elif target is not None and LAYERS.index(target) > LAYERS.index(layer):
                    wrong.append(f"{path}:{line}: {layer} imports {module} ({target})")
        self.assertEqual(wrong, [])

    def test_the_core_does_no_io(self):
        wrong = [f"{path}:{line}: {module}"
                 for layer, path in package_modules() if layer == "core"
                 for line, module in imports_of(path)
                 if module.split(".")[0] in IO_MODULES or module in IO_MODULES]
        self.assertEqual(wrong, [])

    def test_the_entry_points_are_thin_and_use_only_the_command_line(self):
        for script in ("peer.py", "load_balancer.py"):
            path = os.path.join(ROOT, script)
            ours = [m for _, m in imports_of(path) if m.startswith("p2p")]
            self.assertEqual([layer_of(m) for m in ours], ["cli"], script)
            with open(path, encoding="utf-8") as f:
                self.assertLess(len(f.read().splitlines()), 20, script)

    def test_the_walk_sees_a_wrong_way_import(self):
        self.assertEqual(layer_of("p2p.net.download"), "net")
        self.assertIsNone(layer_of("p2p"))
        self.assertLess(LAYERS.index("core"), LAYERS.index(layer_of("p2p.cli.peer")))


if __name__ == "__main__":
    unittest.main()
