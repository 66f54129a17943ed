"""Configuration: defaults, file, environment and flags, and typed errors."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from kernel import config
from kernel.errors import ConfigError, ConfigSyntaxError


def test_written_file_lists_every_key_with_a_comment(tmp_path: Path) -> None:
    path = config.write_default(tmp_path)
    text = path.read_text()
    parsed = tomllib.loads(text)
    for setting in config.SETTINGS:
        section, name = setting.key.split(".")
        assert parsed[section][name] == setting.default
        assert f"# {setting.comment}\n{name} = " in text
    assert config.load(tmp_path) == config.defaults()


def test_write_default_never_overwrites(tmp_path: Path) -> None:
    (tmp_path / config.CONFIG_FILE).write_text("[steps]\nworkers = 9\n")
    config.write_default(tmp_path)
    assert config.load(tmp_path)["steps.workers"] == 9


@pytest.mark.parametrize(
    ("file_text", "environ", "flags", "key", "expected"),
    [
        ("", {}, {}, "mailbox.capacity", 1000),
        ("[mailbox]\ncapacity = 5\n", {}, {}, "mailbox.capacity", 5),
        ("[mailbox]\ncapacity = 5\n", {"BATOS_MAILBOX_CAPACITY": "7"}, {},
         "mailbox.capacity", 7),
        ("[mailbox]\ncapacity = 5\n", {"BATOS_MAILBOX_CAPACITY": "7"},
         {"mailbox.capacity": "9"}, "mailbox.capacity", 9),
        ("", {"BATOS_LOG_JSON": "yes"}, {}, "log.json", True),
        ("", {"BATOS_KERNEL_ENDPOINTS": "tcp://127.0.0.1:5555, ipc://x"}, {},
         "kernel.endpoints", ["tcp://127.0.0.1:5555", "ipc://x"]),
        ("[audit]\ninterval_s = 60\n", {}, {}, "audit.interval_s", 60.0),
        ("", {"BATOS_IMAGE": "elsewhere"}, {}, "steps.workers", 4),
    ],
)
def test_precedence(tmp_path: Path, file_text: str, environ: dict[str, str],
                    flags: dict[str, str], key: str, expected: object) -> None:
    (tmp_path / config.CONFIG_FILE).write_text(file_text)
    assert config.load(tmp_path, flags, environ)[key] == expected


@pytest.mark.parametrize(
    ("file_text", "environ", "flags", "named"),
    [
        ("[mailbox]\ncapcity = 5\n", {}, {}, "mailbox.capcity"),
        ("[nosuch]\nx = 1\n", {}, {}, "nosuch.x"),
        ("[mailbox]\ncapacity = \"big\"\n", {}, {}, "mailbox.capacity"),
        ("[mailbox]\ncapacity = true\n", {}, {}, "mailbox.capacity"),
        ("[log]\njson = 1\n", {}, {}, "log.json"),
        ("[kernel]\nendpoints = [1, 2]\n", {}, {}, "kernel.endpoints"),
        ("steps = 3\n", {}, {}, "steps"),
        ("", {"BATOS_STEPS_WORKERZ": "2"}, {}, "BATOS_STEPS_WORKERZ"),
        ("", {"BATOS_STEPS_WORKERS": "two"}, {}, "steps.workers"),
        ("", {"BATOS_LOG_JSON": "maybe"}, {}, "log.json"),
        ("", {}, {"steps.nope": "1"}, "steps.nope"),
        ("", {}, {"audit.interval_s": "soon"}, "audit.interval_s"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, file_text: str, environ: dict[str, str],
                             flags: dict[str, str], named: str) -> None:
    (tmp_path / config.CONFIG_FILE).write_text(file_text)
    with pytest.raises(ConfigError) as info:
        config.load(tmp_path, flags, environ)
    assert info.value.key == named


def test_broken_toml_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / config.CONFIG_FILE).write_text("[steps\n")
    with pytest.raises(ConfigSyntaxError) as caught:
        config.load(tmp_path)
    assert caught.value.path == str(tmp_path / config.CONFIG_FILE)
    assert isinstance(caught.value, ConfigError)


@pytest.mark.parametrize("flag", ["steps.workers", "noequals", "bad.key=1"])
def test_bad_assignment_is_refused(flag: str) -> None:
    with pytest.raises(ConfigError):
        config.parse_assignment(flag)


def test_assignment_splits_key_and_value() -> None:
    assert config.parse_assignment("steps.workers=2") == ("steps.workers", "2")


# -- meaning: ranges, choices and shapes (kernel.config_rules) -------------------------


def test_every_setting_has_a_rule() -> None:
    from kernel.config_rules import RULES

    assert set(RULES) == {s.key for s in config.SETTINGS}


@pytest.mark.parametrize(
    ("file_text", "environ", "flags", "named"),
    [
        ("[kernel]\nmax_message_bytes = 0\n", {}, {}, "kernel.max_message_bytes"),
        ("[mailbox]\ncapacity = -5\n", {}, {}, "mailbox.capacity"),
        ("", {"BATOS_STEPS_WORKERS": "0"}, {}, "steps.workers"),
        ("", {}, {"steps.max_attempts": "0"}, "steps.max_attempts"),
        ("[kernel]\nheartbeat_ms = 1\n", {}, {}, "kernel.heartbeat_ms"),
        ("[kernel]\nheartbeat_liveness = 0\n", {}, {}, "kernel.heartbeat_liveness"),
        ("[kernel]\nendpoints = []\n", {}, {}, "kernel.endpoints"),
        ("[kernel]\nendpoints = [\"http://x\"]\n", {}, {}, "kernel.endpoints"),
        ("[kernel]\nendpoints = [\"tcp://0.0.0.0:70000\"]\n", {}, {}, "kernel.endpoints"),
        ("[kernel]\nmission_entry = \"\"\n", {}, {}, "kernel.mission_entry"),
        ("[kernel]\ngroup_commit_delay_s = -0.1\n", {}, {}, "kernel.group_commit_delay_s"),
        ("[kernel]\nrequest_timeout_s = 0\n", {}, {}, "kernel.request_timeout_s"),
        ("[log]\nlevel = \"LOUD\"\n", {}, {}, "log.level"),
        ("[audit]\ninterval_s = 0.5\n", {}, {}, "audit.interval_s"),
        ("[audit]\nactor = \"a b\"\n", {}, {}, "audit.actor"),
        ("[thermal]\nprofile = \"tpu\"\n", {}, {}, "thermal.profile"),
        ("[thermal]\ntdp_throttle_fraction = 1.5\n", {}, {}, "thermal.tdp_throttle_fraction"),
        ("[thermal]\npoll_s = nan\n", {}, {}, "thermal.poll_s"),
        ("[thermal]\nlimit_c = inf\n", {}, {}, "thermal.limit_c"),
        ("[image]\ncache_size = 0\n", {}, {}, "image.cache_size"),
        ("[image]\nzeo = \"host:0\"\n", {}, {}, "image.zeo"),
        ("[adapters]\nwarm_bytes = -1\n", {}, {}, "adapters.warm_bytes"),
        ("[adapters]\npinned = [\"\"]\n", {}, {}, "adapters.pinned"),
        ("[adapters]\nstaging_dir = \" \"\n", {}, {}, "adapters.staging_dir"),
        ("[missions]\nmax_question_bytes = 0\n", {}, {}, "missions.max_question_bytes"),
        ("[steps]\nmax_interruptions = -1\n", {}, {}, "steps.max_interruptions"),
    ],
)
def test_values_out_of_range_name_the_key_and_the_source(
        tmp_path: Path, file_text: str, environ: dict[str, str], flags: dict[str, str],
        named: str) -> None:
    (tmp_path / config.CONFIG_FILE).write_text(file_text)
    with pytest.raises(ConfigError) as info:
        config.load(tmp_path, flags, environ)
    assert info.value.key == named


def test_a_flag_can_repair_a_bad_file_value(tmp_path: Path) -> None:
    (tmp_path / config.CONFIG_FILE).write_text("[mailbox]\ncapacity = -5\n")
    assert config.load(tmp_path, {"mailbox.capacity": "10"}, {})["mailbox.capacity"] == 10


@pytest.mark.parametrize(
    ("key", "value"),
    [("kernel.endpoints", ["ipc:///tmp/k.sock", "tcp://*:5555", "tcp://[::1]:5555"]),
     ("image.zeo", "zeo.local:8100"), ("image.zeo", "/run/zeo.sock"),
     ("audit.interval_s", 0.0), ("log.level", "debug"), ("mailbox.capacity", 1)],
)
def test_edge_values_that_mean_something_are_accepted(tmp_path: Path, key: str,
                                                      value: object) -> None:
    assert config.load(tmp_path, {key: value}, {})[key] == value


def test_in_answers_false_for_an_unknown_key(tmp_path: Path) -> None:
    cfg = config.load(tmp_path, None, {})
    assert "mailbox.capacity" in cfg
    assert "no.such" not in cfg
    assert 3 not in cfg
