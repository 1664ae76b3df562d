"""The qapp service: the race lab, user state and a cache, built on qapp's library.

Its blueprints live here, one module a concern; :mod:`qapp.routes` is its URL
map and :func:`qapp.app.create_app` builds it (``qapp.asgi:app`` is the app
that servers run). It uses only the public names of :mod:`qapp.state` and
:mod:`qapp.ext`, as any app adopting the library would.
"""
