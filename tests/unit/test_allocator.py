"""When the program restarts itself with another C allocator, and with what environment."""

from __future__ import annotations

import pytest

import obliviate.allocator as allocator
from obliviate.allocator import ENV, current_allocator, preload_environment


@pytest.fixture
def linux_cpu(monkeypatch):
    monkeypatch.setattr(allocator.platform, "system", lambda: "Linux")
    monkeypatch.setattr(allocator.os.path, "exists", lambda path: False)
    monkeypatch.setattr(allocator, "find_allocator", lambda: "libtcmalloc_minimal.so.4")


def test_a_cpu_linux_machine_preloads_the_library_found(linux_cpu):
    env = preload_environment({"PATH": "/bin", "LD_PRELOAD": "/opt/libother.so"})
    assert env["LD_PRELOAD"] == "libtcmalloc_minimal.so.4:/opt/libother.so"     # ours first, theirs kept
    assert env[ENV] == "libtcmalloc_minimal.so.4" and env["PATH"] == "/bin"
    # the restarted process finds it preloaded: no second restart
    assert preload_environment(env) is None
    assert preload_environment({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"}) is None


def test_no_restart_where_it_should_not(linux_cpu, monkeypatch):
    assert preload_environment({ENV: "system"}) is None
    assert preload_environment({ENV: " System "}) is None
    monkeypatch.setattr(allocator, "find_allocator", lambda: None)
    assert preload_environment({}) is None                                      # nothing installed
    monkeypatch.setattr(allocator, "find_allocator", lambda: "libjemalloc.so.2")
    monkeypatch.setattr(allocator.os.path, "exists", lambda path: path == "/dev/nvidiactl")
    assert preload_environment({}) is None                                      # a GPU machine
    assert preload_environment({ENV: "/opt/libtcmalloc.so.4"})["LD_PRELOAD"] == "/opt/libtcmalloc.so.4"  # asked for
    monkeypatch.setattr(allocator.platform, "system", lambda: "Darwin")
    assert preload_environment({ENV: "/opt/libtcmalloc.so.4"}) is None


def test_the_restart_replaces_the_process_with_the_same_arguments(linux_cpu, monkeypatch):
    calls = []
    monkeypatch.setattr(allocator.os, "execve", lambda exe, argv, env: calls.append((exe, argv, env)))
    monkeypatch.setattr(allocator.os, "environ", {"HOME": "/h"})
    allocator.restart_with_allocator(["unlearn", "method.name=ME+GD"])
    (exe, argv, env), = calls
    assert argv[1:] == ["-m", "obliviate.cli", "unlearn", "method.name=ME+GD"] and exe == argv[0]
    assert env["LD_PRELOAD"] == "libtcmalloc_minimal.so.4" and env["HOME"] == "/h"
    calls.clear()
    monkeypatch.setattr(allocator.os, "environ", {ENV: "system"})
    allocator.restart_with_allocator(["unlearn"])
    assert calls == []


def test_main_called_from_python_never_restarts(monkeypatch, capsys):
    from obliviate import cli

    monkeypatch.setattr(cli, "restart_with_allocator", lambda argv: pytest.fail("restarted"))
    with pytest.raises(SystemExit):
        cli.main(["--help"])


def test_current_allocator(monkeypatch):
    monkeypatch.setenv("LD_PRELOAD", "/x/libfoo.so:/usr/lib/libjemalloc.so.2")
    assert current_allocator() == "libjemalloc.so.2"
    monkeypatch.setenv("LD_PRELOAD", "")
    assert current_allocator() == "system"
