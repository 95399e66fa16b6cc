"""`bench list` reads the plug-in sources without importing torch, and says what the registries say."""
from __future__ import annotations

import subprocess
import sys

import pytest

from robustad.bench.catalog import static_entries


@pytest.mark.parametrize("kind", ["methods", "attacks", "datasets"])
def test_the_static_listing_equals_the_registry(kind):
    import robustad.attacks
    import robustad.datasets
    import robustad.methods

    registry = {"methods": robustad.methods.METHODS, "attacks": robustad.attacks.ATTACKS,
                "datasets": robustad.datasets.DATASETS}[kind]
    assert static_entries(kind) == [(e.name, e.description) for e in registry.entries()]


def test_bench_list_and_help_import_no_torch():
    code = ("import sys\nfrom robustad.bench.cli import main\nmain(['list'])\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip().endswith("NO-TORCH")
    assert "worst:A,B,..." in out and "patchcore-adv" in out and "textures" in out
    help_code = ("import sys\nfrom robustad.bench.cli import main\ntry:\n    main(['run', '--help'])\n"
                 "except SystemExit:\n    pass\nprint('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    out = subprocess.run([sys.executable, "-c", help_code], check=True, capture_output=True, text=True).stdout
    assert out.strip().endswith("NO-TORCH") and "--method" in out
