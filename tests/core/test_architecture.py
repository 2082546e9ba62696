"""The dependency arrows of ARCHITECTURE.md: caja_core never imports the web framework or a plugin."""

import subprocess
import sys


def test_core_never_imports_litestar_or_plugins():
    code = (
        "import pkgutil, importlib, sys, caja_core\n"
        "for m in pkgutil.walk_packages(caja_core.__path__, 'caja_core.'):\n"
        "    if '.testing' in m.name: continue\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('litestar', 'caja_web', 'caja_getnet', 'caja_klap'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
