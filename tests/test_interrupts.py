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
