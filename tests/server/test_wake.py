"""The wake-up channel between API worker processes and the control process."""

from __future__ import annotations

import threading

from deepdock.server.wake import RECONCILER, SCHEDULER, WakeListener, WakeSender, wake_socket_path


def test_datagrams_set_the_matching_event(tmp_path):
    scheduler, reconciler = threading.Event(), threading.Event()
    listener = WakeListener(wake_socket_path(tmp_path), {SCHEDULER: scheduler, RECONCILER: reconciler}).start()
    sender = WakeSender(wake_socket_path(tmp_path))
    try:
        sender.send("scheduler")
        assert scheduler.wait(5) and not reconciler.is_set()
        sender.send("reconciler")
        assert reconciler.wait(5)
    finally:
        sender.close()
        listener.close()
    assert not wake_socket_path(tmp_path).exists()


def test_sending_without_a_listener_is_harmless(tmp_path):
    sender = WakeSender(wake_socket_path(tmp_path))
    sender.send("scheduler")  # nobody listens (the control process restarts): no error, nothing lost
    sender.close()


def test_a_stale_socket_file_is_replaced(tmp_path):
    path = wake_socket_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("left by a killed process")
    event = threading.Event()
    listener = WakeListener(path, {SCHEDULER: event}).start()
    try:
        sender = WakeSender(path)
        sender.send("scheduler")
        assert event.wait(5)
        sender.close()
    finally:
        listener.close()
