"""The queue contract: at-least-once delivery, visibility, dead-letter."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater
from zope.interface.verify import verifyObject

from profiled.errors import LostClaim
from profiled.interfaces import IQueue


def sleep(seconds: float):
    return deferLater(reactor, seconds, lambda: None)


async def receive_all(queue, n: int, wait: float = 2.0):
    """Receive until n messages arrived or a receive comes back empty."""
    got = []
    while len(got) < n:
        batch = await queue.receive(max_messages=min(10, n - len(got)), wait=wait)
        if not batch:
            break
        got.extend(batch)
    return got


@pytest_twisted.ensureDeferred
async def test_provides_interface(make_queue):
    """Every queue provides IQueue."""
    queue = await make_queue(30, 5)
    assert verifyObject(IQueue, queue)


@pytest_twisted.ensureDeferred
async def test_send_receive_ack(make_queue):
    """A sent body is received once with count 1 and is gone after ack."""
    queue = await make_queue(30, 5)
    await queue.send("hello")
    [msg] = await receive_all(queue, 1)
    assert msg.body == "hello"
    assert msg.receive_count == 1
    assert msg.sent_at > 0
    await queue.ack(msg)
    assert await queue.receive(max_messages=10, wait=0) == []


@pytest_twisted.ensureDeferred
async def test_received_message_is_invisible(make_queue):
    """While a delivery is in flight, nobody else receives it."""
    queue = await make_queue(30, 5)
    await queue.send("only-once")
    [msg] = await receive_all(queue, 1)
    assert await queue.receive(max_messages=10, wait=0.5) == []
    await queue.ack(msg)


@pytest_twisted.ensureDeferred
async def test_batch_receive(make_queue):
    """Several messages come back, each body exactly once."""
    queue = await make_queue(30, 5)
    bodies = {f"b{i}" for i in range(7)}
    for body in sorted(bodies):
        await queue.send(body)
    got = await receive_all(queue, len(bodies))
    assert sorted(m.body for m in got) == sorted(bodies)
    for m in got:
        await queue.ack(m)


@pytest_twisted.ensureDeferred
async def test_unacked_message_comes_back_after_visibility_timeout(make_queue):
    """A worker that dies loses nothing: the message reappears with a higher count."""
    queue = await make_queue(1, 5)
    await queue.send("retry-me")
    [first] = await receive_all(queue, 1)
    assert first.receive_count == 1
    await sleep(1.5)
    [second] = await receive_all(queue, 1, wait=3)
    assert second.body == "retry-me"
    assert second.receive_count == 2
    await queue.ack(second)


@pytest_twisted.ensureDeferred
async def test_release_makes_visible_again(make_queue):
    """release gives a message back at once."""
    queue = await make_queue(30, 5)
    await queue.send("give-back")
    [msg] = await receive_all(queue, 1)
    await queue.release(msg)
    [again] = await receive_all(queue, 1)
    assert again.body == "give-back"
    assert again.receive_count == 2
    await queue.ack(again)


@pytest_twisted.ensureDeferred
async def test_release_with_delay(make_queue):
    """A message released with a delay stays hidden until the delay passes."""
    queue = await make_queue(30, 5)
    await queue.send("later")
    [msg] = await receive_all(queue, 1)
    await queue.release(msg, delay=1)
    assert await queue.receive(max_messages=1, wait=0) == []
    await sleep(1.5)
    [again] = await receive_all(queue, 1, wait=3)
    assert again.body == "later"
    await queue.ack(again)


@pytest_twisted.ensureDeferred
async def test_extend_keeps_message_invisible(make_queue):
    """extend pushes the visibility deadline out for a job that runs long."""
    queue = await make_queue(1, 5)
    await queue.send("long-job")
    [msg] = await receive_all(queue, 1)
    msg = await queue.extend(msg, 4)
    await sleep(1.5)
    assert await queue.receive(max_messages=1, wait=0) == []
    await queue.ack(msg)
    await sleep(0.2)
    assert await queue.receive(max_messages=1, wait=0) == []


@pytest_twisted.ensureDeferred
async def test_extend_after_loss_fails(make_queue):
    """extending a delivery that already came back fails with LostClaim."""
    queue = await make_queue(1, 5)
    await queue.send("lost")
    [msg] = await receive_all(queue, 1)
    await sleep(1.5)
    [again] = await receive_all(queue, 1, wait=3)
    with pytest.raises(LostClaim):
        await queue.extend(msg, 10)
    await queue.ack(again)


@pytest_twisted.ensureDeferred
async def test_dead_letter_after_max_receives(make_queue):
    """After max_receives deliveries, the message is parked, not delivered again."""
    queue = await make_queue(30, 2)
    await queue.send("poison")
    for expected in (1, 2):
        [msg] = await receive_all(queue, 1)
        assert msg.receive_count == expected
        await queue.release(msg)
    assert await receive_all(queue, 1, wait=1) == []
    stats = await queue.stats()
    assert stats.dead >= 1 or stats.visible == 0


@pytest_twisted.ensureDeferred
async def test_delayed_send(make_queue):
    """A message sent with a delay is not delivered before it."""
    queue = await make_queue(30, 5)
    await queue.send("delayed", delay=1)
    assert await queue.receive(max_messages=1, wait=0) == []
    await sleep(1.5)
    [msg] = await receive_all(queue, 1, wait=3)
    assert msg.body == "delayed"
    await queue.ack(msg)


@pytest_twisted.ensureDeferred
async def test_long_poll_returns_when_message_arrives(make_queue):
    """A waiting receive returns soon after a send, not at the end of its wait."""
    queue = await make_queue(30, 5)
    d = queue.receive(max_messages=1, wait=10)
    await sleep(0.3)
    start = reactor.seconds()
    await queue.send("wake")
    msgs = await d
    assert [m.body for m in msgs] == ["wake"]
    assert reactor.seconds() - start < 5
    await queue.ack(msgs[0])


@pytest_twisted.ensureDeferred
async def test_stats_and_ping(make_queue):
    """stats counts visible and in-flight messages; ping succeeds."""
    queue = await make_queue(30, 5)
    await queue.ping()
    await queue.send("a")
    await queue.send("b")
    [msg] = await receive_all(queue, 1)
    stats = await queue.stats()
    assert stats.visible == 1
    assert stats.in_flight == 1
    await queue.ack(msg)
