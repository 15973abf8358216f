from streamlstm.service.backoff import BACKOFF_MAX_S, BACKOFF_MIN_S, Backoff


def test_doubles_to_the_cap_and_resets_on_success() -> None:
    b = Backoff()
    delays = [b.failed() for _ in range(10)]
    assert delays[:3] == [BACKOFF_MIN_S, 2 * BACKOFF_MIN_S, 4 * BACKOFF_MIN_S]
    assert max(delays) == BACKOFF_MAX_S and delays[-1] == BACKOFF_MAX_S
    b.reset()
    assert b.failed() == BACKOFF_MIN_S
