"""The write-ahead log of raw frames: what makes the feed crash-proof.

Every binary frame read from a Kite socket is appended here, with its receive time and
shard, before it is decoded; a segment is deleted once every tick decoded from it is
acked, dropped by policy or in the spool. After a crash (SIGKILL, OOM, power cut) the
next start reads what is left, decodes it again and publishes exactly the ticks the
topic does not hold yet.

- ``segments``: the on-disk format (framed-log records in numbered segment files) and
  how to read it back, damage included;
- ``writer``: the writer thread with group commit (the socket readers never wait on
  the disk) and the pause when the disk is full;
- ``retention``: which segments still hold unresolved ticks, and the watermark;
- ``tails``: the newest position per instrument already in ``market.ticks``;
- ``recovery``: what to publish again at start.
"""
