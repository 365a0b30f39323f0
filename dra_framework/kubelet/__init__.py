"""The kubelet side: plugin registration, the DRA gRPC services and their unix sockets.

Owns ``plugin`` (sockets, registration, start/stop order), ``servers`` (``DRAPlugin`` v1 and
v1beta1, ``DRAResourceHealth``, registration), the ``.proto`` sources in ``protos/`` and the
code generated from them in ``_proto/``.  It turns gRPC requests into calls of the node layer's
preparer and answers from its results.

May import: ``dra_framework.node`` and the contract modules at the package's top level (and
``grpc``, which only this layer and ``dra_framework.testing.kubelet`` import).  Never the API
plane or the commands.
"""
