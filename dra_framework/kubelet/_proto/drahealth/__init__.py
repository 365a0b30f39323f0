"""Generated kubelet gRPC modules; do not edit.  Regenerate with ``python -m dra_framework.kubelet.protos.generate``."""
