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
    failed_register_limit: int = 10  # per address per failed_register_window, then dropped
    failed_register_window: float = 60.0
    error_interval: float = 1.0  # at most one ERROR per address per this many seconds
    push_burst: int = 20  # datagrams to one session before yielding to the loop
    push_pace: float = 0.005  # pause between bursts of catch-up pushes
    catch_up_page: int = 200  # unread notifications loaded per query at REGISTER
    db_threads: int = 4
    # Longer than any client keeps an idle connection (httpx: 5 s): the client must be the one
    # to close it, or a request sent as the server closes is lost with a ReadError.
    http_keep_alive: float = 75.0
