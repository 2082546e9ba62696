"""Every way a plugin can be wrong stops start-up with one line that names the plugin and says what to fix."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from caja_core import PluginError, hookimpl
from caja_core.plugins import make_plugin_manager
from caja_core.providers import ProviderRegistry
from caja_core.testing.fake import ScriptableProvider


def registry_error(*plugins: object) -> str:
    with pytest.raises(PluginError) as err:
        ProviderRegistry.from_plugin_manager(make_plugin_manager(*plugins, load_entrypoints=False))
    message = err.value.message
    assert "\n" not in message, message
    return message


def adding(provider: object) -> object:
    class Plugin:
        @hookimpl
        def register_providers(self, add_provider):
            add_provider(provider)

    return Plugin()


def test_a_hook_with_a_wrong_argument_name_says_which_argument_and_what_the_hook_takes():
    class Typo:
        @hookimpl
        def register_providers(self, add_providers):
            pass

    with pytest.raises(PluginError) as err:
        make_plugin_manager(Typo(), load_entrypoints=False)
    assert err.value.message == (
        "El plugin 'Typo' implementa el hook register_providers con argumentos que el hook no tiene: "
        "add_providers (el hook recibe: add_provider)."
    )


def test_a_hook_that_does_not_exist_is_named_with_the_list_of_hooks():
    class Unknown:
        @hookimpl
        def register_provider(self, add_provider):
            pass

    with pytest.raises(PluginError) as err:
        make_plugin_manager(Unknown(), load_entrypoints=False)
    assert "implementa un hook que no existe: register_provider" in err.value.message
    assert "register_providers" in err.value.message and "\n" not in err.value.message


def test_settings_that_are_not_a_struct_are_named_as_such_not_as_missing():
    class Plain:
        host: str = ""

    provider = ScriptableProvider("mio")
    provider.Settings = Plain  # type: ignore[assignment]
    message = registry_error(adding(provider))
    assert "declara `Settings` = Plain, que no es una clase msgspec.Struct" in message

    provider.Settings = None  # type: ignore[assignment]
    assert "no tiene `Settings`" in registry_error(adding(provider))


def test_a_synchronous_charge_is_refused():
    class SyncCharge(ScriptableProvider):
        def charge(self, request, settings, ctx, progress):  # type: ignore[override]
            return None

    message = registry_error(adding(SyncCharge("mio")))
    assert message.endswith("charge debe ser async def.")


def test_an_async_parse_webhook_is_refused():
    class AsyncWebhook(ScriptableProvider):
        async def parse_webhook(self, headers, body):  # type: ignore[override]
            return None

    assert "parse_webhook debe ser def (síncrono)" in registry_error(adding(AsyncWebhook("mio")))


def test_missing_methods_bad_ids_the_reserved_cash_id_and_duplicates():
    class NoRefund(ScriptableProvider):
        refund = None  # type: ignore[assignment]

    assert "faltan los métodos refund" in registry_error(adding(NoRefund("mio")))
    assert "id inválido: 'Mio'" in registry_error(adding(ScriptableProvider("Mio")))
    assert "reservado para las ventas en efectivo" in registry_error(adding(ScriptableProvider("cash")))
    nameless = ScriptableProvider("mio")
    nameless.name = ""
    assert "no tiene `name`" in registry_error(adding(nameless))
    duplicate = registry_error(adding(ScriptableProvider("mio")), adding(ScriptableProvider("mio")))
    assert duplicate.startswith("Proveedor duplicado: 'mio' lo registran los plugins")


def test_a_plugin_that_raises_while_registering_is_named():
    class Exploding:
        @hookimpl
        def register_providers(self, add_provider):
            raise KeyError("HOST")

    assert "falló al registrar sus proveedores: KeyError('HOST')" in registry_error(Exploding())


# Through the command line, with plugins installed as a package manager installs them ------------------------
def installed(tmp_path: Path, name: str, source: str) -> dict[str, str]:
    """A plugin importable from ``tmp_path`` with a ``caja`` entry point, as ``pip install`` leaves it."""
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    dist = tmp_path / f"{name}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[caja]\n{name} = {name}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAJA_")}
    env["PYTHONPATH"] = str(tmp_path)
    return env


def caja(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", "from caja_core.cli import main; main()", *args]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=120)


def test_a_plugin_that_fails_to_import_is_one_line_and_exit_code_2(tmp_path):
    env = installed(tmp_path, "caja_roto", "import modulo_que_no_existe\n")
    out = caja("--help", env=env)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "caja: No se pudo cargar el plugin 'caja_roto' (caja_roto): No module named 'modulo_que_no_existe'"
    ]


def test_a_hook_typo_in_an_installed_plugin_is_one_line_at_the_command_line(tmp_path):
    env = installed(
        tmp_path,
        "caja_typo",
        """
        from caja_core import hookimpl

        @hookimpl
        def register_commands(click_group):
            pass
        """,
    )
    out = caja("--help", env=env)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "caja: El plugin 'caja_typo' implementa el hook register_commands con argumentos que el hook no tiene: "
        "click_group (el hook recibe: cli)."
    ]


def test_load_plugins_that_leaves_out_the_web_app_still_serves(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAJA_")}
    env["CAJA_LOAD_PLUGINS"] = "getnet"
    out = caja("--help", env=env)
    assert out.returncode == 0, out.stderr
    commands = out.stdout
    assert "serve" in commands and "demo" in commands and "getnet" in commands and "klap" not in commands
    env["CAJA_LOAD_PLUGINS"] = "getnet,x"
    out = caja("--help", env=env)
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("caja: CAJA_LOAD_PLUGINS nombra plugins no instalados: x (instalados: getnet, klap")
