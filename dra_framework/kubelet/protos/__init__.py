"""Protocol Buffers sources of the kubelet gRPC APIs and the command that compiles them.

The ``.proto`` files live under ``protos/dra_framework/kubelet/_proto/...`` so that, compiled with
``-I dra_framework/kubelet/protos``, their import paths are
``dra_framework/kubelet/_proto/<api>/<version>/api.proto``: the generated modules then import
each other as ``dra_framework.kubelet._proto...`` and every file has a distinct name in the shared
descriptor pool (upstream, all of them are ``api.proto``).

Regenerate the committed modules in ``dra_framework/kubelet/_proto`` with
``python -m dra_framework.kubelet.protos.generate``
(see :mod:`dra_framework.kubelet.protos.generate`).
"""
