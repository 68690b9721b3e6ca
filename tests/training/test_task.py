"""The task contract: the stages satisfy it, and the loop refuses an object that does not."""

import pytest

from tests.training.toy import ToyTask
from training.cpt import CPTTask
from training.mlm import MLMTask
from training.task import CustomStepTask, MicroBatchTask, TrainTask, check_task


def test_stage_tasks_implement_their_protocol():
    assert issubclass(MLMTask, MicroBatchTask) and not issubclass(MLMTask, CustomStepTask)
    assert issubclass(CPTTask, CustomStepTask) and issubclass(CPTTask, TrainTask)
    check_task(ToyTask())


class _NoSave:
    def build_model(self): ...

    def build_data(self, rank, world_size): ...


class _NoStep(_NoSave):
    def save_model(self, model, out_dir): ...


def test_incomplete_tasks_are_refused_naming_what_is_missing():
    with pytest.raises(TypeError, match="save_model"):
        check_task(_NoSave())
    with pytest.raises(TypeError, match="train_step.*units"):
        check_task(_NoStep())
