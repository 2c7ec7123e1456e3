"""The takeover's tail readers: consumer settings (the reads themselves run against the
real broker in tests/integration/test_ha_failover.py)."""

from __future__ import annotations

from pydantic import SecretStr

from alphapanda.ha.tail import tail_config
from alphapanda.settings import KafkaSettings


def test_the_tail_readers_read_committed_records_with_the_brokers_security() -> None:
    kafka = KafkaSettings(
        bootstrap_servers="broker:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="feed",
        sasl_password=SecretStr("s3cret"),
    )
    config = tail_config(kafka, "alphapanda-ha-follower")
    assert config["bootstrap.servers"] == "broker:9093"
    assert config["group.id"] == "alphapanda-ha-follower"
    assert config["isolation.level"] == "read_committed"
    assert config["enable.auto.commit"] is False
    assert (config["security.protocol"], config["sasl.username"], config["sasl.password"]) == (
        "sasl_ssl",
        "feed",
        "s3cret",
    )


def test_a_bare_bootstrap_string_reads_without_security() -> None:
    config = tail_config("127.0.0.1:19092", "alphapanda-ha-takeover")
    assert config["bootstrap.servers"] == "127.0.0.1:19092"
    assert "security.protocol" not in config
