"""shipper.config: validation messages, precedence, secrets, paths, and `check-config` end to end."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import pwd
import re
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

from shipper import config
from shipper.cli import main
from shipper.errors import ConfigError, ExitStatus

BAD = Path(__file__).parent / "bad_configs"
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "smtp-shipper.example.yml"
# A zero-byte file has no room for its own "# expect:" line.
NO_ROOM_FOR_COMMENT = {"empty.yml": ["empty.yml: the file is empty"]}
# Git keeps no permission bits but the executable one: the fixtures' files get their modes here.
# Files in files/ are private (0600) unless listed.
FIXTURE_MODES = {"open-password": 0o644}


@pytest.fixture(autouse=True)
def no_default_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test may pick up the machine's /etc/smtp-shipper/config.yml or the caller's environment."""
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", tmp_path / "no-such-default.yml")
    for name in [config.CONFIG_ENV, config.PASSWORD_ENV, *(n for n, _ in config.ENV_OVERRIDES)]:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def bad(tmp_path: Path) -> Path:
    """A copy of bad_configs/ whose files have the modes the fixtures mean."""
    copy = Path(shutil.copytree(BAD, tmp_path / "bad_configs"))
    for path in (copy / "files").iterdir():
        if path.is_file():
            path.chmod(FIXTURE_MODES.get(path.name, 0o600))
    return copy


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path, **kwargs: object) -> list[config.Problem]:
    with pytest.raises(config.ConfigProblems) as info:
        config.load(path, env={}, **kwargs)  # type: ignore[arg-type]
    return list(info.value.problems)


def expectations(path: Path) -> list[str]:
    if path.name in NO_ROOM_FOR_COMMENT:
        return NO_ROOM_FOR_COMMENT[path.name]
    lines = path.read_bytes().decode("utf-8", "replace").splitlines()
    found = [line.removeprefix("# expect: ") for line in lines if line.startswith("# expect: ")]
    return [f.replace("{dir}", str(path.parent)) for f in found]


# ------------------------------------------------------------------ one fixture per message


@pytest.mark.parametrize("name", sorted(p.name for p in BAD.glob("*.yml")))
def test_bad_config_reports_exactly_its_problem(name: str, bad: Path) -> None:
    """Each file in bad_configs/ yields exactly one problem, whose text holds the file's `# expect:` lines."""
    fixture = bad / name
    expected = expectations(fixture)
    assert expected, f"{fixture.name} says nothing about what it expects"
    problems = problems_of(fixture)
    assert len(problems) == 1, "\n".join(map(str, problems))
    actual = str(problems[0]).replace(f"{bad}/", "", 1)
    for fragment in expected:
        assert fragment in actual


def test_bad_configs_raise_the_config_exit_status() -> None:
    """A ConfigProblems is a shipper ConfigError, so the CLI turns it into exit status 3."""
    with pytest.raises(ConfigError) as info:
        config.load(BAD / "url-port-only.yml", env={})
    assert ExitStatus.CONFIG == info.value.exit_status


def test_all_problems_are_reported_together_in_file_order(tmp_path: Path) -> None:
    """Three mistakes give three problems, listed by line, in one exception."""
    cfg = write(
        tmp_path / "c.yml",
        'log_level: loud\nopensearch:\n  hosts: ["9200"]\n  timeout: soon\ninputs:\n  - paths: ["x*.log"]\n',
    )
    problems = problems_of(cfg)
    assert ["log_level", "opensearch.hosts[0]", "opensearch.timeout", "inputs[0].paths[0]"] == [p.key for p in problems]
    assert [1, 3, 4, 6] == [p.line for p in problems]
    with pytest.raises(ConfigError) as info:
        config.load(cfg, env={})
    assert str(info.value).startswith("4 problems in the configuration:\n")


def test_missing_config_file_named_by_flag(tmp_path: Path) -> None:
    """--config naming a file that is not there is an error, not a silent fallback to defaults."""
    problems = problems_of(tmp_path / "nope.yml")
    assert [f"{tmp_path / 'nope.yml'}: no such file"] == [str(p).split("\n")[0] for p in problems]


# ------------------------------------------------------------------ defaults and lookup


def test_defaults_without_any_file() -> None:
    """No file, no environment: the local node, the documented defaults."""
    settings = config.load(env={})
    assert settings.source is None
    assert ("http://127.0.0.1:9200",) == settings.opensearch.hosts
    assert "smtp-deliveries" == settings.opensearch.index_prefix
    assert (2000, 10485760) == (settings.opensearch.bulk.max_docs, settings.opensearch.bulk.max_bytes)
    assert config.ThresholdSettings(50, 15) == settings.alerting.rejections
    assert () == settings.inputs
    assert "info" == settings.log_level
    assert settings.host_name  # socket.gethostname() when not configured


def test_default_state_dir_for_root_and_for_a_user(monkeypatch: pytest.MonkeyPatch) -> None:
    """root gets /var/lib/smtp-shipper; another user $XDG_STATE_HOME or ~/.local/state."""
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert Path("/var/lib/smtp-shipper") == config.load(env={}).state_dir
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert Path("/home/u/.local/state/smtp-shipper") == config.load(env={"HOME": "/home/u"}).state_dir
    assert Path("/x/state/smtp-shipper") == config.load(env={"HOME": "/home/u", "XDG_STATE_HOME": "/x/state"}).state_dir


def test_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--config, else $SMTP_SHIPPER_CONFIG, else the default path if it exists, else defaults."""
    flag = write(tmp_path / "flag.yml", "log_level: debug\n")
    envfile = write(tmp_path / "env.yml", "log_level: warning\n")
    default = tmp_path / "default.yml"
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", default)
    env = {config.CONFIG_ENV: str(envfile)}
    assert "debug" == config.load(flag, env=env).log_level
    assert "warning" == config.load(env=env).log_level
    assert "info" == config.load(env={}).log_level  # default path does not exist yet
    write(default, "log_level: error\n")
    assert "error" == config.load(env={}).log_level
    assert default == config.load(env={}).source


# ------------------------------------------------------------------ precedence


def test_precedence_flag_over_env_over_file_over_default(tmp_path: Path) -> None:
    """index_prefix: file beats default, environment beats file, a command-line override beats all."""
    cfg = write(tmp_path / "c.yml", "opensearch:\n  index_prefix: from-file\n")
    env = {"SMTP_SHIPPER_INDEX_PREFIX": "from-env"}
    assert "smtp-deliveries" == config.load(env={}).opensearch.index_prefix
    assert "from-file" == config.load(cfg, env={}).opensearch.index_prefix
    assert "from-env" == config.load(cfg, env=env).opensearch.index_prefix
    flagged = config.load(cfg, env=env, overrides={"opensearch.index_prefix": "from-flag"})
    assert "from-flag" == flagged.opensearch.index_prefix


def test_every_environment_override(tmp_path: Path) -> None:
    """Each documented variable lands on its key; hosts are comma-separated; empty means unset."""
    env = {
        "SMTP_SHIPPER_OPENSEARCH_HOSTS": "https://a:9200, https://b:9200",
        "SMTP_SHIPPER_OPENSEARCH_USERNAME": "shipper",
        "SMTP_SHIPPER_OPENSEARCH_PASSWORD": "pw",
        "SMTP_SHIPPER_INDEX_PREFIX": "mail",
        "SMTP_SHIPPER_STATE_DIR": str(tmp_path / "state"),
        "SMTP_SHIPPER_DASHBOARDS_URL": "https://dash:5601",
        "SMTP_SHIPPER_LOG_LEVEL": "DEBUG",
    }
    s = config.load(env=env)
    assert ("https://a:9200", "https://b:9200") == s.opensearch.hosts
    assert ("shipper", "pw", "mail") == (s.opensearch.username, s.opensearch.password(), s.opensearch.index_prefix)
    assert (tmp_path / "state", "https://dash:5601", "debug") == (s.state_dir, s.dashboards.url, s.log_level)
    assert "smtp-deliveries" == config.load(env={"SMTP_SHIPPER_INDEX_PREFIX": ""}).opensearch.index_prefix


def test_state_dir_precedence(tmp_path: Path) -> None:
    """$STATE_DIRECTORY (systemd) > SMTP_SHIPPER_STATE_DIR > file; the first of several systemd dirs."""
    cfg = write(tmp_path / "c.yml", f"state_dir: {tmp_path / 'file'}\n")
    assert tmp_path / "file" == config.load(cfg, env={}).state_dir
    env = {"SMTP_SHIPPER_STATE_DIR": str(tmp_path / "env")}
    assert tmp_path / "env" == config.load(cfg, env=env).state_dir
    env["STATE_DIRECTORY"] = f"{tmp_path / 'systemd'}:{tmp_path / 'other'}"
    s = config.load(cfg, env=env)
    assert tmp_path / "systemd" == s.state_dir
    assert tmp_path / "systemd" / "dead-letter.ndjson" == s.dead_letter_path


def test_problem_names_the_environment_variable_or_flag(tmp_path: Path) -> None:
    """A bad value from the environment or a flag says where it came from, not the file."""
    cfg = write(tmp_path / "c.yml", "log_level: info\n")
    with pytest.raises(config.ConfigProblems) as info:
        config.load(cfg, env={"SMTP_SHIPPER_OPENSEARCH_HOSTS": "9200"})
    assert str(info.value).startswith(
        'environment SMTP_SHIPPER_OPENSEARCH_HOSTS: opensearch.hosts[0]: expected a URL like https://host:9200, got "9200"'
    )
    with pytest.raises(config.ConfigProblems) as info:
        config.load(cfg, env={}, overrides={"opensearch.index_prefix": "UP"})
    assert str(info.value).startswith('command line: opensearch.index_prefix: index names must be lower case, got "UP"')


def test_unknown_override_key_is_a_problem() -> None:
    """A command passing a dotted key that does not exist is told so (no silent typo)."""
    with pytest.raises(config.ConfigProblems) as info:
        config.load(env={}, overrides={"opensearch.index_prefx": "x"})
    assert 'command line: opensearch.index_prefx: unknown key\n  hint: did you mean "index_prefix"?' == str(info.value)


def test_none_override_means_not_given(tmp_path: Path) -> None:
    """A None override (an option left out) does not replace the file's value."""
    cfg = write(tmp_path / "c.yml", "opensearch:\n  index_prefix: from-file\n")
    assert "from-file" == config.load(cfg, env={}, overrides={"opensearch.index_prefix": None}).opensearch.index_prefix


# ------------------------------------------------------------------ secrets


def secret_config(tmp_path: Path, secret: str = "s3cret-Pa55") -> Path:
    pw = write(tmp_path / "pw", secret + "\n")
    pw.chmod(0o600)
    return write(tmp_path / "c.yml", "opensearch:\n  username: shipper\n  password_file: pw\n")


def test_password_is_read_at_call_time_and_never_shown(tmp_path: Path) -> None:
    """password() returns the stripped file content; repr, str and redacted_dict show '***' only."""
    s = config.load(secret_config(tmp_path), env={})
    assert "s3cret-Pa55" == s.opensearch.password()
    for text in (repr(s), str(s), repr(s.opensearch), str(s.opensearch), repr(s.redacted_dict())):
        assert "s3cret-Pa55" not in text
    assert "password='***'" in repr(s.opensearch)
    assert "***" == s.redacted_dict()["opensearch"]["password"]
    (tmp_path / "pw").write_text("rotated\n")
    assert "rotated" == s.opensearch.password()


def test_no_password_is_shown_as_none(tmp_path: Path) -> None:
    """Without any password source, repr has no password entry and redacted_dict says None."""
    s = config.load(env={})
    assert "password=" not in repr(s.opensearch)
    assert s.redacted_dict()["opensearch"]["password"] is None
    assert s.opensearch.password() is None


def test_environment_password_wins_and_password_env_is_read_late(tmp_path: Path) -> None:
    """$SMTP_SHIPPER_OPENSEARCH_PASSWORD beats the file; password_env is looked up when called."""
    env = {config.PASSWORD_ENV: "from-env"}
    assert "from-env" == config.load(secret_config(tmp_path), env=env).opensearch.password()
    cfg = write(tmp_path / "e.yml", "opensearch:\n  username: u\n  password_env: OS_PW\n")
    env2: dict[str, str] = {}
    s = config.load(cfg, env=env2)
    with pytest.raises(ConfigError) as info:
        s.opensearch.password()
    assert "opensearch.password_env: the environment variable OS_PW is not set" == info.value.message
    env2["OS_PW"] = "late"
    assert "late" == s.opensearch.password()
    assert "$OS_PW" == s.opensearch.password_source


def test_password_file_vanishing_after_load_is_a_config_error(tmp_path: Path) -> None:
    """A password file deleted after start gives a ConfigError naming the key, not a traceback."""
    s = config.load(secret_config(tmp_path), env={})
    (tmp_path / "pw").unlink()
    with pytest.raises(ConfigError) as info:
        s.opensearch.password()
    assert info.value.message.startswith(f"opensearch.password_file: cannot read {tmp_path / 'pw'}")


def test_secret_values_never_reach_error_messages(tmp_path: Path) -> None:
    """A password written into the file, into a URL or into password_env is not echoed back."""
    cfg = write(
        tmp_path / "c.yml",
        "opensearch:\n  hosts: ['https://u:Hunter2x@h:9200']\n  password: Hunter2x\n  password_env: 'Hunter2x!'\n",
    )
    with pytest.raises(ConfigError) as info:
        config.load(cfg, env={})
    assert 3 == len(info.value.problems)  # type: ignore[attr-defined]
    assert "Hunter2x" not in str(info.value)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o620])
def test_password_file_open_to_others_is_refused(tmp_path: Path, mode: int) -> None:
    """Any permission for group or others refuses the file, as ssh refuses a private key; the
    problem names the file and its mode and gives the chmod to run. Only the mode counts: root,
    who could read it anyway, is refused too."""
    cfg = secret_config(tmp_path)
    (tmp_path / "pw").chmod(mode)
    [problem] = problems_of(cfg)
    assert f"{cfg}:3" == problem.where and "opensearch.password_file" == problem.key
    assert f"password file {tmp_path / 'pw'} is accessible by " in problem.message
    assert f"(mode {mode:04o})" in problem.message
    assert problem.hint is not None and f"chmod 600 {tmp_path / 'pw'} " in problem.hint


def test_private_password_file_is_quiet(tmp_path: Path) -> None:
    """Modes 600 and 400 load without a warning."""
    cfg = secret_config(tmp_path)
    assert () == config.load(cfg, env={}).warnings
    (tmp_path / "pw").chmod(0o400)
    assert "s3cret-Pa55" == config.load(cfg, env={}).opensearch.password()


def test_password_file_opened_up_after_load_is_refused_when_read(tmp_path: Path) -> None:
    """The mode is checked again when the password is read (the daemon reconnecting, a rotated
    file): a ConfigError (exit 3) with the same words, for OpenSearch and Dashboards alike."""
    pw = write(tmp_path / "pw", "s3cret-Pa55\n")
    pw.chmod(0o600)
    cfg = write(tmp_path / "c.yml", "opensearch:\n  username: u\n  password_file: pw\ndashboards:\n  password_file: pw\n")
    s = config.load(cfg, env={})
    pw.chmod(0o644)
    for section, read in (("opensearch", s.opensearch.password), ("dashboards", s.dashboards.password)):
        with pytest.raises(ConfigError) as info:
            read()
        assert info.value.message.startswith(f"{section}.password_file: password file {pw} is accessible by its group and other users (mode 0644)")
        assert info.value.hint is not None and f"chmod 600 {pw}" in info.value.hint
        assert "s3cret-Pa55" not in str(info.value)


@pytest.mark.parametrize(
    "argv",
    [["check-config"], ["run", "--once"], ["setup"], ["backfill", "--no-progress", "x.log"], ["trace", "a@b.c"], ["status"]],
    ids=lambda argv: argv[0],
)
def test_every_command_refuses_an_open_password_file(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each command loads the configuration before doing anything else: exit status 3 and the
    chmod to run, before any connection is tried (the host here would refuse one)."""
    cfg = secret_config(tmp_path)
    (tmp_path / "pw").chmod(0o644)
    code = main([*argv, "--config", str(cfg), "--opensearch", "http://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert ExitStatus.CONFIG == code, err
    assert f"error: {cfg}:3: opensearch.password_file: password file {tmp_path / 'pw'} is accessible" in err
    assert f"chmod 600 {tmp_path / 'pw'}" in err


def test_other_warnings(tmp_path: Path) -> None:
    """verify_certs false, a password over http://, an unset password_env and an empty glob warn."""
    cfg = write(
        tmp_path / "c.yml",
        "opensearch:\n  hosts: [http://h:9200]\n  username: u\n  password_env: NOT_SET_HERE\n  verify_certs: false\n"
        f"inputs:\n  - paths: ['{tmp_path}/logs/*.log']\n",
    )
    warnings = "\n".join(config.load(cfg, env={}).warnings)
    for fragment in ("certificates are NOT verified", "sent unencrypted over http://", "NOT_SET_HERE is not set here", "matches no file"):
        assert fragment in warnings


def test_unreadable_file_names_the_user(tmp_path: Path) -> None:
    """A password file the running user cannot read is an error naming that user. Root reads
    every file, so as root the check runs in a child process that has become nobody."""
    if os.geteuid() != 0:
        cfg = secret_config(tmp_path)
        (tmp_path / "pw").chmod(0)
        [problem] = problems_of(cfg)
        assert "is not readable by user" in problem.message
        return
    shared = Path(tempfile.mkdtemp(prefix="smtp-shipper-test-"))  # tmp_path is closed to others
    try:
        shared.chmod(0o755)
        cfg = secret_config(shared)
        cfg.chmod(0o644)
        assert "is not readable by user nobody" in problem_as_nobody(cfg)
    finally:
        shutil.rmtree(shared)


def problem_as_nobody(cfg: Path) -> str:
    """The first problem config.load(cfg) finds when run as the user nobody (we are root)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        try:
            os.close(read_end)
            nobody = pwd.getpwnam("nobody")
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            try:
                config.load(cfg, env={})
                text = "loaded"
            except config.ConfigProblems as exc:
                text = exc.problems[0].message
            os.write(write_end, text.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as fh:
        text = fh.read().decode()
    os.waitpid(pid, 0)
    return text


# ------------------------------------------------------------------ paths


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """password_file, globs, rules_files and state_dir resolve against the file's directory, not the cwd."""
    etc = tmp_path / "etc"
    write(etc / "secrets" / "pw", "x\n").chmod(0o600)
    write(etc / "rules.yml", "rules: []\n")
    write(etc / "logs" / "SMTPOutboundConversation.log", "")
    write(
        etc / "c.yml",
        "opensearch:\n  password_file: secrets/pw\ninputs:\n  - paths: [logs/SMTP*.log]\n"
        "reasons:\n  rules_files: [rules.yml]\nstate_dir: state\n",
    )
    monkeypatch.chdir(tmp_path)
    s = config.load(Path("etc/c.yml"), env={})
    assert etc / "c.yml" == s.source
    assert etc / "secrets" / "pw" == s.opensearch.password_file
    assert (str(etc / "logs" / "SMTP*.log"),) == s.inputs[0].paths
    assert [etc / "logs" / "SMTPOutboundConversation.log"] == s.inputs[0].files()
    assert (etc / "rules.yml",) == s.reasons.rules_files
    assert etc / "state" == s.state_dir


def test_relative_state_dir_from_the_environment_is_relative_to_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Values from the environment are not relative to the config file."""
    cfg = write(tmp_path / "etc" / "c.yml", "log_level: info\n")
    monkeypatch.chdir(tmp_path)
    assert tmp_path / "st" == config.load(cfg, env={"SMTP_SHIPPER_STATE_DIR": "st"}).state_dir


def test_check_files_false_accepts_missing_files(tmp_path: Path) -> None:
    """check_files=False validates everything but the file system."""
    cfg = write(tmp_path / "c.yml", "opensearch:\n  password_file: /no/such/pw\n  ca_certs: /no/ca.pem\n")
    assert Path("/no/such/pw") == config.load(cfg, env={}, check_files=False).opensearch.password_file
    assert 2 == len(problems_of(cfg))


def test_input_files_leave_out_excluded(tmp_path: Path) -> None:
    """exclude globs match the file name ("*.gz") or the whole path."""
    for name in ("a.log", "b.log.gz", "c.log"):
        write(tmp_path / "logs" / name, "")
    cfg = write(tmp_path / "c.yml", "inputs:\n  - paths: ['logs/*']\n    exclude: ['*.gz', '*/c.log']\n")
    [inp] = config.load(cfg, env={}).inputs
    assert [tmp_path / "logs" / "a.log"] == inp.files()


def test_input_values(tmp_path: Path) -> None:
    """A full input section comes back typed; a single string is a list of one; zone is a ZoneInfo."""
    cfg = write(
        tmp_path / "c.yml",
        "inputs:\n  - paths: /opt/x/*.log\n    direction: Outbound\n    timezone: Europe/Berlin\n    start_at: end\n",
    )
    [inp] = config.load(cfg, env={}, check_files=False).inputs
    assert config.InputSettings(("/opt/x/*.log",), (), "xeams", "outbound", "Europe/Berlin", "end") == inp
    assert "Europe/Berlin" == str(inp.zone)


def test_settings_are_frozen() -> None:
    """Nobody changes the settings after validation."""
    s = config.load(env={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.opensearch.index_prefix = "x"  # type: ignore[misc]


# ------------------------------------------------------------------ the example config


def test_example_config_loads() -> None:
    """deploy/smtp-shipper.example.yml is valid (its paths belong to a real server, so not checked)."""
    s = config.load(EXAMPLE, env={}, check_files=False)
    assert s.opensearch.hosts[0].startswith("https://")
    assert s.opensearch.password_file is not None
    assert ["outbound", "inbound"] == [i.direction for i in s.inputs]
    assert "smtp-deliveries" == s.opensearch.index_prefix


def test_example_config_mentions_every_key() -> None:
    """Every key of the schema is in the example (commented out or set), and no deprecated one."""
    text = EXAMPLE.read_text()
    for dotted in config.all_keys():
        assert f"{dotted.rsplit('.', 1)[-1]}:" in text, dotted
    for dotted in config.DEPRECATED:
        assert f"{dotted.rsplit('.', 1)[-1]}:" not in text, dotted


def documented_keys() -> set[str]:
    """The keys of the table in docs/configuration.md (`.x` continues the section of the key before)."""
    table = (ROOT / "docs" / "configuration.md").read_text().split("\n## Keys\n", 1)[1].split("\n#", 1)[0]
    keys: set[str] = set()
    for line in table.splitlines():
        if line.startswith("| `"):
            before = ""
            for name in re.findall(r"`([^`]+)`", line.split("|")[1]):
                before = before.rsplit(".", 1)[0] + name if name.startswith(".") else name
                keys.add(before)
    return keys


def test_the_documented_keys_are_the_keys() -> None:
    """docs/configuration.md documents every key (itself, or the section it belongs to) and no
    key the settings do not have."""
    keys, documented = set(config.all_keys()), documented_keys()
    assert set() == documented - keys
    for dotted in keys:
        assert any(d == dotted or dotted.startswith(d + ".") or d.startswith(dotted + ".") for d in documented), dotted


def test_every_key_is_read_by_something() -> None:
    """Each key's name is read as an attribute somewhere outside the configuration modules (code
    or a template): a key validated and documented but read by nothing fails here by name."""
    skip = {"config.py", "settings.py", "settings_checks.py"}
    sources = [p for p in (ROOT / "shipper").rglob("*.py") if p.name not in skip]
    sources += [*(ROOT / "mappings").glob("*.j2"), *(ROOT / "dashboards").glob("*.j2")]
    text = "\n".join(p.read_text(encoding="utf-8") for p in sources)
    unread = [k for k in config.all_keys() if not re.search(rf"\.{re.escape(k.rsplit('.', 1)[-1].removesuffix('[]'))}\b", text)]
    assert [] == unread


def test_deprecated_key_loads_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """pipeline.flush_interval, read by nothing, still loads: one warning names the key and says
    it is ignored; its value is not even checked; the other keys of the section are read."""
    cfg = write(tmp_path / "c.yml", "pipeline:\n  flush_interval: soon\n  status_interval: 30\n")
    with caplog.at_level(logging.WARNING, logger="shipper.config"):
        s = config.load(cfg, env={})
    assert 30.0 == s.pipeline.status_interval
    [warning] = s.warnings
    assert warning.startswith(f"{cfg}:2: pipeline.flush_interval: no longer used and ignored (")
    assert [warning] == [r.getMessage() for r in caplog.records]
    assert not set(config.DEPRECATED) & set(config.all_keys())


# ------------------------------------------------------------------ command-line helpers


def test_settings_from_args(tmp_path: Path) -> None:
    """--config, repeated/comma --opensearch and --index-prefix become load() overrides."""
    cfg = write(tmp_path / "c.yml", "opensearch:\n  index_prefix: from-file\n")
    parser = argparse.ArgumentParser()
    config.add_config_argument(parser)
    args = parser.parse_args(["--config", str(cfg), "--opensearch", "https://a:9200,https://b:9200", "--opensearch", "https://c:9200", "--index-prefix", "flag"])
    s = config.settings_from_args(args)
    assert ("https://a:9200", "https://b:9200", "https://c:9200") == s.opensearch.hosts
    assert ("flag", cfg) == (s.opensearch.index_prefix, s.source)
    assert "from-file" == config.settings_from_args(parser.parse_args(["--config", str(cfg)])).opensearch.index_prefix


# ------------------------------------------------------------------ check-config end to end


def test_check_config_ok_prints_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """OK: <path>, hosts, prefix, state_dir, and the files each glob matches now; exit 0."""
    for name in ("SMTPOutboundConversation.log", "SMTPOutboundConversation.log.1"):
        write(tmp_path / "logs" / name, "")
    cfg = write(
        tmp_path / "c.yml",
        "opensearch:\n  hosts: [https://s:9200]\n  index_prefix: mail\n"
        f"inputs:\n  - paths: ['logs/SMTPOutboundConversation*']\n    direction: outbound\nstate_dir: {tmp_path / 'st'}\n",
    )
    assert 0 == main(["check-config", "--config", str(cfg)])
    out = capsys.readouterr().out
    assert out.startswith(f"OK: {cfg}\n")
    assert "opensearch: https://s:9200 (no authentication)" in out
    assert "index prefix: mail (indices mail-YYYY.MM.DD)" in out
    assert f"state_dir: {tmp_path / 'st'}" in out
    assert f"{tmp_path / 'logs' / 'SMTPOutboundConversation*'}: 2 files now" in out


def test_check_config_errors_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every problem on stderr, exit status 3 (CONFIG)."""
    cfg = write(tmp_path / "c.yml", "opensearch:\n  hosts: ['9200']\nlog_level: loud\n")
    assert ExitStatus.CONFIG == main(["check-config", "--config", str(cfg)])
    err = capsys.readouterr().err
    assert f'{cfg}:2: opensearch.hosts[0]: expected a URL like https://host:9200, got "9200"' in err
    assert f"{cfg}:3: log_level: expected one of debug, info, warning, error" in err


def test_check_config_yaml_error_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A YAML syntax error is reported with line and column, exit 3."""
    cfg = write(tmp_path / "c.yml", "opensearch:\n  hosts: [\n")
    assert 3 == main(["check-config", "--config", str(cfg)])
    assert f"{cfg}:3:1: YAML syntax error" in capsys.readouterr().err


def test_check_config_show_masks_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--show prints the effective configuration as YAML, password as '***', never the secret."""
    cfg = secret_config(tmp_path)
    assert 0 == main(["check-config", "--config", str(cfg), "--show", "--index-prefix", "shown"])
    out = capsys.readouterr().out
    assert "s3cret-Pa55" not in out
    shown = yaml.safe_load(out[out.index("opensearch:\n") :])
    assert ("***", "shipper", "shown") == (shown["opensearch"]["password"], shown["opensearch"]["username"], shown["opensearch"]["index_prefix"])
    assert f"user shipper, password from file {tmp_path / 'pw'}" in out


def test_check_config_without_file_uses_defaults(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """No --config, no $SMTP_SHIPPER_CONFIG, no /etc file: OK on the built-in defaults."""
    monkeypatch.setenv("SMTP_SHIPPER_INDEX_PREFIX", "envprefix")
    assert 0 == main(["check-config"])
    out = capsys.readouterr().out
    assert out.startswith("OK: no configuration file, built-in defaults\n")
    assert "opensearch: http://127.0.0.1:9200" in out
    assert "index prefix: envprefix" in out


def test_check_config_bad_flag_value(capsys: pytest.CaptureFixture[str]) -> None:
    """A bad --opensearch value is blamed on the command line."""
    assert 3 == main(["check-config", "--opensearch", "9200"])
    assert "command line: opensearch.hosts[0]: expected a URL" in capsys.readouterr().err


def test_check_config_warnings_and_no_file_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Warnings are printed after OK; --no-file-checks accepts files of another machine."""
    cfg = write(tmp_path / "c.yml", "opensearch:\n  verify_certs: false\n  ca_certs: /elsewhere/ca.pem\n")
    assert 3 == main(["check-config", "--config", str(cfg)])
    capsys.readouterr()
    assert 0 == main(["check-config", "--config", str(cfg), "--no-file-checks"])
    out = capsys.readouterr().out
    assert "\nwarning: " in out and "certificates are NOT verified" in out


def test_redacted_dict_is_the_effective_configuration(tmp_path: Path) -> None:
    """redacted_dict(), written back as YAML (without the masked passwords), loads to equal settings."""
    s = config.load(EXAMPLE, env={}, check_files=False)
    data = s.redacted_dict()
    del data["opensearch"]["password"], data["dashboards"]["password"]
    again = config.load(write(tmp_path / "again.yml", yaml.safe_dump(data)), env={}, check_files=False)
    assert s == again


def test_inputs_are_hashable_and_dashboards_password(tmp_path: Path) -> None:
    """InputSettings can key a dict (reload compares them); dashboards.password() reads its own source."""
    cfg = write(tmp_path / "c.yml", "dashboards:\n  url: https://d:5601\n  username: u\n  password_env: DASH_PW\n")
    s = config.load(cfg, env={"DASH_PW": "dash-secret"})
    assert "dash-secret" == s.dashboards.password()
    assert "dash-secret" not in repr(s.dashboards)
    assert {config.InputSettings(("/a/*.log",)): 1}[config.InputSettings(("/a/*.log",))] == 1


def test_matching_client_certificate_and_key_load() -> None:
    """A certificate with its own key passes (the mismatch fixtures prove the check bites)."""
    cfg = BAD / "files"
    s = config.load(overrides={"opensearch.client_cert": str(cfg / "client.pem"), "opensearch.client_key": str(cfg / "client.key"), "opensearch.ca_certs": str(cfg / "client.pem")}, env={})
    assert (cfg / "client.pem", cfg / "client.key") == (s.opensearch.client_cert, s.opensearch.client_key)
