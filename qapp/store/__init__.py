"""The store layer: one async key-value interface over memory, SQLite, Redis and PostgreSQL.

Its front door is :mod:`qapp.state`, which gathers the public names. This
package imports nothing on its own, so that ``import qapp.state`` loads no
driver and no web framework.
"""
