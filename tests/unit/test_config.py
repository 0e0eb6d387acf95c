"""Configuration: sources, precedence, and errors that name the key."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
from twisted.python import usage

from profiled.config import SECTIONS, Settings, load_settings
from profiled.errors import ConfigError
from profiled.tap import Options

REPO = Path(__file__).resolve().parents[2]


def test_defaults_match_api_contract():
    """The defaults are the ones API.md promises."""
    s = load_settings(environ={})
    assert s.role == "all"
    assert s.web.listen == "tcp:8080:interface=127.0.0.1"
    assert s.web.max_bytes == 10 * 1024 * 1024
    assert s.driver.name == "local"
    assert s.local.data_dir == "./var"
    assert s.images.max_pixels == 50_000_000
    assert s.images.max_side == 20_000
    assert s.images.crunch_seconds == 10
    assert s.images.crunch_memory_mb == 512
    assert s.images.jpeg_quality == 85
    assert dict(s.images.variants) == {"default": 200, "small": 100, "large": 600}


def test_shipped_config_documents_every_key_with_its_default():
    """etc/profiled.toml loads to exactly the defaults and names every key."""
    path = REPO / "etc" / "profiled.toml"
    assert load_settings(path, environ={}) == Settings()
    text = path.read_text()
    for section in SECTIONS:
        assert f"[{section}]" in text
        for f in fields(getattr(Settings(), section)):
            assert f"{f.name} =" in text or f"[{section}.{f.name}]" in text, f"{section}.{f.name}"


def test_precedence_options_over_env_over_file(tmp_path):
    """Command line beats environment, which beats the file."""
    conf = tmp_path / "p.toml"
    conf.write_text('[web]\nmax_bytes = 100\nbody_timeout = 5\n[local]\ndata_dir = "/f"\n')
    env = {"PROFILED_WEB_MAX_BYTES": "200", "PROFILED_LOCAL_DATA_DIR": "/e"}
    s = load_settings(conf, env, {"local.data_dir": "/o"})
    assert s.web.max_bytes == 200
    assert s.web.body_timeout == 5.0
    assert s.local.data_dir == "/o"


def test_env_types_are_parsed():
    """Environment strings become ints, floats, lists and variant tables."""
    s = load_settings(
        environ={
            "PROFILED_IMAGES_MAX_PIXELS": "1_000",
            "PROFILED_WORKER_RETRY_DELAY": "0.5",
            "PROFILED_AUTH_TOKENS": "a:" + "0" * 64 + ", b:" + "1" * 64,
            "PROFILED_IMAGES_VARIANTS": "default=64,big=512",
            "PROFILED_AWS_QUEUE_URL": "http://127.0.0.1:1/q",
        }
    )
    assert s.images.max_pixels == 1000
    assert s.worker.retry_delay == 0.5
    assert len(s.auth.tokens) == 2
    assert dict(s.images.variants) == {"default": 64, "big": 512}
    assert s.aws.queue_url == "http://127.0.0.1:1/q"


def test_image_urls():
    """URLs derive from the template, or from the listener when none is set."""
    s = load_settings(environ={"PROFILED_WEB_IMAGE_URL": "https://img.example.net/a/{id}"})
    assert s.image_url("ab") == "https://img.example.net/a/ab"
    assert s.image_url("ab", "small") == "https://img.example.net/a/ab_small"
    s = load_settings(environ={}, overrides={"web.listen": "tcp:9999:interface=0.0.0.0"})
    assert s.image_url("ab") == "http://127.0.0.1:9999/a/ab"


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"PROFILED_WEB_MAX_BYTES": "ten"}, "web.max_bytes"),
        ({"PROFILED_WEB_MAX_BYTES": "-1"}, "web.max_bytes"),
        ({"PROFILED_DRIVER_NAME": "s3"}, "driver.name"),
        ({"PROFILED_WEB_NOPE": "1"}, "web.nope"),
        ({"PROFILED_IMAGES_MODE": "stretch"}, "images.mode"),
        ({"PROFILED_IMAGES_VARIANTS": "small=100"}, "images.variants"),
        ({"PROFILED_IMAGES_VARIANTS": "default=0"}, "images.variants"),
        ({"PROFILED_IMAGES_VARIANTS": "default"}, "images.variants"),
        ({"PROFILED_WEB_IMAGE_URL": "https://x/a/"}, "web.image_url"),
        ({"PROFILED_WEB_LISTEN": "8080"}, "web.listen"),
    ],
)
def test_bad_values_name_the_key(env, key):
    """Every bad value is refused with a message that starts with its key."""
    with pytest.raises(ConfigError) as e:
        load_settings(environ=env)
    assert str(e.value).startswith(key + ":")


def test_bad_file_is_refused(tmp_path):
    """A file with an unknown section, a wrong type or broken TOML is refused."""
    for text, key in [
        ("[nope]\nx = 1\n", "nope.x"),
        ('[web]\nmax_bytes = "big"\n', "web.max_bytes"),
        ("[web\n", "--config"),
        ("web = 1\n", "web"),
    ]:
        conf = tmp_path / "bad.toml"
        conf.write_text(text)
        with pytest.raises(ConfigError) as e:
            load_settings(conf, environ={})
        assert str(e.value).startswith(key), str(e.value)


def test_missing_file_is_refused(tmp_path):
    """A --config that cannot be read is an error, not a silent default."""
    with pytest.raises(ConfigError, match="--config"):
        load_settings(tmp_path / "absent.toml", environ={})


def test_twistd_options_map_to_settings(monkeypatch):
    """--role, --listen, --driver and --data-dir land in the right keys."""
    monkeypatch.delenv("PROFILED_WEB_LISTEN", raising=False)
    o = Options()
    o.parseOptions(["--role=proxy", "--listen=tcp:9000", "--data-dir=/d", "--driver=local"])
    assert o.settings.role == "proxy"
    assert o.settings.proxy.listen == "tcp:9000"
    assert o.settings.listen_for("proxy") == "tcp:9000"
    assert o.settings.local.data_dir == "/d"
    o = Options()
    o.parseOptions(["--listen=tcp:9001"])
    assert o.settings.listen_for("web") == "tcp:9001"
    assert o.settings.listen_for("proxy") == "tcp:9001"


def test_twistd_options_refuse_bad_values():
    """Bad options are usage errors (twistd prints them and exits non-zero)."""
    for argv in (["--role=cook"], ["--driver=ftp"]):
        with pytest.raises(usage.UsageError):
            Options().parseOptions(argv)
