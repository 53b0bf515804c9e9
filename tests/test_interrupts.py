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
