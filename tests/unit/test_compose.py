"""docker-compose.yml cannot run here (no Docker engine); keep it honest by checking it
against the settings and the CLI it drives."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from alphapanda.settings import TOP_LEVEL_FIELDS, Settings, env_name

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def _known_env_names() -> set[str]:
    names = {"ALPHAPANDA_CONFIG_FILE"}
    for group, field in Settings.model_fields.items():
        if group in TOP_LEVEL_FIELDS:
            names.add(env_name((group,)))
            continue
        assert field.annotation is not None
        for name in field.annotation.model_fields:  # type: ignore[union-attr]
            names.add(env_name((group, name)))
    return names


def test_compose_has_the_stack_with_healthchecks() -> None:
    services = _compose()["services"]
    assert {"redpanda", "redis", "postgres", "feed"} <= set(services)
    for name in ("redpanda", "redis", "postgres"):
        assert "healthcheck" in services[name], name
    depends = services["feed"]["depends_on"]
    assert {k: v["condition"] for k, v in depends.items()} == {
        "redpanda": "service_healthy",
        "redis": "service_healthy",
        "postgres": "service_healthy",
    }


def test_feed_environment_names_are_real_settings() -> None:
    env = _compose()["services"]["feed"]["environment"]
    unknown = set(env) - _known_env_names()
    assert not unknown, f"compose sets variables the settings do not know: {unknown}"
    # The in-network addresses, not the host's loopback ports.
    assert env["ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS"] == "redpanda:9092"
    assert env["ALPHAPANDA_REDIS__URL"].startswith("redis://:${REDIS_PASSWORD:?")
    assert env["ALPHAPANDA_REDIS__URL"].endswith("@redis:6379/0")
    assert "@postgres:5432/" in env["ALPHAPANDA_DATABASE__URL"]


def test_env_example_names_are_real_settings() -> None:
    lines = (ROOT / ".env.example").read_text().splitlines()
    names = {line.split("=", 1)[0] for line in lines if re.match(r"^ALPHAPANDA_\w+=", line)}
    assert names, ".env.example lists no settings"
    assert names <= _known_env_names(), names - _known_env_names()


def test_feed_port_spool_and_grace_period_match_the_settings() -> None:
    feed = _compose()["services"]["feed"]
    port = feed["environment"]["ALPHAPANDA_API__PORT"]
    assert any(p.endswith(f":{port}:{port}") for p in feed["ports"]), feed["ports"]
    spool = feed["environment"]["ALPHAPANDA_FEED__SPOOL_DIR"]
    assert any(v.endswith(":" + spool) for v in feed["volumes"]), "the spool must be on a volume"
    grace = int(feed["stop_grace_period"].rstrip("s"))
    assert grace > Settings().feed.shutdown_deadline, "compose would SIGKILL the feed mid-drain"


def test_dockerfile_runs_the_cli_and_exposes_the_api() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["alphapanda"]' in dockerfile
    assert "EXPOSE 18080" in dockerfile
    assert "-c constraints.txt" in dockerfile


LOOPBACK_PUBLISH = re.compile(r"^(127\.0\.0\.1|\$\{PUBLISH_HOST:-127\.0\.0\.1\}):\d+:\d+$")


def test_every_published_port_is_bound_to_loopback_by_default() -> None:
    services = _compose()["services"]
    published = [(name, p) for name, svc in services.items() for p in svc.get("ports", [])]
    assert published
    for name, port in published:
        assert LOOPBACK_PUBLISH.match(port), f"{name} publishes {port} beyond loopback"
    # Opening a port is documented where the operator looks first.
    text = (ROOT / "docker-compose.yml").read_text()
    assert "PUBLISH_HOST=0.0.0.0" in text


def test_secrets_are_required_and_have_no_default() -> None:
    # The optional simulator passes them on as they are (it refuses dev defaults itself).
    text = (ROOT / "docker-compose.yml").read_text().split("\n  simulator:")[0]
    for secret in (
        "POSTGRES_PASSWORD",
        "REDIS_PASSWORD",
        "ALPHAPANDA_API__API_KEY",
        "ALPHAPANDA_KITE__API_KEY",
        "ALPHAPANDA_KITE__API_SECRET",
    ):
        uses = re.findall(r"\$\{" + secret + r"(:?[-?])?([^}]*)\}", text)
        assert uses, f"{secret} is not used"
        for op, _ in uses:
            assert op == ":?", f"${{{secret}}} must be required (:?), not {op or 'bare'}"
    for dev in ("dev-db-password", "dev-api-key", "dev-api-secret", "dev-access-token"):
        assert dev not in text


def test_redis_requires_a_password_and_the_feed_runs_in_production() -> None:
    services = _compose()["services"]
    assert "--requirepass" in services["redis"]["command"]
    assert services["redis"]["environment"]["REDISCLI_AUTH"].startswith("${REDIS_PASSWORD:?")
    env = services["feed"]["environment"]
    assert env["ALPHAPANDA_ENV"] == "production"
    assert env["ALPHAPANDA_KITE__ACCESS_TOKEN"] == ""
    sim = services["simulator"]["command"]
    assert "--admin-host" in sim  # opened on purpose, so its secrets are enforced


def _unit_file() -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in (ROOT / "deploy" / "systemd" / "alphapanda-feed.service").read_text().splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        elif "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            current[key] = value
    return sections


def test_systemd_unit_drains_restarts_and_runs_as_its_own_user() -> None:
    unit = _unit_file()
    service = unit["Service"]
    assert service["User"] == "alphapanda"
    assert service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) > Settings().feed.shutdown_deadline
    assert service["Restart"] == "on-failure"
    # Exit 2 means bad configuration: restarting would only loop.
    assert service["RestartPreventExitStatus"] == "2"
    assert int(service["LimitNOFILE"]) >= 4096
    assert service["ExecStart"].endswith("alphapanda feed")
    assert "StartLimitBurst" in unit["Unit"]
