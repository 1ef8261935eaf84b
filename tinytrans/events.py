"""The events that long work reports through its callback (`train`, `prepare`), named once.

A report is a dict whose "event" is one of these; training's reports are also the records of
metrics.jsonl (an Event is a str, so it is written as its name). The display turns each into
output and refuses a name that is not here: a misspelt event fails instead of vanishing.
"""

from __future__ import annotations

from enum import StrEnum


class Event(StrEnum):
    DATA = "data"  # a training corpus read and filtered (or a prepared one opened)
    VALID_DATA = "valid_data"  # the validation set read
    TOKENIZER = "tokenizer"  # prepare: the tokenizer trained or loaded
    PROGRESS = "progress"  # prepare: pairs read so far
    START = "start"  # an attempt to train begins: device, precision, batch
    RESUME = "resume"  # ... from a checkpoint of its own
    STEP = "step"  # every update
    LOG = "log"  # every log_every updates: the loss and the speed
    VALID = "valid"  # a validation: loss, BLEU, the best so far
    CHECKPOINT = "checkpoint"  # a step checkpoint written
    AVERAGE = "average"  # the last checkpoints averaged at the end
    END = "end"  # training stopped, and why
