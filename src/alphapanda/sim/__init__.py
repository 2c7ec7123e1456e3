"""The Kite exchange simulator (``alphapanda sim``): a loopback stand-in for Kite's ticker.

Pure pieces: :mod:`.market` (seeded random walks; the ``volume_traded`` ledger),
:mod:`.schedule` (tick rate → which instruments tick when), :mod:`.subscriptions`
(client messages → who gets what, in which mode), :mod:`.sessions` (API key, access
tokens, Kite's login). Shells: :mod:`.server` (WebSocket server, batched sender, faults)
and :mod:`.admin` (fault switches, stats and ``/session/token`` over HTTP).
"""
