"""The commands: each assembles the layers below into a process, never re-implementing them.

Owns the command line (``cli``: ``serve``, ``controller``, ``doctor``, ``backends``) and what
each command runs: ``serve`` (per backend: claim source → preparer → kubelet plugin, with the
claim status writer and the slice publisher), ``controller`` (cluster-wide pools under leader
election) and ``doctor`` (diagnostics of a cluster and a driver).

May import every layer: ``dra_framework.kubelet``, ``dra_framework.api``, ``dra_framework.node``
and the contract.  Nothing below imports it; only ``dra_framework.testing.harness`` runs
``serve``'s assembly in-process, so that tests exercise the production stack.
"""
