"""What only qapp's own suite and benchmarks need: network namespaces and a Redis Cluster.

Outside the package on purpose: these need root (network namespaces) or a
whole Redis topology, and a user of qapp needs neither. Users prove their
own routes with :mod:`qapp.testing`; ``qapp race --failover``'s Sentinel is
:mod:`qapp.tools.sentinel`.
"""
