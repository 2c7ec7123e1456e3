"""How every Kafka client of the project authenticates: one place, from the settings.

Managed Kafka services (Confluent Cloud, Redpanda Cloud, MSK) want SASL over TLS. The
producer, the topic admin, ``doctor`` and the benchmarks' clients all take their
security settings from ``security_config`` (librdkafka names), so none of them can be
forgotten; ``aiokafka_security`` gives the same for aiokafka-based consumers.
"""

from __future__ import annotations

import ssl
from typing import Any

from alphapanda.settings import KafkaSettings


def security_config(settings: KafkaSettings) -> dict[str, Any]:
    """librdkafka (confluent-kafka) configuration keys for ``settings``' security."""
    protocol = settings.security_protocol
    config: dict[str, Any] = {"security.protocol": protocol.lower()}
    if protocol.startswith("SASL"):
        config["sasl.mechanism"] = settings.sasl_mechanism
        config["sasl.username"] = settings.sasl_username
        config["sasl.password"] = settings.sasl_password.get_secret_value()
    if protocol in ("SSL", "SASL_SSL"):
        if settings.ssl_ca_location is not None:
            config["ssl.ca.location"] = str(settings.ssl_ca_location)
        if settings.ssl_certificate_location is not None:
            config["ssl.certificate.location"] = str(settings.ssl_certificate_location)
        if settings.ssl_key_location is not None:
            config["ssl.key.location"] = str(settings.ssl_key_location)
    return config


def aiokafka_security(settings: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments for aiokafka clients (consumers) with the same security."""
    protocol = settings.security_protocol
    kwargs: dict[str, Any] = {"security_protocol": protocol}
    if protocol.startswith("SASL"):
        kwargs["sasl_mechanism"] = settings.sasl_mechanism
        kwargs["sasl_plain_username"] = settings.sasl_username
        kwargs["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    if protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(
            cafile=str(settings.ssl_ca_location) if settings.ssl_ca_location else None
        )
        if settings.ssl_certificate_location is not None:
            context.load_cert_chain(
                str(settings.ssl_certificate_location),
                str(settings.ssl_key_location) if settings.ssl_key_location else None,
            )
        kwargs["ssl_context"] = context
    return kwargs
