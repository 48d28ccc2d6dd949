"""What every way of tracing one fact starts from: the checked input, the clean run, the answer
token and the corrupted run (:func:`trace_setup`), shared by the exact trace and its preview."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from workbench import checks
from workbench.errors import WorkbenchError
from workbench.locate.blocks import BlockRunner, States, answer_probs
from workbench.locate.noise import embedding_std, make_noise
from workbench.locate.spans import prompt_and_subject, subject_span
from workbench.locate.trace_result import TraceResult
from workbench.locate.trace_settings import TraceSettings
from workbench.core.model import Model

#: Below this clean probability a trace mostly measures noise.
LOW_CLEAN_PROB = 0.1


def _warnings(answer: str, target_true: str | None, clean_prob: float, corrupted_prob: float) -> list[str]:
    out = []
    if clean_prob < LOW_CLEAN_PROB:
        out.append(
            f"the traced answer {answer!r} has p={clean_prob:.3f} < {LOW_CLEAN_PROB} on the clean prompt: "
            "restored scores are mostly noise"
        )
    if target_true is not None and not target_true.strip().startswith(answer.strip()) and answer.strip():
        out.append(f"the model's top-1 {answer!r} does not begin the fact's object {target_true!r}: tracing the model's answer")
    if clean_prob >= LOW_CLEAN_PROB and corrupted_prob > 0.5 * clean_prob:
        out.append(
            f"corrupting the subject keeps p={corrupted_prob:.3f} of clean {clean_prob:.3f}: the answer barely "
            "depends on the subject here (try more noise)"
        )
    return out



@dataclass
class Setup:
    """What every way of tracing one fact starts from: the prompt, the subject's span,
    the clean run, the answer token and the corrupted run (see :func:`trace_setup`)."""

    model: Model
    prompt: str
    subject: str
    target_true: str | None
    ids: list[int]
    begin: int
    end: int
    std: float
    runner: BlockRunner
    answer_id: int
    clean_prob: float
    chosen: bool  # the answer was given (not the model's top-1)
    x0: Tensor  # corrupted embeddings entering block 0, [samples, pos, d_model]
    corrupted: States
    corrupted_prob: float

    def result(self, scores: dict, settings: TraceSettings, *, method: str, precision: str,
               seconds: float) -> TraceResult:
        answer = self.model.tokenizer.decode([self.answer_id])
        warnings = _warnings(answer, None if self.chosen else self.target_true, self.clean_prob, self.corrupted_prob)
        return TraceResult(
            model=self.model.name, prompt=self.prompt, subject=self.subject, tokens=self.model.str_tokens(self.ids),
            subject_range=[self.begin, self.end], answer=answer, answer_id=self.answer_id,
            clean_prob=self.clean_prob, corrupted_prob=self.corrupted_prob, scores=scores, method=method,
            samples=settings.samples, noise=float(settings.noise), noise_std=self.std, window=settings.window,
            seed=settings.seed, seconds=seconds, precision=precision, warnings=warnings,
        )


def answer_token(model: Model, answer: str) -> int:
    """The token a trace scores for a given answer word: the first of ``" " + answer``
    (objects follow a space in the prompts), or of the answer as given if it starts with one."""
    if not isinstance(answer, str) or not answer.strip():
        raise WorkbenchError("answer must be a non-empty word, e.g. the edit's new object")
    text = answer if answer[:1].isspace() else " " + answer
    ids = model.encode(text, prompt=False)
    if not ids:
        raise WorkbenchError(f"answer {answer!r} has no tokens")
    return ids[0]


def trace_setup(model: Model, fact, settings: TraceSettings, *, subject: str | None = None) -> Setup:
    """Check the input, run the prompt clean and with the subject corrupted (``settings.samples`` copies).

    Example:
        >>> setup = trace_setup(model, ("The {} is in", "Eiffel Tower"), TraceSettings(samples=2))  # doctest: +SKIP
    """
    samples, noise, noise_std, seed, answer = (settings.samples, settings.noise, settings.noise_std, settings.seed,
                                               settings.answer)
    prompt, subject, target_true = prompt_and_subject(fact, subject)
    tokens = model.tokens(prompt)
    checks.prompt_length(tokens.shape[1], "tracing")
    ids = tokens[0].tolist()
    begin, end = subject_span(model, ids, prompt, subject)
    chosen_id = None if answer is None else answer_token(model, answer)
    std = embedding_std(model) if noise_std is None else float(noise_std)

    runner = BlockRunner(model, tokens)
    clean_hidden = model.bridge.ln_final(runner.resid[model.n_layers][:, -1])
    with torch.no_grad():
        clean_logp = model.logits_from_hidden(clean_hidden).float().log_softmax(-1)[0]
    answer_id = int(clean_logp.argmax()) if chosen_id is None else chosen_id
    clean_prob = float(clean_logp[answer_id].exp())

    eps = make_noise(samples, end - begin, model.d_model, noise * std, seed)
    x0 = runner.resid[0].repeat(samples, 1, 1)
    x0[:, begin:end] += eps.to(x0.device, x0.dtype)
    corrupted = runner.run(0, x0, keep=True)
    corrupted_prob = float(answer_probs(model, corrupted.hidden, answer_id).mean())
    return Setup(model, prompt, subject, target_true, ids, begin, end, std, runner, answer_id, clean_prob,
                 chosen_id is not None, x0, corrupted, corrupted_prob)
