"""Store backends, one module each, imported lazily by URL scheme (``qapp.state.BACKENDS``).

- :mod:`~qapp.store.backends.memory`: one process, bounded per namespace;
- :mod:`~qapp.store.backends.sqlite`: every worker on one host;
- :mod:`~qapp.store.backends.redis`: every worker on every host;
- :mod:`~qapp.store.backends.redis_sentinel` and
  :mod:`~qapp.store.backends.redis_cluster`: the same,
  followed across failovers (URLs and durable writes: :mod:`~qapp.store.backends.redis_urls`);
- :mod:`~qapp.store.backends.postgres`: every worker on every host, in a database you already run;
- :mod:`~qapp.store.backends.base`: the base of the shared ones (polling lock, batched incr),
  with :mod:`~qapp.store.backends.coalesce`, the batcher;
- :mod:`~qapp.store.backends.sqlite_keys`, :mod:`~qapp.store.backends.postgres_keys` and
  :mod:`~qapp.store.backends.redis_keys`: ttls, many keys at once and prefix scans;
  :mod:`~qapp.store.backends.sweep`: the batched sweep of expired rows.
"""
