"""Alpha Panda market feed: Kite Connect ticker → Kafka/Redpanda, nothing lost silently."""

__version__ = "0.1.0"
