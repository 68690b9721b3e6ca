"""Connected components of the near-duplicate links without a global gather: the Beam and Ray
engines run these functions, each round two shuffles keyed by node, and never hold the links or
the clusters in one process.

Alternating large-star and small-star (Kiveris et al., "Connected Components in MapReduce and
Beyond", SoCC 2014). Nodes are the dedup keys ``(build, path, line, id)``, ordered as tuples, so the
smallest node of a component is the record the local engine keeps (:func:`near_duplicate_decisions`
makes the smallest key the union-find root). An edge is ``(child, parent)`` with ``child > parent``:

* large-star, grouped by node ``u`` over both ends of every edge: each neighbour ``v > u`` is
  re-attached to ``m``, the smallest of ``u`` and its neighbours;
* small-star, grouped by the larger end: node ``u`` with parents ``N`` (all ``< u``) becomes a star
  around ``m = min(N + [u])``: every other node of ``N + [u]`` gets the edge to ``m``.

Both steps keep every component connected and never drop a node, and the smallest node of a
component is never anyone's child. :func:`star_check` counts the nodes that are not yet a leaf
of a star (a child with two parents, or a child that is itself a parent), on Ray in the next
large-star's shuffle; at 0 every component is one star around its smallest node, the
representative. Kiveris et al. prove O(log^2 n) rounds; a path of n nodes took 3 rounds at
n = 10, 5 at 40 and 9 at 2,000 in shuffled key order (one more in key order).
:func:`round_cap` bounds the loop; a run that reaches it raises
:class:`MgteError` instead of writing decisions from clusters that are not finished.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterable

from foundation.errors import MgteError

Edge = tuple  # (child, parent), child > parent


def round_cap(n_edges: int) -> int:
    """The most large-star + small-star rounds a run may take over ``n_edges`` links:
    4 ceil(log2(n + 2))^2 (Kiveris et al. bound the rounds by O(log^2 n)); a bug, not a graph,
    reaches it."""
    return 4 * math.ceil(math.log2(n_edges + 2)) ** 2


def not_converged(rounds: int, n_edges: int, bad: int) -> MgteError:
    return MgteError(f"near-duplicate clustering did not converge in {rounds} rounds over {n_edges} links "
                     f"({bad} documents not yet in a star around their cluster's earliest record); "
                     f"no decisions were written")


# ---- large-star --------------------------------------------------------------------------------
def large_star(node, neighbours: Iterable) -> list[Edge]:
    """One node and its neighbours -> its larger neighbours attached to the smallest of them all."""
    nb = set(neighbours)
    m = min(nb | {node})
    return [(v, m) for v in nb if v > node]


# ---- small-star --------------------------------------------------------------------------------
def small_star_emit(edge: Edge) -> list[tuple]:
    """An edge -> its smaller end, keyed by the larger end."""
    a, b = edge[0], edge[1]
    return [(a, b)] if b < a else [(b, a)]


def small_star(node, parents: Iterable) -> list[Edge]:
    """One node and its smaller neighbours -> a star around the smallest of them."""
    ns = set(parents) | {node}
    m = min(ns)
    return [(v, m) for v in ns if v != m]


# ---- convergence -------------------------------------------------------------------------------
def star_check_emit(edge: Edge) -> list[tuple]:
    """A ``(child, parent)`` edge -> the role of each end, keyed by node."""
    child, parent = edge[0], edge[1]
    return [(child, ("parent", parent)), (parent, ("child", child))]


def star_check(node, roles: Iterable[tuple]) -> int:
    """1 when ``node`` is not yet a leaf or the centre of a star: two parents, or a parent and a child."""
    parents, has_children = set(), False
    for role, other in roles:
        if role == "parent":
            parents.add(other)
        else:
            has_children = True
    return int(len(parents) > 1 or (bool(parents) and has_children))


def large_star_checked(node, roles: Iterable[tuple]) -> tuple[list[Edge], int]:
    """:func:`large_star` and :func:`star_check` in one pass over a node's :func:`star_check_emit`
    values: a round's convergence test costs no shuffle of its own."""
    roles = list(roles)
    return large_star(node, [other for _, other in roles]), star_check(node, roles)


def group_by_key(pairs: Iterable[tuple]) -> list[tuple]:
    groups: dict = defaultdict(list)
    for k, v in pairs:
        groups[k].append(v)
    return list(groups.items())


def components(links: Iterable[tuple], max_rounds: int | None = None) -> tuple[dict, int]:
    """The distributed algorithm run in this process over ``(a, b, ...)`` links, shuffle for
    shuffle as on Ray -> (every linked node but each component's smallest -> that smallest node,
    rounds taken)."""
    edges = [(a, b) if a > b else (b, a) for a, b, *_ in links if a != b]
    cap = round_cap(len(edges)) if max_rounds is None else max_rounds
    rounds = 0
    while True:
        checked = [large_star_checked(n, r) for n, r in group_by_key(x for e in edges for x in star_check_emit(e))]
        bad = sum(b for _, b in checked)
        if not bad:
            return {child: parent for child, parent in edges}, rounds
        if rounds >= cap:
            raise not_converged(rounds, len(edges), bad)
        mid = [e for out, _ in checked for e in out]
        edges = [e for n, ps in group_by_key(x for e in mid for x in small_star_emit(e)) for e in small_star(n, ps)]
        rounds += 1
