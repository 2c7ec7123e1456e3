"""Pipeline metrics: sources expose samples; the collector ships them to Redis and Prometheus."""
