"""The pure routing state: update acceptance rules, Dijkstra, expiry."""

from mesh.net.netceptor import Netceptor
from mesh.net.router import Router, UpdateVerdict


def update(router: Router, node: str, conns: dict[str, float], *, uid: str = "", epoch: int = 5,
           seq: int = 1, dup: int = 0, now: float = 0.0, via: str = ""):
    return router.apply_update(node_id=node, update_id=uid or f"{node}{epoch}{seq}", epoch=epoch,
                               sequence=seq, connections=conns, suspected_duplicate=dup,
                               own_epoch=100, own_sequence=7, now=now, via=via)


def line() -> Router:
    r = Router("a")
    r.add_link("b", 1.0)
    update(r, "b", {"a": 1.0, "c": 1.0})
    update(r, "c", {"b": 1.0})
    return r


def test_line_routes_through_relay():
    r = line()
    assert r.compute() == {"b": "b", "c": "b"}


def test_diamond_prefers_cheaper_path_and_falls_back():
    r = Router("controller01")
    r.add_link("relayer01", 1.0)
    r.add_link("relayer02", 2.0)
    update(r, "relayer01", {"controller01": 1.0, "executor01": 1.0})
    update(r, "relayer02", {"controller01": 2.0, "executor01": 1.0})
    update(r, "executor01", {"relayer01": 1.0, "relayer02": 1.0})
    assert r.compute()["executor01"] == "relayer01"
    r.remove_link("relayer01")
    update(r, "executor01", {"relayer02": 1.0}, seq=2)
    assert r.compute()["executor01"] == "relayer02"
    assert "relayer01" not in r.compute()


def test_duplicate_update_id_and_stale_sequence_are_ignored():
    r = line()
    assert update(r, "c", {"b": 1.0}, uid="same", seq=2).verdict is UpdateVerdict.ACCEPT
    assert update(r, "c", {"b": 1.0}, uid="same", seq=3).verdict is UpdateVerdict.IGNORE
    assert update(r, "c", {"b": 1.0}, seq=2, uid="other").verdict is UpdateVerdict.IGNORE
    assert update(r, "c", {"b": 1.0}, epoch=4, seq=9).verdict is UpdateVerdict.IGNORE
    assert update(r, "c", {"b": 1.0}, epoch=6, seq=1).verdict is UpdateVerdict.ACCEPT


def test_new_node_and_changed_connections_are_reported():
    r = line()
    result = update(r, "d", {"c": 1.0})
    assert result.new_node and result.connections_changed
    result = update(r, "d", {"c": 1.0}, seq=2)
    assert not result.new_node and not result.connections_changed


def test_update_removes_edges_the_node_no_longer_lists():
    r = line()
    update(r, "b", {"a": 1.0}, seq=2)
    assert "b" not in r.confirmed_connections()["c"]
    assert "c" not in r.compute()


def test_a_late_old_update_does_not_erase_a_live_edge():
    """The controller learns the diamond from relayer01's database, which still holds an old
    executor01 update listing relayer01 only; executor01's newer update lists both relays.
    relayer02's edge to executor01 must stay usable (Receptor deleted it until relayer02
    flooded again, so losing relayer01 left no route to executor01)."""
    r = Router("controller01")
    r.add_link("relayer01", 1.0)
    r.add_link("relayer02", 2.0)
    update(r, "relayer02", {"controller01": 2.0, "executor01": 1.0})
    update(r, "relayer01", {"controller01": 1.0, "executor01": 1.0})
    update(r, "executor01", {"relayer01": 1.0}, seq=1)  # old, from relayer01's database
    update(r, "executor01", {"relayer01": 1.0, "relayer02": 1.0}, seq=2)
    assert r.compute()["executor01"] == "relayer01"
    r.remove_link("relayer01")
    update(r, "executor01", {"relayer02": 1.0}, seq=3)
    assert r.compute()["executor01"] == "relayer02"
    assert r.confirmed_connections()["relayer02"] == {"controller01": 2.0, "executor01": 1.0}


def test_own_id_rules():
    r = Router("a")
    assert update(r, "a", {}, epoch=100).verdict is UpdateVerdict.IGNORE
    assert update(r, "a", {}, epoch=100, seq=7).verdict is UpdateVerdict.IGNORE
    # our epoch with a sequence we never sent: forged, the caller outbids it
    assert update(r, "a", {}, epoch=100, seq=8).verdict is UpdateVerdict.FORGED_OWN
    assert update(r, "a", {}, epoch=200).verdict is UpdateVerdict.CONFLICT
    older = update(r, "a", {}, epoch=50)
    assert older.verdict is UpdateVerdict.OLDER_SELF and not older.accused
    accusation = update(r, "a", {}, epoch=50, dup=100)
    assert accusation.verdict is UpdateVerdict.OLDER_SELF and accusation.accused
    assert update(r, "", {}).verdict is UpdateVerdict.IGNORE


def test_known_nodes_connections_and_seen_ids_are_capped():
    from mesh.net.control_limits import EDGES_PER_NODE, SEEN_PER_NODE, ControlCaps

    r = Router("a", ControlCaps(max_nodes=3))
    r.add_link("b", 1.0)
    assert update(r, "c", {"b": 1.0}).verdict is UpdateVerdict.ACCEPT
    over = update(r, "d", {"b": 1.0})
    assert (over.verdict, over.limit) == (UpdateVerdict.LIMIT, "routing update of a new node")
    assert "d" not in r.known and len(r.known) == 3
    assert update(r, "c", {"b": 1.0, "x": 1.0}, seq=2).verdict is UpdateVerdict.ACCEPT
    many = {f"n{i}": 1.0 for i in range(3 * EDGES_PER_NODE + 1)}
    assert update(r, "c", many, seq=3).verdict is UpdateVerdict.LIMIT
    for seq in range(4, 4 + 3 * SEEN_PER_NODE + 10):
        update(r, "c", {"b": 1.0}, seq=seq)
    assert len(r.seen_updates) == 3 * SEEN_PER_NODE


def test_unreachable_nodes_expire_but_reachable_ones_stay():
    r = line()
    r.compute()
    assert r.sweep(now=0.0, node_expiry=60) == []
    r.remove_link("b")
    r.compute()
    assert r.sweep(now=10.0, node_expiry=60) == []
    assert sorted(r.sweep(now=71.0, node_expiry=60)) == ["b", "c"]
    assert set(r.known) == {"a"}
    assert r.records == {}


def test_only_nodes_with_their_own_entry_are_destinations():
    r = Router("a")
    r.add_link("b", 1.0)
    update(r, "b", {"a": 1.0, "ghost": 1.0})
    assert r.compute() == {"b": "b"}


def test_paths_list_every_hop_to_the_destination():
    r = line()
    update(r, "d", {"c": 1.0})
    update(r, "c", {"b": 1.0, "d": 1.0}, seq=2)
    r.compute()
    assert r.paths == {"b": ["b"], "c": ["b", "c"], "d": ["b", "c", "d"]}


def test_a_late_copy_of_an_older_update_never_replaces_a_newer_one_while_unreachable():
    """Floods overtake each other while a mesh starts: c's update 2 arrives, then (by a slower
    path) its update 1.  A route computation in between finds c unreachable (nothing confirms
    its edges yet); update 1 must still not bring back c's old connections, since no later
    flood would correct them until c's next refresh (minutes)."""
    netceptor = Netceptor("a")
    r = netceptor.router
    update(r, "c", {"b": 1.0, "d": 1.0}, epoch=5, seq=2)
    netceptor._recompute_routes()  # no link: c is unreachable
    assert "c" not in r.table
    assert update(r, "c", {"b": 1.0}, epoch=5, seq=1).verdict is UpdateVerdict.IGNORE
    assert r.known["c"] == {"b": 1.0, "d": 1.0}


def test_an_unreachable_node_restarted_with_a_smaller_epoch_is_accepted():
    """Receptor drops a restarted node's updates for good when its new epoch is smaller (a
    clock step, or the same second); here a node without a route takes any other epoch."""
    r = Router("a")
    update(r, "c", {"b": 1.0}, epoch=9, seq=4)
    assert update(r, "c", {"b": 1.0}, epoch=8, seq=1).verdict is UpdateVerdict.IGNORE
    r.records["c"].reachable = False
    assert update(r, "c", {"d": 1.0}, epoch=8, seq=1, uid="again").verdict \
        is UpdateVerdict.ACCEPT
    assert r.known["c"] == {"d": 1.0} and r.records["c"].epoch == 8


def test_a_settle_gives_the_record_back_whichever_newer_epoch_holds_it():
    """The older instance (epoch 5) names a newer epoch it heard (20); the record meanwhile is
    held by an even newer one (30, a forger's latest): the settle still restores it.  A
    "settle" whose own epoch is not older than the one it names is no settle: ignored."""
    r = line()
    assert update(r, "c", {"x": 1.0}, epoch=20).verdict is UpdateVerdict.ACCEPT
    assert update(r, "c", {"x": 1.0}, epoch=30).verdict is UpdateVerdict.ACCEPT
    bogus = update(r, "c", {"evil": 1.0}, epoch=31, seq=9, dup=30)
    assert bogus.verdict is UpdateVerdict.IGNORE
    assert r.records["c"].epoch == 30 and r.known["c"] == {"x": 1.0}
    settled = update(r, "c", {"b": 1.0}, epoch=5, seq=2, dup=20)
    assert settled.verdict is UpdateVerdict.ACCEPT and settled.settled and settled.applied
    assert r.records["c"].epoch == 5 and r.known["c"] == {"b": 1.0}
    # a settle naming an epoch newer than the record's holder changes nothing here
    later = update(r, "c", {"other": 1.0}, epoch=4, seq=3, dup=6)
    assert later.verdict is UpdateVerdict.ACCEPT and not later.applied
    assert r.records["c"].epoch == 5 and r.known["c"] == {"b": 1.0}


def test_at_the_node_cap_an_unreachable_node_then_the_biggest_link_gives_way():
    from mesh.net.control_limits import ControlCaps

    r = Router("a", ControlCaps(max_nodes=6))
    r.add_link("b", 1.0)
    r.add_link("x", 1.0)
    update(r, "b", {"a": 1.0}, uid="b", via="b")
    update(r, "x", {"a": 1.0, "j1": 1.0, "j2": 1.0, "j3": 1.0}, uid="x", via="x")
    for name in ("j1", "j2", "j3"):
        assert update(r, name, {"x": 1.0}, uid=name, via="x").verdict is UpdateVerdict.ACCEPT
    r.compute()
    assert len(r.known) == 6  # full: a, b, x, j1-j3
    # x brought 4 nodes, b 1: a node joining through b takes x's newest one's place
    joined = update(r, "n1", {"b": 1.0}, via="b")
    assert joined.verdict is UpdateVerdict.ACCEPT and (joined.evicted, joined.evicted_from) == \
        ("j3", "x")
    assert "j3" not in r.known and "n1" in r.known
    # x itself cannot push out another link's nodes
    pushed = update(r, "j9", {"x": 1.0}, via="x")
    assert pushed.verdict is UpdateVerdict.LIMIT
    # a node unreachable at the last sweep goes first, whoever brought it
    r.remove_link("x")
    r.compute()
    r.sweep(now=1.0, node_expiry=60)
    later = update(r, "n2", {"b": 1.0}, now=2.0, via="b")
    assert later.verdict is UpdateVerdict.ACCEPT and later.evicted in {"x", "j1", "j2"}
    assert later.evicted_from == ""
    assert r.precheck(node_id="n3", update_id="n3", epoch=5, sequence=1, connections={},
                      suspected_duplicate=0, via="b") is None
    # a bounded number of nodes make room between two sweeps (floods churn nothing)
    r.evictions_left = 0
    assert update(r, "n3", {"b": 1.0}, now=2.0, via="b").verdict is UpdateVerdict.LIMIT


def test_a_settled_epoch_is_ignored_until_a_newer_one_or_the_record_goes_unreachable():
    """After the older instance (epoch 5) settled against epoch 20, more updates with epoch
    20 (a duplicate that has not stopped yet, or a forger repeating it) are ignored; a newer
    epoch (a restart) is taken, and so is anything once the record is unreachable."""
    r = line()
    update(r, "c", {"b": 1.0}, epoch=5, seq=1)
    update(r, "c", {"x": 1.0}, epoch=20, seq=1)
    assert update(r, "c", {"b": 1.0}, epoch=5, seq=2, dup=20).settled
    assert update(r, "c", {"x": 1.0}, epoch=20, seq=2).verdict is UpdateVerdict.IGNORE
    assert r.records["c"].epoch == 5
    # the older instance's own next update keeps the memory of the settled epoch
    assert update(r, "c", {"b": 1.0}, epoch=5, seq=3).verdict is UpdateVerdict.ACCEPT
    assert update(r, "c", {"x": 1.0}, epoch=20, seq=3).verdict is UpdateVerdict.IGNORE
    assert update(r, "c", {"x": 1.0}, epoch=21, seq=1).verdict is UpdateVerdict.ACCEPT
    r.records["c"].reachable = False
    assert update(r, "c", {"b": 1.0}, epoch=5, seq=4).verdict is UpdateVerdict.ACCEPT


def test_a_settled_epoch_is_taken_from_the_node_itself_on_its_own_link():
    """A settle (perhaps forged: an "older instance" is anyone's claim without route-auth) does
    not silence a neighbour speaking for itself on its own link: it is alive with that epoch.
    Through another link the settled epoch stays ignored."""
    r = line()
    update(r, "b", {"a": 1.0}, epoch=20, seq=1, via="b")
    assert update(r, "b", {"x": 1.0}, uid="forged1", epoch=5, seq=9, dup=20, via="x").settled
    assert update(r, "b", {"a": 1.0}, epoch=20, seq=2, via="x").verdict is UpdateVerdict.IGNORE
    assert update(r, "b", {"a": 1.0}, epoch=20, seq=3, via="b").verdict is UpdateVerdict.ACCEPT
    assert r.records["b"].epoch == 20 and r.known["b"] == {"a": 1.0}


def test_with_route_auth_a_settle_must_name_the_epoch_that_holds_the_record():
    """Receptor's exact rule with signed updates: a replayed old settle of a process that has
    restarted since names an epoch that no longer holds the record, and changes nothing."""
    r = line()
    r.exact_settle = True
    update(r, "c", {"b": 1.0}, epoch=5, seq=1)
    update(r, "c", {"x": 1.0}, epoch=30, seq=1)  # the restarted process
    replay = update(r, "c", {"b": 1.0}, epoch=5, seq=2, dup=20)
    assert replay.verdict is UpdateVerdict.ACCEPT and not replay.applied
    assert r.records["c"].epoch == 30
    assert update(r, "c", {"b": 1.0}, epoch=5, seq=3, dup=30).settled
