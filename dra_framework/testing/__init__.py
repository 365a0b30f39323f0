"""Test tools for backend authors: a kubelet-wire client, a fake API server, claim builders."""
