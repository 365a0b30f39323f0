"""The API plane: everything the driver reads from and writes to the Kubernetes API server.

Owns raw JSON access on the official client's connection (``rest``, ``kubeconfig``, with
``transport`` writing GETs by hand on its kept-alive connections; every answer decoded by
``jsondecode``, which no depth or integer size can make fail), the list+watch loop the watch
caches share (``listwatch``), discovery of the served ``resource.k8s.io`` version and
conversion at the edge (``apiversions``), the claim sources the preparer reads from
(``podclaims``: the claims of this node's pods, read ahead, the default; ``claimcache``: a watch
of every claim of the cluster; ``claimreader``: a live GET), the claim ``status.devices`` writer
(``claimstatus``, with ``rawjson`` for opaque parameters kept byte for byte), ResourceSlice
building, validation and publishing (``slices``, ``slicevalidation``, ``publisher``) and Lease
leader election (``leader``).

May import: ``dra_framework.node`` (it implements the node's ``ports``) and the contract
modules at the package's top level (and ``kubernetes`` / ``urllib3``, confined to ``rest`` and
``kubeconfig``).  Never the kubelet side or the commands.
"""
