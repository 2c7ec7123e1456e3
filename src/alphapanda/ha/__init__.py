"""Hot standby: several feeds in one group, exactly one of them publishing.

Leadership is a PostgreSQL session-level advisory lock (``lease``), fencing a Kafka
transactional id shared by the group (``MessageProducer.start_transactions``), a warm
standby holds what its own connection receives (``gate``) and on takeover publishes per
instrument what follows the active's last published tick (``tail``). ``controller``
ties them to the feed service.
"""
