"""Store backends, one module each, imported lazily by URL scheme (``qapp.state.BACKENDS``).

- :mod:`~qapp.backends.memory`: one process, bounded per namespace;
- :mod:`~qapp.backends.sqlite`: every worker on one host;
- :mod:`~qapp.backends.redis`: every worker on every host;
- :mod:`~qapp.backends.redis_sentinel` and :mod:`~qapp.backends.redis_cluster`: the same,
  followed across failovers (URLs and durable writes: :mod:`~qapp.backends.redis_urls`);
- :mod:`~qapp.backends.postgres`: every worker on every host, in a database you already run;
- :mod:`~qapp.backends.base`: the base of the shared ones (polling lock, batched incr),
  with :mod:`~qapp.backends.coalesce`, the batcher.
"""
