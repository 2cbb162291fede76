"""Ctrl-C during training: finish the step, save a checkpoint, stop with one line.

A bare ``KeyboardInterrupt`` can land half-way through an optimizer step and leaves only the
last periodic checkpoint. ``GracefulInterrupt`` turns the first Ctrl-C into a request: the
current iteration completes, ``model_interrupted.pth`` is saved and tagged as the last
checkpoint, and training stops; ``--resume`` continues from there. A second Ctrl-C stops at once.
"""

import logging
import os
import signal

from detectron2.engine import HookBase

logger = logging.getLogger(__name__)

__all__ = ["GracefulInterrupt", "TrainingInterrupted"]


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C after saving a checkpoint (the message says where)."""


class GracefulInterrupt(HookBase):
    """A detectron2 hook: the first SIGINT stops training cleanly after the current step.

    The handler is installed in ``before_train``, before the data loader forks its workers:
    they inherit it, so Ctrl-C (sent to the whole process group) does not kill them mid-batch.
    """

    def __init__(self):
        self.requested = False
        self._previous = None
        self._pid = os.getpid()

    def _handle(self, signum, frame):
        if os.getpid() != self._pid:  # a forked data-loader worker: the trainer decides
            return
        if self.requested:  # the second Ctrl-C: stop now
            raise KeyboardInterrupt("stopped at once, before saving a checkpoint")
        self.requested = True
        logger.warning("Ctrl-C: stopping after this iteration (Ctrl-C again to stop now)")

    def before_train(self):
        self._pid = os.getpid()
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave Ctrl-C as it is
            self._previous = None

    def after_step(self):
        if not self.requested:
            return
        trainer = self.trainer
        trainer.checkpointer.save("model_interrupted", iteration=trainer.iter)
        raise TrainingInterrupted(
            f"saved {trainer.checkpointer.save_dir}/model_interrupted.pth at iteration "
            f"{trainer.iter + 1}"
        )

    def after_train(self):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
