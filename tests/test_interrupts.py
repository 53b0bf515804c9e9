"""Ctrl-C around library calls that would swallow it."""

import os
import signal

import pytest

from inception_deploy.core.interrupts import deferred_interrupt


def test_an_interrupt_inside_the_block_is_raised_when_it_ends():
    reached_the_end = False
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupt() as interrupted:
            assert not interrupted()
            os.kill(os.getpid(), signal.SIGINT)  # delivered here, but only noted
            assert interrupted()
            reached_the_end = True
    assert reached_the_end
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_no_interrupt_no_exception():
    with deferred_interrupt() as interrupted:
        pass
    assert not interrupted()


def test_an_interrupt_deferred_inside_an_honoured_block_is_honoured_even_if_swallowed():
    """A deferred block (a heavy import) inside an honoured one (the export): the Ctrl-C it noted reaches the
    honoured block's bookkeeping, so a library that swallows the KeyboardInterrupt cannot make it vanish."""
    from inception_deploy.core.interrupts import honoured_interrupt

    with pytest.raises(KeyboardInterrupt):
        with honoured_interrupt():
            try:
                with deferred_interrupt():
                    os.kill(os.getpid(), signal.SIGINT)
            except KeyboardInterrupt:
                pass  # what a library that swallows it does
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_nested_deferred_blocks_raise_once_at_the_outer_end():
    reached = False
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupt() as outer:
            with deferred_interrupt():
                os.kill(os.getpid(), signal.SIGINT)
            assert outer()  # handed on, not raised inside the outer block
            reached = True
    assert reached


def test_sigterm_and_sighup_are_answered_as_ctrl_c(monkeypatch):
    """SIGTERM goes to whatever answers Ctrl-C (here a deferring block: noted, then raised at its end), is named in
    the line and gives the shell's status (143); a SIGHUP ignored at the start (nohup) stays ignored."""
    from inception_deploy.core import interrupts

    monkeypatch.setattr(interrupts, "_received", [])
    saved = {s: signal.getsignal(s) for s in interrupts.TERMINATING}
    try:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        interrupts.forward_termination_signals()
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert interrupts.exit_status() == 130 and interrupts.stop_message("interrupted: x") == "interrupted: x"
        with pytest.raises(KeyboardInterrupt):
            with deferred_interrupt() as interrupted:
                os.kill(os.getpid(), signal.SIGTERM)
                assert interrupted()  # noted, not raised, inside the block
        assert interrupts.exit_status() == 143
        assert interrupts.stop_message("interrupted: nothing was written") == "stopped by SIGTERM: nothing was written"
        assert interrupts.stop_message("the server stopped") == "stopped by SIGTERM: the server stopped"
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def test_sigterm_is_deferred_even_where_ctrl_c_is_ignored(monkeypatch):
    """A background job (`cmd &` in a script) ignores SIGINT; SIGTERM must still wait for a block that defers it
    (files landing together) instead of raising in its middle; a second termination signal is only noted."""
    from inception_deploy.core import interrupts

    monkeypatch.setattr(interrupts, "_received", [])
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, *interrupts.TERMINATING)}
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        interrupts.forward_termination_signals()
        finished_block = False
        with pytest.raises(KeyboardInterrupt):
            with deferred_interrupt() as interrupted:
                os.kill(os.getpid(), signal.SIGTERM)
                os.kill(os.getpid(), signal.SIGHUP)  # a closed terminal: SIGHUP after SIGTERM, or the other way
                assert interrupted()
                finished_block = True
        assert finished_block and interrupts.exit_status() == 143 and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGTERM)  # outside any block, after the first: only noted, never raised twice
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
