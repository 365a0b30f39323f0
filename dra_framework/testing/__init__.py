"""Test tools for backend authors: a kubelet-wire client, a fake API server, claim builders.

The test doubles (``kubelet``: the kubelet's side of the sockets; ``fakeapi``: an API server the
real ``kubernetes`` client talks to; ``claims``; ``envtest``: a real etcd + kube-apiserver) sit
beside the layers, not above them: they import only the contract, the generated kubelet protocol
and the API plane's client configuration, so any command may use them.  ``harness`` (a whole
node in one process) and ``demo`` run the production assembly of ``commands.serve``.
"""
