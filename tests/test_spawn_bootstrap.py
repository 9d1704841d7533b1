"""The test-only start-up hook in tests/spawn_bootstrap (see its docstring)."""

from __future__ import annotations

import os
import sys

from tests.conftest import SPAWN_BOOTSTRAP, run_cmd, stock_spawn_env

PROBE = ("import multiprocessing.spawn as s, sys; "
         "print(s._fixup_main_from_path.__module__, getattr(sys, 'shadowed_site_loaded', False))")


def test_subprocesses_get_the_hook_and_stock_spawn_env_removes_it():
    assert str(SPAWN_BOOTSTRAP) in os.environ["PYTHONPATH"].split(os.pathsep)
    assert run_cmd([sys.executable, "-c", PROBE]).stdout.split() == ["sitecustomize", "False"]
    assert run_cmd([sys.executable, "-c", PROBE], stock_spawn_env()).stdout.split() == [
        "multiprocessing.spawn", "False"]


def test_a_shadowed_sitecustomize_still_loads(tmp_path):
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.shadowed_site_loaded = True\n")
    path = os.pathsep.join((str(SPAWN_BOOTSTRAP), str(tmp_path)))
    assert run_cmd([sys.executable, "-c", PROBE], {"PYTHONPATH": path}).stdout.split() == ["sitecustomize", "True"]


def test_only_nnunet_console_scripts_are_skipped(tmp_path):
    """A spawned worker re-runs its parent's main script (its ``__main__`` then has the script's
    ``__file__``) unless the script is named ``nnUNetv2_*``."""
    (tmp_path / "probe_lib.py").write_text(
        "def main_file():\n    import sys\n    return getattr(sys.modules['__main__'], '__file__', None)\n")
    source = ("import multiprocessing as mp\n"
              "from probe_lib import main_file\n"
              "if __name__ == '__main__':\n"
              "    with mp.get_context('spawn').Pool(1) as pool:\n"
              "        print(pool.apply(main_file))\n")
    hooked = {"PYTHONPATH": os.pathsep.join((str(SPAWN_BOOTSTRAP), str(tmp_path)))}
    stock = {"PYTHONPATH": str(tmp_path)}
    for name, skipped in (("nnUNetv2_probe", True), ("other_script.py", False)):
        script = tmp_path / name
        script.write_text(source)
        expected = "None" if skipped else str(script)
        assert run_cmd([sys.executable, str(script)], hooked).stdout.strip() == expected, name
        assert run_cmd([sys.executable, str(script)], stock).stdout.strip() == str(script), name
