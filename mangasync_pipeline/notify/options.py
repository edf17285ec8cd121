"""Tunables of the notification server; the defaults are the protocol's (PROTOCOL.md)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerOptions:
    heartbeat: float = 30.0  # seconds announced in REGISTERED; sessions end after 3 x this
    ack_timeout: float = 2.0  # CoAP ACK_TIMEOUT: first retransmission after [2, 3] s
    ack_random_factor: float = 1.5
    max_retransmit: int = 4
    send_budget: int = 30  # notifications per user per budget_window
    budget_window: float = 60.0
    register_window: float = 60.0  # |now - ts| allowed in REGISTER
    nonce_ttl: float = 120.0
    # REGISTERs are checked only from addresses that proved they receive (a cookie, valid for
    # cookie_period to twice that). Failed ones count per (source IP, user): after the limit,
    # each further failure blocks that pair for backoff_base x 2^n seconds, at most
    # backoff_max. A source's own refusals (over its share of the budget, blocked pairs,
    # malformed REGISTERs) count against that source, with source_refusal_limit.
    cookie_period: float = 30.0
    failed_register_limit: int = 10
    source_refusal_limit: int = 50
    backoff_base: float = 1.0
    backoff_max: float = 300.0
    failed_register_window: float = 600.0  # a source or pair is forgotten after this quiet
    # REGISTERs checked per second, all sources together, shared fairly by source IP.
    register_budget: float = 5000.0
    max_sessions_per_user: int = 16  # devices at once; a new one ends the oldest
    user_misses: float = 20.0  # lookups per second of names not in the in-memory users table
    users_refresh: float = 5.0  # seconds between re-reads of the users table
    register_batch_delay: float = 0.005  # REGISTERs gathered into one database statement
    amplification: float = 3.0  # bytes to an unvalidated address per byte received from it
    error_interval: float = 1.0  # at most one ERROR per address per this many seconds
    push_burst: int = 20  # datagrams to one session before yielding to the loop
    push_pace: float = 0.005  # pause between bursts of catch-up pushes
    catch_up_page: int = 200  # unread notifications loaded per query at REGISTER
    db_threads: int = 4
    # Longer than any client keeps an idle connection (httpx: 5 s): the client must be the one
    # to close it, or a request sent as the server closes is lost with a ReadError.
    http_keep_alive: float = 75.0
    # Slow or piled-up clients: connections one address may hold, and the seconds a request's
    # headers may take (from the connection, or from the first byte of the next request).
    http_connections_per_client: int = 128
    http_connections_total: int | None = None  # None: what the descriptor limit allows
    http_header_timeout: float = 10.0
    secret_key: bytes | None = None  # the master key; None: from the settings (tokens.py)
