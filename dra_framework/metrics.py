"""Prometheus metrics of the kubelet plugin.

Defined once per process on the default registry (several drivers in one process share them and
are told apart by the ``driver`` label) and exposed by ``serve --metrics-address``.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

OPERATIONS = Counter(
    "dra_framework_claim_operations_total",
    "Claims processed by NodePrepareResources / NodeUnprepareResources, by outcome.",
    ["driver", "operation", "outcome"],
)
OPERATION_ERRORS = Counter(
    "dra_framework_claim_errors_total",
    "Claims that failed, by operation and error kind.",
    ["driver", "operation", "kind"],
)
LATENCY = Histogram(
    "dra_framework_claim_operation_seconds",
    "Time to prepare or unprepare one claim (API read included for prepare).",
    ["driver", "operation"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 45),
)
RPC_LATENCY = Histogram(
    "dra_framework_rpc_seconds",
    "Duration of kubelet RPCs (a batch of claims).",
    ["driver", "method"],
    buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 45),
)
PREPARED_CLAIMS = Gauge(
    "dra_framework_prepared_claims",
    "Claims prepared at the last start-up recovery plus changes since.",
    ["driver"],
)
STATE_CORRUPTIONS = Counter(
    "dra_framework_state_files_set_aside_total",
    "Checkpoint records (or whole databases) found corrupt and set aside at start.",
    ["driver"],
)
PREPARE_STAGES = Histogram(
    "dra_framework_prepare_stage_seconds",
    "Time a NodePrepareResources call spends in each stage: read (claim source), decode "
    "(allocation and opaque config), lock (waiting for the state lock), admit (checks against "
    "the checkpoint), record (intent transaction), backend (dra_prepare_claim), cdi (spec "
    "files), commit (transaction), answer (the gRPC response).",
    ["driver", "stage"],
    buckets=(0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.25, 1, 5, 45),
)
STAGES = ("read", "decode", "lock", "admit", "record", "backend", "cdi", "commit", "answer")
REGISTRATIONS = Counter(
    "dra_framework_registration_status_total",
    "NotifyRegistrationStatus calls from the kubelet, by verdict.",
    ["driver", "registered"],
)


def serve(address: str) -> None:
    """Serve /metrics on ``host:port`` (``:9090`` = all interfaces) in a daemon thread."""
    host, _, port = address.rpartition(":")
    start_http_server(int(port), addr=host or "0.0.0.0")
