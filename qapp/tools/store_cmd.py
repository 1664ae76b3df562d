"""``qapp store``: read and change a store's keys from a shell, through the store API.

::

    qapp store get    URL KEY               the value, as one line of JSON
    qapp store set    URL KEY VALUE [--ttl S]   VALUE is JSON: 42, '"text"', '{"a": 1}'
    qapp store delete URL KEY
    qapp store ttl    URL KEY               seconds left, or "never" for a key without expiry
    qapp store keys   URL [PREFIX] [--limit N]  the keys under PREFIX, N at most (100)

For operators of a running app: URL is the app's store URL (``sqlite:///…``,
``redis://…``, ``postgresql://…``), and keys are named as the store names
them, namespace and all (``session:…``). A key that is absent (or expired)
makes ``get``, ``delete`` and ``ttl`` say so on stderr and exit 1. A
mistake (a bad URL or VALUE, a store that is down, a SQLite file that does
not exist) is one line on stderr and exit 1; an argument the parser refuses
is one line and exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from qapp.state import QappError, Store, dumps, redact, store_from_url
from qapp.store.backends.sqlite import SQLiteStore
from qapp.store.interface import SCAN_BATCH

__all__ = ["add_parser", "run"]

#: How many keys ``keys`` prints unless ``--limit`` says otherwise.
DEFAULT_LIMIT = 100

DESCRIPTION = """\
Read and change a store's keys through the store API, for operators of a
running app. URL is the app's store URL; keys are named as the store names
them, namespace and all (session:...). VALUE is JSON: 42, '"text"',
'{"a": 1}'. get prints one line of JSON; ttl prints the seconds left, or
"never" for a key without expiry; keys prints the keys under PREFIX, at most
--limit. A key that is absent or expired makes get, delete and ttl exit 1.
"""


class Refused(Exception):
    """What the command reports in one line on stderr, exiting 1."""


def _ttl(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"a ttl is a number of seconds above 0, not {text!r}")
    return value


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"at least 1 key, not {value}")
    return value


def _value(text: str) -> Any:
    """VALUE, read as JSON and checked as the store checks it."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise Refused(f"VALUE is not JSON ({exc}); a string needs its quotes: '\"text\"'") from None
    dumps(value)  # NaN and Infinity pass json.loads; InvalidValue says why they are no JSON
    return value


def _store(url: str) -> Store:
    """The store at ``url``, unconnected; a URL that cannot name a shared store is refused."""
    store = store_from_url(url)
    if store.scope == "process":
        raise Refused(f"{url} lives inside one process; name the store the app uses")
    if isinstance(store, SQLiteStore) and not store.path.is_file():
        # Opening would create an empty database where an existing one was meant.
        raise Refused(f"no SQLite file at {store.path}")
    return store


async def _get(store: Store, args: argparse.Namespace) -> int:
    # get_many, not get: a key that holds null is there, and prints null.
    found = await store.get_many([args.key])
    if args.key not in found:
        raise Refused(f"no key {args.key!r} (absent or expired)")
    print(json.dumps(found[args.key], ensure_ascii=False))
    return 0


async def _set(store: Store, args: argparse.Namespace) -> int:
    await store.set(args.key, args.value, ttl=args.ttl)
    return 0


async def _delete(store: Store, args: argparse.Namespace) -> int:
    if not await store.delete(args.key):
        raise Refused(f"no key {args.key!r} (absent or expired)")
    return 0


async def _show_ttl(store: Store, args: argparse.Namespace) -> int:
    left = await store.ttl(args.key)
    if left is None:
        raise Refused(f"no key {args.key!r} (absent or expired)")
    print("never" if left == math.inf else f"{left:.3f}")
    return 0


async def _keys(store: Store, args: argparse.Namespace) -> int:
    # A set: Redis's SCAN may yield a key twice, and a key is printed once.
    seen: set[str] = set()
    async for key in store.scan(args.prefix, batch=min(args.limit + 1, SCAN_BATCH)):
        if key in seen:
            continue
        if len(seen) == args.limit:
            print(f"(more keys under {args.prefix!r}: raise --limit to see them)", file=sys.stderr)
            break
        seen.add(key)
        print(key)
    return 0


ACTIONS: dict[str, Callable[[Store, argparse.Namespace], Awaitable[int]]] = {
    "get": _get,
    "set": _set,
    "delete": _delete,
    "ttl": _show_ttl,
    "keys": _keys,
}


async def _run(store: Store, args: argparse.Namespace) -> int:
    async with store:
        return await ACTIONS[args.action](store, args)


def run(args: argparse.Namespace) -> int:
    """Do what ``args.action`` says on the store at ``args.url``; the exit status."""
    try:
        if args.action == "set":
            args.value = _value(args.value)
        store = _store(args.url)
        return asyncio.run(_run(store, args))
    except (Refused, QappError) as exc:
        # QappError's messages name a URL redacted already; a Refused one names it as given.
        message = str(exc).replace(args.url, redact(args.url))
        print(f"qapp store {args.action}: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"qapp store {args.action}: interrupted", file=sys.stderr)
        return 130


def add_parser(commands: Any) -> None:
    """Add ``store`` and its actions to the qapp command's sub-commands."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "store",
        help="read and change a store's keys: get, set, delete, ttl, keys",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    url_help = "the store: sqlite:///path.db, redis://host:port/db, postgresql://…"

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = actions.add_parser(name, help=help_text)
        sub.add_argument("url", metavar="URL", help=url_help)
        return sub

    action("get", "print a key's value as JSON").add_argument("key", metavar="KEY")
    p_set = action("set", "store a JSON value at a key")
    p_set.add_argument("key", metavar="KEY")
    p_set.add_argument("value", metavar="VALUE", help="JSON: 42, '\"text\"', '{\"a\": 1}'")
    p_set.add_argument("--ttl", type=_ttl, help="seconds until it expires (default: never)")
    action("delete", "delete a key").add_argument("key", metavar="KEY")
    action("ttl", 'print a key\'s seconds left ("never": no expiry)').add_argument(
        "key", metavar="KEY"
    )
    p_keys = action("keys", "print the keys that start with PREFIX")
    p_keys.add_argument("prefix", metavar="PREFIX", nargs="?", default="", help="default: all")
    p_keys.add_argument(
        "--limit",
        type=_limit,
        default=DEFAULT_LIMIT,
        help="print at most this many keys (default: %(default)s)",
    )
    parser.set_defaults(func=run)
