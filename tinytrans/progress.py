"""How training reports look on a terminal: a live rich display, or plain log lines.

The library reports events through a callback; this module turns them into output on stderr,
so that stdout stays free for data.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from tinytrans.events import Event


def _loss(value: float) -> str:
    """A best loss as shown: -1 means none yet (a run saved before losses were kept)."""
    return f"{value:.3f}" if value >= 0 else "-"


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class TrainDisplay:
    """Receives training events and shows them: live when stderr is a terminal, else as lines."""

    def __init__(self, console: Console, quiet: bool = False):
        self.console, self.quiet = console, quiet
        self.live: Live | None = None
        self.limits: dict[str, Any] = {}
        self.tokens_per_second = 0.0
        self.last_refresh = 0.0

    def __call__(self, event: dict[str, Any]) -> None:
        handler = self.handlers()[Event(event["event"])]  # a name that is no Event: ValueError
        if handler is not None and not self.quiet:
            handler(event)

    def handlers(self) -> dict[Event, Callable[[dict[str, Any]], None] | None]:
        """What each event shows; None: nothing (prepare's progress has a status line of its
        own). Every Event is here: a new one must be decided."""
        return {Event.DATA: self.on_data, Event.VALID_DATA: self.on_valid_data,
                Event.TOKENIZER: None, Event.PROGRESS: None, Event.START: self.on_start,
                Event.RESUME: self.on_resume, Event.STEP: self.on_step, Event.LOG: self.on_log,
                Event.VALID: self.on_valid, Event.CHECKPOINT: self.on_checkpoint,
                Event.AVERAGE: self.on_average, Event.END: self.on_end}

    def say(self, message: str) -> None:
        console = self.live.console if self.live is not None else self.console
        console.print(message, highlight=False, markup=False, soft_wrap=True)

    def on_data(self, e: dict[str, Any]) -> None:
        dropped = e["read"] - e["kept"]
        self.say(f"train data: {e['kept']:,} pairs kept of {e['read']:,} (dropped {dropped:,}: "
                 f"{e['empty']} empty, {e['too_long']} too long, {e['bad_ratio']} length ratio; "
                 f"{e['utf8_replaced']} lines with invalid UTF-8 replaced)")

    def on_valid_data(self, e: dict[str, Any]) -> None:
        if e["read"] != e["kept"]:
            self.say(f"validation data: {e['kept']:,} pairs kept of {e['read']:,} (pairs with an "
                     "empty side are left out, with their references)")

    def on_average(self, e: dict[str, Any]) -> None:
        line = f"averaged the last {e['checkpoints']} checkpoints into {e['path']}"
        if "bleu" in e:
            line += (f": validation BLEU {e['bleu']:.2f}, loss {e['loss']:.3f} (best single "
                     f"checkpoint: step {e['best_step']}, BLEU {e['best_bleu']:.2f}, loss "
                     f"{_loss(e['best_loss'])}; use --checkpoint average or best)")
        self.say(line)

    def on_resume(self, e: dict[str, Any]) -> None:
        self.say(f"resuming at step {e['step']} from {e['checkpoint']}")

    def on_start(self, e: dict[str, Any]) -> None:
        train = e["config"].train
        self.limits = {"max_steps": train.max_steps, "max_time": train.max_time}
        self.say(f"model: {e['parameters']:,} parameters on {e['device']}; "
                 f"{e['pairs']:,} training pairs")
        self.say(f"precision: {e['precision']} ({e['precision_reason']})")
        if e.get("processes", 1) > 1:
            self.say(f"{e['processes']} processes x {e['batch_tokens']:,} tokens x update_freq "
                     f"{e['update_freq']} = {e['effective_batch_tokens']:,} tokens per update")
        if self.console.is_terminal:
            # transient: the live line is replaced by the final summary when training ends
            self.live = Live(Text("starting..."), console=self.console, auto_refresh=False,
                             transient=True)
            self.live.start()

    def on_log(self, e: dict[str, Any]) -> None:
        self.tokens_per_second = e["tokens_per_second"]
        if self.live is None:
            self.say(f"step {e['step']} | epoch {e['epoch'] + 1} | loss {e['loss']:.3f} | "
                     f"lr {e['lr']:.2e} | {e['tokens_per_second']:,.0f} tgt tok/s | "
                     f"{_clock(e['elapsed'])}")

    def on_step(self, e: dict[str, Any]) -> None:
        now = time.monotonic()
        if self.live is None or now - self.last_refresh < 0.25:
            return
        self.last_refresh = now
        self.live.update(Text(
            f"step {e['step']}  epoch {e['epoch'] + 1}  loss {e['loss']:.3f}  lr {e['lr']:.2e}  "
            f"{self._speed()} tgt tok/s  elapsed {_clock(e['elapsed'])}  "
            f"ETA {self._eta(e)}"), refresh=True)

    def _speed(self) -> str:
        return f"{self.tokens_per_second:,.0f}" if self.tokens_per_second else "-"  # until the first log

    def _eta(self, e: dict[str, Any]) -> str:
        fractions = []
        if self.limits.get("max_time"):
            fractions.append(e["elapsed"] / (self.limits["max_time"] * 60))
        if self.limits.get("max_steps"):
            fractions.append(e["step"] / self.limits["max_steps"])
        if not fractions or max(fractions) <= 0:
            return "-"
        done = min(max(fractions), 1.0)
        return _clock(e["elapsed"] * (1 - done) / done)

    def on_valid(self, e: dict[str, Any]) -> None:
        self.say(f"validation at step {e['step']}: loss {e['loss']:.3f} | ppl {e['ppl']:.2f} | "
                 f"BLEU {e['bleu']:.2f} (best checkpoint: step {e['best_step']}, BLEU "
                 f"{e['best_bleu']:.2f}, loss {_loss(e['best_loss'])}) "
                 f"[{e['bleu_signature']}]")
        if "directions" in e:  # several directions: the figures above are their means
            self.say("  by direction: " + ", ".join(f"{name} {v['bleu']:.2f}"
                                                   for name, v in e["directions"].items()))

    def on_checkpoint(self, e: dict[str, Any]) -> None:
        if self.live is None:
            self.say(f"checkpoint: {e['path']}")

    def on_end(self, e: dict[str, Any]) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
        r = e["result"]
        table = Table(title="training finished", show_header=False)
        table.add_row("stopped", Text(r.stop_reason))
        table.add_row("updates", f"{r.state.step:,} (in epoch {r.state.epoch + 1})")
        table.add_row("best checkpoint (valid)",
                      f"step {r.state.best_step}: greedy BLEU {r.state.best_bleu:.2f}, loss "
                      f"{_loss(r.state.best_loss)}" if r.state.best_bleu >= 0 else "no validation set")
        table.add_row("training time", _clock(r.state.elapsed))
        table.add_row("target tokens/s", f"{r.tokens_per_second:,.0f}")
        table.add_row("run directory", Text(str(r.run_dir)))
        self.console.print(table)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
