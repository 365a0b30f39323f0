"""Node state: what a driver holds on its node, and the one path that changes it.

Owns the prepare/unprepare state machine (``prepare``) and the admission and time keeping of
each kubelet call (``calls``), the crash-safe per-claim checkpoint
(``checkpoint``), the per-claim CDI specs (``cdi``), the cross-process lock of a rolling update
(``locking``), the decoding of a claim's allocation into this driver's devices (``allocation``),
the crash points that recovery is tested with (``faults``), and the protocols (``ports``) through
which the outer layers feed it claims and hear of its results.

May import: the contract modules at the package's top level only.  It knows nothing of gRPC,
the API server or the command line; the layers above implement ``ports`` and call in.
"""
