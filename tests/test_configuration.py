"""Tests of pyroact.configuration: the item table, Config, the config file and ``main()``."""

from __future__ import annotations

import ast
import copy
import doctest
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import pyroact.configuration as configuration
from pyroact.configuration import CONFIG_ITEMS, DROPPED_ITEMS, Config, ConfigItem
from pyroact.errors import ConfigurationError, PyroError

ROOT = Path(__file__).resolve().parent.parent
ITEM_NAMES = [item.name for item in CONFIG_ITEMS]
BY_NAME = {item.name: item for item in CONFIG_ITEMS}

PYRO3_ITEMS = [
    "PYRO_STORAGE", "PYRO_HOST", "PYRO_PUBLISHHOST", "PYRO_PORT", "PYRO_PORT_RANGE",
    "PYRO_NS_HOSTNAME", "PYRO_NS_PORT", "PYRO_NS_BC_ADDR", "PYRO_NS_BC_PORT",
    "PYRO_NS2_HOSTNAME", "PYRO_NS2_PORT", "PYRO_NS2_BC_ADDR", "PYRO_NS2_BC_PORT",
    "PYRO_NS_URIFILE", "PYRO_NS_DEFAULTGROUP", "PYRO_BC_RETRIES", "PYRO_BC_TIMEOUT",
    "PYRO_PICKLE_FORMAT", "PYRO_TRACELEVEL", "PYRO_USER_TRACELEVEL", "PYRO_LOGFILE",
    "PYRO_USER_LOGFILE", "PYRO_STDLOGGING", "PYRO_STDLOGGING_CFGFILE", "PYRO_MAXCONNECTIONS",
    "PYRO_TCP_LISTEN_BACKLOG", "PYRO_BROKEN_MSGWAITALL", "PYRO_MULTITHREADED",
    "PYRO_COMPRESSION", "PYRO_MOBILE_CODE", "PYRO_DNS_URI", "PYRO_CHECKSUM",
    "PYRO_SOCK_KEEPALIVE", "PYRO_ES_QUEUESIZE", "PYRO_ES_BLOCKQUEUE", "PYRO_DETAILED_TRACEBACK",
    "PYRO_ONEWAY_THREADED", "PYROSSL_CERTDIR", "PYROSSL_CA_CERT", "PYROSSL_CERT", "PYROSSL_KEY",
    "PYROSSL_POSTCONNCHECK", "PYRO_CONFIG_FILE",
]  # fmt: skip

EXPECTED_DEFAULTS: dict[str, object] = {
    # Pyro 3 code defaults (the manual disagrees on the two BC items; the code wins).
    "PYRO_STORAGE": "$CURDIR",
    "PYRO_PUBLISHHOST": None,
    "PYRO_PORT": 7766,
    "PYRO_PORT_RANGE": 100,
    "PYRO_NS_HOSTNAME": None,
    "PYRO_NS_PORT": 9090,
    "PYRO_NS_BC_ADDR": None,
    "PYRO_NS_BC_PORT": 9090,
    "PYRO_NS2_HOSTNAME": None,
    "PYRO_NS2_PORT": 9091,
    "PYRO_NS2_BC_ADDR": None,
    "PYRO_NS2_BC_PORT": 9091,
    "PYRO_NS_URIFILE": "$STORAGE/Pyro_NS_URI",
    "PYRO_NS_DEFAULTGROUP": ":Default",
    "PYRO_BC_RETRIES": 1,
    "PYRO_BC_TIMEOUT": 0.75,
    "PYRO_PICKLE_FORMAT": 5,
    "PYRO_TRACELEVEL": 0,
    "PYRO_USER_TRACELEVEL": 0,
    "PYRO_LOGFILE": "$STORAGE/Pyro_log",
    "PYRO_USER_LOGFILE": "$STORAGE/Pyro_userlog",
    "PYRO_STDLOGGING": False,
    "PYRO_STDLOGGING_CFGFILE": "logging.cfg",
    "PYRO_MAXCONNECTIONS": 200,
    "PYRO_TCP_LISTEN_BACKLOG": 200,
    "PYRO_BROKEN_MSGWAITALL": False,
    "PYRO_MULTITHREADED": True,
    "PYRO_COMPRESSION": False,
    "PYRO_MOBILE_CODE": False,
    "PYRO_DNS_URI": False,
    "PYRO_CHECKSUM": False,
    "PYRO_SOCK_KEEPALIVE": True,
    "PYRO_ES_QUEUESIZE": 1000,
    "PYRO_ES_BLOCKQUEUE": True,
    "PYRO_DETAILED_TRACEBACK": False,
    "PYRO_ONEWAY_THREADED": True,
    "PYROSSL_CERTDIR": "$STORAGE/certs",
    "PYROSSL_CA_CERT": "ca.pem",
    "PYROSSL_CERT": "host.pem",
    "PYROSSL_KEY": None,
    "PYROSSL_POSTCONNCHECK": True,
    "PYRO_CONFIG_FILE": "",
    # pyroact decisions and new items.
    "PYRO_HOST": "127.0.0.1",
    "PYRO_MAX_MESSAGE_SIZE": 1073741824,
    "PYRO_SERVERTYPE": "",
    "PYRO_WORKERS": 0,
    "PYRO_THREADPOOL_SIZE": 64,
    "PYRO_MAILBOX_SIZE": 10000,
    "PYRO_WORKER_LINGER": 0.02,
    "PYRO_WORKER_NOTICES": False,
    "PYRO_WORKER_READS": True,
    "PYRO_OOB_THRESHOLD": 65536,
    "PYRO_HANDSHAKE_TIMEOUT": 5.0,
    "PYRO_ALLOW_PUBLIC_BIND": False,
    "PYRO_NS_DBFILE": "$STORAGE/pyroact_ns.sqlite",
    "PYRO_NS_TIMEOUT": 20.0,
    "PYRO_ES_TIMEOUT": 20.0,
    "PYROSSL_REQUIRE_CLIENT_CERT": True,
    "PYRO_COMPRESSION_LEVEL": 6,
}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's own PYRO_* variables out of every test (monkeypatch restores)."""
    for name in [*ITEM_NAMES, *DROPPED_ITEMS]:
        monkeypatch.delenv(name, raising=False)


def empty() -> Config:
    return Config(environ={})


def write(tmp_path: Path, text: str, name: str = "Pyro.conf") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- the table


def test_table_holds_every_pyro3_item_and_the_new_ones() -> None:
    assert set(PYRO3_ITEMS) <= set(ITEM_NAMES)
    assert set(ITEM_NAMES) == set(EXPECTED_DEFAULTS)
    assert len(ITEM_NAMES) == len(set(ITEM_NAMES))


@pytest.mark.parametrize("name", sorted(EXPECTED_DEFAULTS))
def test_defaults(name: str) -> None:
    item = BY_NAME[name]
    expected = EXPECTED_DEFAULTS[name]
    assert item.default == expected
    assert type(item.default) is type(expected)


@pytest.mark.parametrize("item", CONFIG_ITEMS, ids=ITEM_NAMES)
def test_each_item_is_well_formed(item: ConfigItem) -> None:
    assert item.type in (bool, int, float, str)
    assert item.description and "\n" not in item.description
    assert item.name.startswith(("PYRO_", "PYROSSL_"))
    # The default must pass the item's own validation, or reset() could not restore it.
    assert item.convert(item.default) == item.default
    if item.default is None:
        assert item.type is str and item.optional


def test_dropped_items_are_not_items() -> None:
    assert set(DROPPED_ITEMS) == {"PYRO_XML_PICKLE", "PYRO_GNOSIS_PARANOIA"}
    assert not set(DROPPED_ITEMS) & set(ITEM_NAMES)


def test_type_annotations_match_the_table() -> None:
    declared = {
        name: hint for name, hint in Config.__annotations__.items() if not name.startswith("_")
    }
    assert declared == {item.name: item.type_name for item in CONFIG_ITEMS}


def test_module_imports_only_stdlib_errors_and_constants() -> None:
    tree = ast.parse(Path(configuration.__file__).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if base == "pyroact":
                imported.update(f"pyroact.{alias.name}" for alias in node.names)
            else:
                imported.add(base)
    pyroact_modules = {name for name in imported if name.split(".")[0] == "pyroact"}
    assert pyroact_modules <= {"pyroact.errors", "pyroact.constants"}
    others = {name.split(".")[0] for name in imported} - {"pyroact", "__future__"}
    assert others <= set(sys.stdlib_module_names)
    assert not others & {"logging", "socket", "ssl", "selectors"}


# --------------------------------------------------------------------------- attribute access


def test_fresh_config_has_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = empty()
    for item in CONFIG_ITEMS:
        if not item.path:
            assert getattr(cfg, item.name) == item.default, item.name
        assert cfg.source(item.name) == "default"


def test_assignment_converts_strings() -> None:
    cfg = empty()
    cfg.PYRO_PORT = "7777"  # type: ignore[assignment]
    cfg.PYRO_BC_TIMEOUT = 2  # an int is fine for a float item
    cfg.PYRO_COMPRESSION = "yes"  # type: ignore[assignment]
    assert cfg.PYRO_PORT == 7777
    assert cfg.PYRO_BC_TIMEOUT == 2.0 and isinstance(cfg.PYRO_BC_TIMEOUT, float)
    assert cfg.PYRO_COMPRESSION is True
    assert cfg.source("PYRO_PORT") == "code"


def test_pyro3_style_int_booleans() -> None:
    cfg = empty()
    cfg.PYRO_MULTITHREADED = 0  # the Pyro 3 idiom this must keep working
    assert cfg.PYRO_MULTITHREADED is False
    cfg.PYRO_MULTITHREADED = 1
    assert cfg.PYRO_MULTITHREADED is True


def test_optional_items_accept_none() -> None:
    cfg = empty()
    cfg.PYRO_NS_HOSTNAME = "nshost"
    assert cfg.PYRO_NS_HOSTNAME == "nshost"
    cfg.PYRO_NS_HOSTNAME = None
    assert cfg.PYRO_NS_HOSTNAME is None


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [
        ("PYRO_MULTITHREADING", "PYRO_MULTITHREADED"),  # ex/benchmark/server.py
        ("PYRO_COMPRESSED", "PYRO_COMPRESSION"),  # ex/quickstart/pyrorun
        ("pyro_port", "PYRO_PORT"),
    ],
)
def test_assigning_an_unknown_name_raises_with_suggestion(typo: str, suggestion: str) -> None:
    cfg = empty()
    with pytest.raises(ConfigurationError, match=f"did you mean {suggestion}") as info:
        setattr(cfg, typo, 1)
    assert typo in str(info.value)
    assert isinstance(info.value, AttributeError) and isinstance(info.value, PyroError)
    assert cfg.as_dict() == empty().as_dict()


def test_unknown_name_without_close_match_has_no_suggestion() -> None:
    with pytest.raises(ConfigurationError) as info:
        empty().XYZZY = 1
    assert "XYZZY" in str(info.value) and "did you mean" not in str(info.value)


def test_reading_an_unknown_name_raises() -> None:
    cfg = empty()
    with pytest.raises(ConfigurationError, match="did you mean PYRO_MULTITHREADED"):
        _ = cfg.PYRO_MULTITHREADING
    assert not hasattr(cfg, "PYRO_NOPE")


def test_internal_slots_cannot_be_assigned() -> None:
    cfg = empty()
    with pytest.raises(ConfigurationError):
        cfg._code = {}  # type: ignore[misc]
    cfg.PYRO_PORT = 1
    assert cfg.PYRO_PORT == 1


@pytest.mark.parametrize("name", sorted(DROPPED_ITEMS))
def test_dropped_items_raise_when_set_or_read(name: str) -> None:
    cfg = empty()
    with pytest.raises(ConfigurationError, match="Gnosis XML pickling was dropped"):
        setattr(cfg, name, "gnosis")
    with pytest.raises(ConfigurationError, match="Gnosis XML pickling was dropped"):
        getattr(cfg, name)


# --------------------------------------------------------------------------- conversion


@pytest.mark.parametrize("text", ["1", "true", "TRUE", "True", "yes", "YES", "on", "On", " on "])
def test_true_spellings(text: str) -> None:
    assert Config(environ={"PYRO_COMPRESSION": text}).PYRO_COMPRESSION is True
    cfg = empty()
    cfg.PYRO_SOCK_KEEPALIVE = False
    cfg.PYRO_SOCK_KEEPALIVE = text  # type: ignore[assignment]
    assert cfg.PYRO_SOCK_KEEPALIVE is True


@pytest.mark.parametrize("text", ["0", "false", "FALSE", "False", "no", "No", "off", "OFF"])
def test_false_spellings(text: str) -> None:
    assert Config(environ={"PYRO_MULTITHREADED": text}).PYRO_MULTITHREADED is False
    cfg = empty()
    cfg.PYRO_SOCK_KEEPALIVE = text  # type: ignore[assignment]
    assert cfg.PYRO_SOCK_KEEPALIVE is False


@pytest.mark.parametrize("value", ["2", "maybe", "tru", "", 2, -1, 1.0, None, b"1"])
def test_bad_booleans(value: object) -> None:
    with pytest.raises(ConfigurationError, match="PYRO_COMPRESSION") as info:
        empty().PYRO_COMPRESSION = value  # type: ignore[assignment]
    assert repr(value) in str(info.value)
    assert "boolean" in str(info.value)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("PYRO_PORT", "abc", "an integer in 0..65535"),
        ("PYRO_PORT", "1.5", "an integer"),
        ("PYRO_PORT", 1.5, "an integer"),
        ("PYRO_PORT", 70000, "an integer in 0..65535"),
        ("PYRO_PORT", -1, "an integer in 0..65535"),
        ("PYRO_PORT", True, "an integer"),
        ("PYRO_PORT", None, "an integer"),
        ("PYRO_MAILBOX_SIZE", 0, "an integer >= 1"),
        ("PYRO_COMPRESSION_LEVEL", 10, "an integer in -1..9"),
        ("PYRO_PICKLE_FORMAT", 99, "an integer in 0.."),
        ("PYRO_BC_TIMEOUT", "fast", "a number"),
        ("PYRO_BC_TIMEOUT", "nan", "a number"),
        ("PYRO_NS_TIMEOUT", 0, "a number >= 0.001"),
        ("PYRO_HOST", 7766, "a string"),
        ("PYRO_HOST", None, "a string"),
        ("PYRO_NS_HOSTNAME", 12, "a string or None"),
        ("PYRO_SERVERTYPE", "forking", "one of '', 'single', 'threaded', 'process'"),
        ("PYRO_NS_DEFAULTGROUP", "Default", "an absolute group name"),
        ("PYRO_STORAGE", "$STORAGE/sub", "does not start with $STORAGE"),
    ],
)
def test_bad_values_name_item_value_and_expectation(
    name: str, value: object, expected: str
) -> None:
    cfg = empty()
    with pytest.raises(ConfigurationError) as info:
        setattr(cfg, name, value)
    message = str(info.value)
    assert name in message and repr(value) in message and expected in message
    assert cfg.source(name) == "default"


def test_choices_are_case_insensitive() -> None:
    cfg = empty()
    cfg.PYRO_SERVERTYPE = " Process "
    assert cfg.PYRO_SERVERTYPE == "process"


def test_negative_broadcast_values_mean_forever_and_are_accepted() -> None:
    cfg = Config(environ={"PYRO_BC_RETRIES": "-1", "PYRO_BC_TIMEOUT": "-1"})
    assert (cfg.PYRO_BC_RETRIES, cfg.PYRO_BC_TIMEOUT) == (-1, -1.0)


# --------------------------------------------------------------------------- environment


def test_environment_overrides_defaults() -> None:
    cfg = Config(environ={"PYRO_PORT": "8000", "PYRO_HOST": "0.0.0.0", "PYRO_BC_TIMEOUT": "2"})
    assert cfg.PYRO_PORT == 8000
    assert cfg.PYRO_HOST == "0.0.0.0"
    assert cfg.PYRO_BC_TIMEOUT == 2.0
    assert cfg.source("PYRO_PORT") == "environment"


def test_os_environ_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYRO_TRACELEVEL", "3")
    assert Config().PYRO_TRACELEVEL == 3
    assert Config(read_environment=False).PYRO_TRACELEVEL == 0


def test_environment_is_read_once_by_the_constructor() -> None:
    env = {"PYRO_PORT": "8000"}
    cfg = Config(environ=env)
    env["PYRO_PORT"] = "9000"
    assert cfg.PYRO_PORT == 8000


def test_read_environment_false_ignores_the_environ_mapping(tmp_path: Path) -> None:
    conf = write(tmp_path, "PYRO_PORT=1\n")
    cfg = Config(
        environ={"PYRO_PORT": "8000", "PYRO_CONFIG_FILE": str(conf)}, read_environment=False
    )
    assert cfg.PYRO_PORT == 7766
    assert cfg.PYRO_CONFIG_FILE == ""


def test_empty_and_foreign_environment_variables_are_ignored() -> None:
    cfg = Config(environ={"PYRO_PORT": "", "PYRO_SERIALIZER": "serpent", "HOME": "/x"})
    assert cfg.PYRO_PORT == 7766
    assert cfg.as_dict() == empty().as_dict()


def test_bad_environment_value_raises_naming_the_variable() -> None:
    with pytest.raises(ConfigurationError) as info:
        Config(environ={"PYRO_PORT": "seventy"})
    message = str(info.value)
    assert "PYRO_PORT" in message and "'seventy'" in message
    assert "environment variable" in message and "integer" in message


def test_dropped_item_in_environment_raises() -> None:
    with pytest.raises(ConfigurationError, match="Gnosis XML pickling was dropped"):
        Config(environ={"PYRO_XML_PICKLE": "gnosis"})
    Config(environ={"PYRO_XML_PICKLE": ""})  # unset in all but name: harmless


# --------------------------------------------------------------------------- config file


def test_config_file_format(tmp_path: Path) -> None:
    conf = write(
        tmp_path,
        "# a comment\n"
        "\n"
        "   # an indented comment\n"
        "PYRO_PORT=8001\n"
        "  PYRO_HOST   =   10.0.0.1   \n"
        "PYRO_COMPRESSION=on # trailing comment\n"
        "PYRO_NS_HOSTNAME=\n"
        "PYRO_TRACELEVEL=2\n"
        "PYRO_TRACELEVEL=3\n",
    )
    cfg = Config(environ={}, config_file=str(conf))
    assert cfg.PYRO_PORT == 8001
    assert cfg.PYRO_HOST == "10.0.0.1"
    assert cfg.PYRO_COMPRESSION is True
    assert cfg.PYRO_NS_HOSTNAME is None  # empty value keeps the default
    assert cfg.source("PYRO_NS_HOSTNAME") == "default"
    assert cfg.PYRO_TRACELEVEL == 3  # the last occurrence wins, as in Pyro 3
    assert cfg.source("PYRO_PORT") == "file"
    assert cfg.PYRO_CONFIG_FILE == str(conf)


def test_config_file_from_environment(tmp_path: Path) -> None:
    conf = write(tmp_path, "PYRO_PORT=8002\n")
    cfg = Config(environ={"PYRO_CONFIG_FILE": str(conf)})
    assert cfg.PYRO_PORT == 8002
    assert cfg.PYRO_CONFIG_FILE == str(conf)


def test_relative_config_file_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "PYRO_PORT=8003\n", name="my.conf")
    monkeypatch.chdir(tmp_path)
    cfg = Config(environ={"PYRO_CONFIG_FILE": "my.conf"})
    assert cfg.PYRO_PORT == 8003
    assert cfg.PYRO_CONFIG_FILE == str(tmp_path / "my.conf")


def test_config_file_argument_wins_over_environment(tmp_path: Path) -> None:
    env_conf = write(tmp_path, "PYRO_PORT=1111\n", name="env.conf")
    arg_conf = write(tmp_path, "PYRO_PORT=2222\n", name="arg.conf")
    cfg = Config(environ={"PYRO_CONFIG_FILE": str(env_conf)}, config_file=str(arg_conf))
    assert cfg.PYRO_PORT == 2222
    assert cfg.PYRO_CONFIG_FILE == str(arg_conf)


def test_pyro_conf_in_the_current_directory_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "PYRO_PORT=1234\n")
    monkeypatch.chdir(tmp_path)
    cfg = Config()
    assert cfg.PYRO_PORT == 7766
    assert cfg.PYRO_CONFIG_FILE == ""


def test_unknown_item_in_file_names_file_line_and_suggestion(tmp_path: Path) -> None:
    conf = write(tmp_path, "# header\nPYRO_PORT=1\nPYRO_MULTITHREADING=0\n")
    with pytest.raises(ConfigurationError) as info:
        Config(environ={}, config_file=str(conf))
    message = str(info.value)
    assert "PYRO_MULTITHREADING" in message and str(conf) in message
    assert "line 3" in message and "did you mean PYRO_MULTITHREADED" in message


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("PYRO_PORT=1\njust some words\n", 2),
        ("\n\nPYRO_PORT 7766\n", 3),
        ("PYRO_HOST=two words\n", 1),
        ("=7766\n", 1),
        ("PYRO-PORT=7766\n", 1),
    ],
)
def test_malformed_line_reports_line_number(tmp_path: Path, text: str, line: int) -> None:
    conf = write(tmp_path, text)
    with pytest.raises(ConfigurationError, match=f"syntax error in config file .*, line {line}:"):
        Config(environ={}, config_file=str(conf))


def test_bad_value_in_file_names_item_value_file_and_line(tmp_path: Path) -> None:
    conf = write(tmp_path, "PYRO_PORT=7766\nPYRO_COMPRESSION=perhaps\n")
    with pytest.raises(ConfigurationError) as info:
        Config(environ={}, config_file=str(conf))
    message = str(info.value)
    assert "PYRO_COMPRESSION" in message and "'perhaps'" in message and "boolean" in message
    assert str(conf) in message and "line 2" in message


def test_dropped_item_in_file_raises_with_line(tmp_path: Path) -> None:
    conf = write(tmp_path, "PYRO_XML_PICKLE=gnosis\n")
    with pytest.raises(ConfigurationError, match="Gnosis XML pickling was dropped.*line 1"):
        Config(environ={}, config_file=str(conf))


def test_pyro_config_file_line_in_a_file_is_ignored(tmp_path: Path) -> None:
    conf = write(tmp_path, "PYRO_CONFIG_FILE=/elsewhere.conf\nPYRO_PORT=8004\n")
    cfg = Config(environ={}, config_file=str(conf))
    assert cfg.PYRO_CONFIG_FILE == str(conf)
    assert cfg.PYRO_PORT == 8004


def test_missing_config_file_raises(tmp_path: Path) -> None:
    missing = tmp_path / "nope.conf"
    with pytest.raises(ConfigurationError, match="error reading config file .*nope.conf"):
        Config(environ={"PYRO_CONFIG_FILE": str(missing)})


def test_unreadable_config_file_raises(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="error reading config file"):
        Config(environ={}, config_file=str(tmp_path))  # a directory
    binary = tmp_path / "binary.conf"
    binary.write_bytes(b"PYRO_HOST=\xff\xfe\n")
    with pytest.raises(ConfigurationError, match="error reading config file"):
        Config(environ={}, config_file=str(binary))


def test_empty_pyro_config_file_variable_means_no_file() -> None:
    assert Config(environ={"PYRO_CONFIG_FILE": ""}).PYRO_CONFIG_FILE == ""


# --------------------------------------------------------------------------- precedence


def test_precedence_code_over_environment_over_file_over_default(tmp_path: Path) -> None:
    conf = write(tmp_path, "PYRO_PORT=1000\nPYRO_NS_PORT=2000\nPYRO_TRACELEVEL=1\n")
    env = {"PYRO_CONFIG_FILE": str(conf), "PYRO_PORT": "1001", "PYRO_NS_PORT": "2001"}
    cfg = Config(environ=env)
    cfg.PYRO_PORT = 1002
    assert (cfg.PYRO_PORT, cfg.source("PYRO_PORT")) == (1002, "code")
    assert (cfg.PYRO_NS_PORT, cfg.source("PYRO_NS_PORT")) == (2001, "environment")
    assert (cfg.PYRO_TRACELEVEL, cfg.source("PYRO_TRACELEVEL")) == (1, "file")
    assert (cfg.PYRO_NS_BC_PORT, cfg.source("PYRO_NS_BC_PORT")) == (9090, "default")


def test_reset_one_item_falls_back_to_the_lower_layers(tmp_path: Path) -> None:
    conf = write(tmp_path, "PYRO_PORT=1000\n")
    cfg = Config(environ={"PYRO_CONFIG_FILE": str(conf), "PYRO_NS_PORT": "2001"})
    cfg.PYRO_PORT = 1
    cfg.PYRO_NS_PORT = 2
    cfg.PYRO_TRACELEVEL = 3
    cfg.reset("PYRO_PORT")
    assert cfg.PYRO_PORT == 1000
    assert cfg.PYRO_NS_PORT == 2
    del cfg.PYRO_NS_PORT
    assert cfg.PYRO_NS_PORT == 2001
    assert cfg.PYRO_TRACELEVEL == 3
    cfg.reset()
    assert cfg.PYRO_TRACELEVEL == 0
    cfg.reset("PYRO_TRACELEVEL")  # nothing set in code: still fine
    with pytest.raises(ConfigurationError, match="did you mean PYRO_PORT"):
        cfg.reset("PYRO_PROT")


# --------------------------------------------------------------------------- path expansion


def test_storage_defaults_to_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = empty()
    assert cfg.PYRO_STORAGE == os.getcwd()
    assert cfg.PYRO_NS_URIFILE == os.path.join(os.getcwd(), "Pyro_NS_URI")
    assert cfg.PYRO_NS_DBFILE == os.path.join(os.getcwd(), "pyroact_ns.sqlite")
    assert cfg.PYROSSL_CERTDIR == os.path.join(os.getcwd(), "certs")


def test_storage_expansion_happens_at_read_time(tmp_path: Path) -> None:
    cfg = Config(environ={"PYRO_STORAGE": str(tmp_path / "a")})
    assert cfg.PYRO_LOGFILE == str(tmp_path / "a" / "Pyro_log")
    cfg.PYRO_STORAGE = str(tmp_path / "b")
    assert cfg.PYRO_LOGFILE == str(tmp_path / "b" / "Pyro_log")
    assert cfg.PYRO_USER_LOGFILE == str(tmp_path / "b" / "Pyro_userlog")
    cfg.PYRO_LOGFILE = "$STORAGE/logs/system.log"
    assert cfg.PYRO_LOGFILE == str(tmp_path / "b" / "logs" / "system.log")
    assert cfg.as_dict(expand=False)["PYRO_LOGFILE"] == "$STORAGE/logs/system.log"
    assert cfg.as_dict()["PYRO_LOGFILE"] == str(tmp_path / "b" / "logs" / "system.log")


def test_relative_storage_is_made_absolute_for_storage_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = Config(environ={"PYRO_STORAGE": "data"})
    assert cfg.PYRO_STORAGE == "data"
    assert cfg.PYRO_NS_URIFILE == str(tmp_path / "data" / "Pyro_NS_URI")


def test_curdir_expansion_and_literal_lookalikes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = empty()
    cfg.PYRO_STORAGE = "$CURDIR/store"
    assert cfg.PYRO_STORAGE == str(tmp_path / "store")
    assert cfg.PYROSSL_CERTDIR == str(tmp_path / "store" / "certs")
    cfg.PYRO_LOGFILE = "$STORAGEX/log"  # not a whole token: left alone
    assert cfg.PYRO_LOGFILE == "$STORAGEX/log"
    cfg.PYROSSL_CA_CERT = "$STORAGE/ca.pem"  # not a path item: left alone
    assert cfg.PYROSSL_CA_CERT == "$STORAGE/ca.pem"


def test_storage_expansion_from_file(tmp_path: Path) -> None:
    conf = write(tmp_path, f"PYRO_STORAGE={tmp_path}\nPYRO_NS_URIFILE=$STORAGE/ns.uri\n")
    cfg = Config(environ={}, config_file=str(conf))
    assert cfg.PYRO_NS_URIFILE == str(tmp_path / "ns.uri")


# --------------------------------------------------------------------------- copies


def test_copy_is_independent() -> None:
    original = Config(environ={"PYRO_NS_PORT": "2001"})
    original.PYRO_PORT = 1
    duplicate = original.copy()
    assert duplicate.as_dict() == original.as_dict()
    assert duplicate.source("PYRO_NS_PORT") == "environment"
    duplicate.PYRO_PORT = 2
    original.PYRO_TRACELEVEL = 3
    assert original.PYRO_PORT == 1
    assert duplicate.PYRO_TRACELEVEL == 0
    duplicate.reset()
    assert original.PYRO_PORT == 1
    assert duplicate.PYRO_NS_PORT == 2001


def test_copy_module_and_pickle_round_trip() -> None:
    cfg = Config(environ={"PYRO_HOST": "10.1.1.1"})
    cfg.PYRO_COMPRESSION = True
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        clone = pickle.loads(pickle.dumps(cfg, protocol))
        assert clone.as_dict() == cfg.as_dict()
        assert clone.source("PYRO_HOST") == "environment"
    for clone in (copy.copy(cfg), copy.deepcopy(cfg)):
        assert clone.as_dict() == cfg.as_dict()
        clone.PYRO_PORT = 5
        assert cfg.PYRO_PORT == 7766


# --------------------------------------------------------------------------- introspection


def test_as_dict_and_items_are_complete_and_sorted() -> None:
    cfg = empty()
    data = cfg.as_dict()
    assert list(data) == sorted(ITEM_NAMES)
    assert cfg.items() == list(data.items())
    data["PYRO_PORT"] = 1  # a copy, not a view
    assert cfg.PYRO_PORT == 7766


def test_describe() -> None:
    cfg = Config(environ={"PYRO_PORT": "8000"})
    text = cfg.describe("PYRO_PORT")
    assert text.startswith("PYRO_PORT (int, default 7766;")
    assert "0..65535" in text and BY_NAME["PYRO_PORT"].description in text
    assert "Current value: 8000 (from environment)" in text
    assert "str | None" in cfg.describe("PYRO_NS_HOSTNAME")
    assert "true/false" in cfg.describe("PYRO_COMPRESSION")
    with pytest.raises(ConfigurationError, match="did you mean PYRO_PORT"):
        cfg.describe("PYRO_PORTT")


def test_repr_lists_changed_items_only() -> None:
    cfg = empty()
    assert repr(cfg) == "Config()"
    cfg.PYRO_PORT = 8000
    cfg.PYRO_HOST = "127.0.0.1"  # set, but equal to the default
    assert repr(cfg) == "Config(PYRO_PORT=8000)"


def test_dir_lists_items_and_methods() -> None:
    names = dir(empty())
    assert set(ITEM_NAMES) <= set(names)
    for method in ("copy", "reset", "as_dict", "items", "describe", "source"):
        assert method in names and callable(getattr(Config, method))


def test_effective_servertype_and_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = empty()
    assert cfg.effective_servertype() == "threaded"
    cfg.PYRO_MULTITHREADED = 0
    assert cfg.effective_servertype() == "single"
    cfg.PYRO_SERVERTYPE = "process"
    assert cfg.effective_servertype() == "process"
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert cfg.effective_workers() == 3
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert cfg.effective_workers() == 1
    cfg.PYRO_WORKERS = 5
    assert cfg.effective_workers() == 5


def test_module_doctests_pass() -> None:
    result = doctest.testmod(configuration, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# --------------------------------------------------------------------------- main()


def test_main_prints_sorted_item_lines(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYRO_PORT", "7001")
    assert configuration.main([]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert err == ""
    assert lines == sorted(lines)
    assert [line.split("=", 1)[0] for line in lines] == sorted(ITEM_NAMES)
    assert "PYRO_PORT=7001" in lines
    assert "PYRO_PUBLISHHOST=" in lines  # None prints as an empty value
    assert f"PYRO_STORAGE={tmp_path}" in lines


def test_main_output_reads_back_as_a_config_file(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PYRO_NS_HOSTNAME", "nshost")
    monkeypatch.setenv("PYRO_COMPRESSION", "yes")
    monkeypatch.setenv("PYRO_BC_TIMEOUT", "1.5")
    assert configuration.main([]) == 0
    conf = write(tmp_path, capsys.readouterr().out)
    reread = Config(environ={}, config_file=str(conf)).as_dict()
    expected = Config().as_dict()
    assert reread.pop("PYRO_CONFIG_FILE") == str(conf)
    expected.pop("PYRO_CONFIG_FILE")
    assert reread == expected


def test_main_verbose_adds_comments(capsys: pytest.CaptureFixture[str]) -> None:
    assert configuration.main(["-v"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 * len(ITEM_NAMES)
    index = lines.index("PYRO_PORT=7766")
    assert lines[index - 1] == f"# {BY_NAME['PYRO_PORT'].description} [default]"


def test_main_reports_invalid_configuration(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYRO_PORT", "many")
    assert configuration.main([]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "PYRO_PORT" in err and "'many'" in err


def test_python_dash_m_runs_main(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in BY_NAME}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["PYRO_PORT"] = "7002"
    result = subprocess.run(
        [sys.executable, "-m", "pyroact.configuration"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "PYRO_PORT=7002" in result.stdout.splitlines()


def test_every_change_is_seen_by_the_next_read_of_a_value_read_before() -> None:
    # Values read once are kept on the object: each kind of change must drop them.
    cfg = empty()
    storage = cfg.PYRO_STORAGE
    assert cfg.PYRO_LOGFILE == os.path.join(storage, "Pyro_log")
    assert cfg.PYRO_PORT == 7766
    cfg.PYRO_PORT = 9000
    assert cfg.PYRO_PORT == 9000
    cfg.PYRO_STORAGE = "/srv/pyro"  # a path item's value depends on another item
    assert cfg.PYRO_LOGFILE == os.path.join("/srv/pyro", "Pyro_log")
    cfg.reset("PYRO_PORT")
    assert cfg.PYRO_PORT == 7766
    del cfg.PYRO_STORAGE
    assert cfg.PYRO_LOGFILE == os.path.join(storage, "Pyro_log")
    cfg.PYRO_PORT = 9001
    cfg.reset()
    assert cfg.PYRO_PORT == 7766


def test_path_items_follow_the_current_directory_at_every_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = Config(environ={"PYRO_STORAGE": "rel"})
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    monkeypatch.chdir(first)
    assert cfg.PYRO_LOGFILE == str(first / "rel" / "Pyro_log")
    monkeypatch.chdir(second)
    assert cfg.PYRO_LOGFILE == str(second / "rel" / "Pyro_log")
    assert cfg.PYRO_LOGFILE == cfg.as_dict()["PYRO_LOGFILE"]


def test_copies_and_pickles_do_not_share_values_read() -> None:
    cfg = empty()
    assert cfg.PYRO_PORT == 7766
    twin, thawed = cfg.copy(), pickle.loads(pickle.dumps(cfg))
    cfg.PYRO_PORT = 9000
    assert (twin.PYRO_PORT, thawed.PYRO_PORT) == (7766, 7766)
    twin.PYRO_PORT = 9001
    assert (cfg.PYRO_PORT, twin.PYRO_PORT) == (9000, 9001)


# --------------------------------------------------------------------------- docs


def _docs() -> str:
    return (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")


def test_docs_table_matches_the_item_table() -> None:
    rows: dict[str, tuple[str, str]] = {}
    for line in _docs().splitlines():
        if line.startswith(("| `PYRO_", "| `PYROSSL_")):
            cells = [cell.strip() for cell in line.replace(r"\|", "\0").strip("|").split("|")]
            name, type_name, default = (cell.replace("\0", "|") for cell in cells[:3])
            rows[name.strip("`")] = (type_name, default)
    expected = {}
    for item in CONFIG_ITEMS:
        shown = "None" if item.default is None else "''" if item.default == "" else item.default
        expected[item.name] = (item.type_name, f"`{shown}`")
    assert rows == expected


def test_docs_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    example = _docs().split("## Example", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(example, "docs/configuration.md", "exec"), {})  # noqa: S102 - our own docs
