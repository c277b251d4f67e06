from statekeep import Store


def test_session_round_trip(store: Store) -> None:
    created = store.create_session("alice", metadata={"goal": "ship"})
    assert store.get_session(created.id) == created
