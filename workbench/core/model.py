"""The shared model object: a TransformerLens bridge, its tokenizer and role map.

Example:
    >>> import workbench as wb
    >>> model = wb.load_model("tiny-llama")
    >>> model.n_layers
    4
"""

from __future__ import annotations

import hashlib
import json
import logging
import numbers
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench.core.architecture import Roles, check_roles, roles_for
from workbench.errors import WorkbenchError
from workbench.core.loading import DEFAULT_MODEL, load_hf

T = TypeVar("T")


class StopForward(Exception):
    """Raised from a hook once a forward pass has given what it was run for.

    The caller catches it around the forward call; the blocks above the hook are
    skipped (statistics, key capture, key contexts read only early layers).
    """


class Memo:
    """What is computed from a model and kept on it, in one typed store (``Model.memo``).

    A key is a tuple whose first element names the kind of thing held (``"ridge_factor"``,
    ``"null_projector"``, ``"bf16"``, ``"stop_ids"``); the rest says what it was made from.
    An entry may carry a ``stamp``: when the stamp given to :meth:`get` differs from the one
    it was built under (a weight written in place or replaced), it is built again. Things
    computed from the unedited weights (C, its factor, its projector) or from the tokenizer
    need no stamp: no edit changes them.

    Example:
        >>> memo = Memo()
        >>> memo.get(("square", 3), lambda: 9)
        9
        >>> memo.get(("square", 3), lambda: 0)          # kept: not built again
        9
        >>> memo.get(("w",), lambda: 1, stamp=1), memo.get(("w",), lambda: 2, stamp=2)
        (1, 2)
        >>> sorted(memo.keys())
        [('square', 3), ('w',)]
    """

    def __init__(self) -> None:
        self._held: dict[Hashable, tuple[Hashable, Any]] = {}

    def get(self, key: Hashable, build: Callable[[], T], *, stamp: Hashable = None) -> T:
        """The value kept under ``key``; ``build()`` makes (and keeps) it if there is none,
        or if the one there was made under another ``stamp``."""
        held = self._held.get(key)
        if held is None or held[0] != stamp:
            held = (stamp, build())
            self._held[key] = held
        return held[1]

    def keys(self, kind: str | None = None) -> Iterator[Hashable]:
        """The keys held (only those of ``kind``, the first element of a tuple key, if given)."""
        return iter([k for k in self._held if kind is None or (isinstance(k, tuple) and k[:1] == (kind,))])

    def clear(self, kind: str | None = None) -> None:
        """Forget everything held, or only the entries of ``kind``."""
        for k in list(self.keys(kind)):
            del self._held[k]

    def __contains__(self, key: Hashable) -> bool:
        return key in self._held

    def __len__(self) -> int:
        return len(self._held)

    def __repr__(self) -> str:
        return f"Memo({len(self)} entries)"


@dataclass
class Model:
    """A loaded language model, ready for hooks and edits.

    Attributes:
        name: what the user asked for (``"gemma-3-270m"``, a Hub id, a folder).
        bridge: the TransformerLens ``TransformerBridge``; all hooks go through it.
        tokenizer: the Hugging Face tokenizer.
        roles: where residual stream, FFN keys/values, norms live (see ``architecture``).
        fingerprint: a hash of the weights as loaded; saved edits check it.
        load_seconds: wall time of :func:`load_model`.
    """

    name: str
    bridge: object
    tokenizer: object
    roles: Roles
    fingerprint: str
    load_seconds: float = 0.0
    #: No-weight edits (in-context, retrieval) currently applied: objects with a
    #: ``rewrite(prompt) -> prompt`` method, applied in order by :meth:`contextualize`.
    prompt_edits: list = field(default_factory=list)
    #: The editing layer's applied edits, oldest first (kept here so every caller sees one
    #: history); read it through ``workbench.editing.active_edits``.
    edit_stack: list = field(default_factory=list)
    #: the ``device_map`` it was loaded with (None: one device); parallel workers load it alike.
    device_map: object = None
    #: What is computed from the model and kept on it (C's Cholesky factors, AlphaEdit's
    #: null-space projectors, bfloat16 weight copies, generation's stop ids): see :class:`Memo`.
    memo: Memo = field(default_factory=Memo, repr=False, compare=False)

    @property
    def hf_model(self):
        """The underlying Hugging Face module (shares weights with the bridge)."""
        return self.bridge.original_model

    @property
    def cfg(self):
        return self.bridge.cfg

    @property
    def n_layers(self) -> int:
        return int(self.bridge.cfg.n_layers)

    @property
    def d_model(self) -> int:
        return int(self.bridge.cfg.d_model)

    @property
    def d_mlp(self) -> int:
        return int(self.bridge.cfg.d_mlp)

    @property
    def n_ctx(self) -> int:
        return int(self.bridge.cfg.n_ctx)

    @property
    def device(self) -> torch.device:
        return next(self.hf_model.parameters()).device

    @property
    def cache_kwarg(self) -> str:
        """The keyword under which the HF base model takes a KV cache.

        transformers >= 5.2x names it ``cache`` (``past_key_values`` still works, with a warning).
        """
        import inspect

        params = inspect.signature(self.hf_model.base_model.forward).parameters
        return "cache" if "cache" in params else "past_key_values"

    def __repr__(self) -> str:
        return (
            f"Model({self.name!r}, family={self.roles.family}, layers={self.n_layers}, "
            f"d_model={self.d_model}, d_mlp={self.d_mlp})"
        )

    def contextualize(self, prompt: str) -> str:
        """The prompt the model actually reads, after any active no-weight edits.

        Weight edits need nothing here; in-context and retrieval edits prepend
        text. :func:`~workbench.probing.probe` and ``generate`` call this, so those
        baselines are probed exactly like weight edits.
        """
        for edit in self.prompt_edits:
            prompt = edit.rewrite(prompt)
        return prompt

    def is_unedited(self) -> bool:
        """True while no edit is applied: the weights are the fingerprinted ones and nothing
        rewrites prompts or hooks the forward pass (what may reuse results kept on disk).

        Example:
            >>> model.is_unedited()
            True
        """
        return not self.edit_stack and not self.prompt_edits

    # -- tokens ---------------------------------------------------------------------
    def encode(self, text: str, *, prompt: bool = True) -> list[int]:
        """Token ids of ``text``. A prompt gets the tokenizer's usual specials (BOS);
        a continuation (a target object) gets none."""
        ids = self.tokenizer(text, add_special_tokens=prompt)["input_ids"]
        return list(ids)

    def tokens(self, text: str) -> Int[Tensor, "1 pos"]:
        """A prompt as a ``[1, pos]`` tensor on the model's device."""
        ids = self.encode(text)
        if len(ids) > self.n_ctx:
            raise WorkbenchError(
                f"prompt is {len(ids)} tokens long, more than the model's context of {self.n_ctx}"
            )
        return torch.tensor([ids], device=self.device)

    def str_tokens(self, ids) -> list[str]:
        """Each token id decoded on its own (what the figures label rows with)."""
        if isinstance(ids, Tensor):
            ids = ids.flatten().tolist()
        return [self.tokenizer.decode([i]) for i in ids]

    def layer_index(self, layer: int) -> int:
        """Validate ``layer`` (negative counts from the end); return it non-negative."""
        if not isinstance(layer, numbers.Integral) or isinstance(layer, bool):
            raise WorkbenchError(f"layer must be a whole number, got {layer!r}")
        layer = int(layer)
        if not -self.n_layers <= layer < self.n_layers:
            raise WorkbenchError(
                f"layer {layer} is out of range: {self.name} has layers 0..{self.n_layers - 1}"
            )
        return layer % self.n_layers

    # -- reading the residual stream ---------------------------------------------------
    def hidden(
        self, tokens: Int[Tensor, "batch pos"], attention_mask: Tensor | None = None
    ) -> Float[Tensor, "batch pos d_model"]:
        """Final hidden states (after the final norm), without computing logits.

        Runs the Hugging Face base model, whose submodules the bridge has replaced
        with hooked components, so hooks added with ``bridge.hooks(...)`` fire.
        Skipping the unembedding of every position matters: Gemma's vocabulary
        has 262k entries.
        """
        out = self.hf_model.base_model(input_ids=tokens, attention_mask=attention_mask)
        return out.last_hidden_state

    def run_for_hooks(self, tokens: Int[Tensor, "batch pos"], attention_mask: Tensor | None = None) -> None:
        """Run the forward pass only for what its hooks record; a hook may end it with :class:`StopForward`.

        To read activations use :func:`workbench.core.activations.capture`, which is built on this.

        Example:
            >>> def grab(acts, hook=None):
            ...     got.append(acts); raise StopForward      # the layers above are not needed
            >>> with model.bridge.hooks(fwd_hooks=[("blocks.2.hook_resid_post", grab)]):  # doctest: +SKIP
            ...     model.run_for_hooks(ids)
        """
        try:
            self.hidden(tokens, attention_mask)
        except StopForward:
            pass

    def logits_from_hidden(self, hidden: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_vocab"]:
        """Unembed final (normed) hidden states, with the family's logit soft-cap if any."""
        logits = self.bridge.unembed(hidden)
        cap = getattr(self.hf_model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def unembed(self, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_vocab"]:
        """Logits of raw residual-stream vectors: final norm, then unembedding (logit lens)."""
        return self.logits_from_hidden(self.bridge.ln_final(resid))

    def logits(self, tokens: Int[Tensor, "batch pos"], **kwargs) -> Float[Tensor, "batch pos d_vocab"]:
        """Plain forward pass without gradients (all positions)."""
        with torch.no_grad():
            return self.bridge(tokens, **kwargs)

    # -- weights -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Tensor]:
        """The underlying weights, by Hugging Face name (what an edit changes)."""
        return self.hf_model.state_dict()


def _fingerprint(name: str, hf_model) -> str:
    """Hash of the config and a strided sample of every weight tensor.

    Cheap (a few ms) yet different for any two real models; the sample is strided so
    that a change anywhere in a tensor's storage layout would show.
    """
    h = hashlib.sha256()
    # Leave out where the weights were read from and which transformers wrote the
    # config: the same weights must fingerprint the same on every machine.
    config = {
        k: v for k, v in hf_model.config.to_dict().items()
        if not k.startswith("_") and k not in ("transformers_version", "dtype", "torch_dtype")
    }
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    for key, tensor in sorted(hf_model.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // 4096)
        h.update(key.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(flat[::step].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _say_it_adds_bos(tokenizer) -> None:
    """Record ``add_bos_token=True`` on a tokenizer that already prepends BOS.

    TransformerLens's bridge wants a tokenizer that adds BOS; when the tokenizer's own
    settings do not say so, it loads the tokenizer again from disk with the flag set (about
    5 s for Gemma's 262k vocabulary, on every load). Saying what this one already does lets
    the bridge keep it. A tokenizer that does not prepend BOS is left alone (the bridge then
    makes its own, as before), so no model's tokenization changes.
    """
    bos = getattr(tokenizer, "bos_token_id", None)
    init = getattr(tokenizer, "init_kwargs", None)
    if bos is None or not isinstance(init, dict) or init.get("add_bos_token") is not None:
        return
    ids = tokenizer("a")["input_ids"]
    if ids and ids[0] == bos:
        init["add_bos_token"] = True


def _forward_cache_kwarg(module, args, kwargs):
    if kwargs.get("cache") is not None and kwargs.get("past_key_values") is None:
        kwargs["past_key_values"] = kwargs["cache"]
    return args, kwargs


def _pass_kv_cache_to_attention(bridge) -> None:
    """Let cached generation work with transformers >= 5.2x.

    Newer transformers hand the KV cache to attention as ``cache=``, while the
    bridge's attention components read ``past_key_values=``; without this the
    cache stays empty and greedy decoding degenerates (each step sees one token).
    Measured after the fix: cached and uncached next-token logits agree to 3e-5.
    """
    for block in getattr(bridge, "blocks", []):
        attn = getattr(block, "attn", None)
        if attn is not None:
            attn.register_forward_pre_hook(_forward_cache_kwarg, with_kwargs=True)


def load_model(
    name: str = DEFAULT_MODEL,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    device_map: str | dict | None = None,
) -> Model:
    """Load a model by name and wrap it in a TransformerLens bridge.

    Args:
        name: ``"gemma-3-270m"`` (default), ``"smollm2-135m"``, ``"tiny-gemma3"``,
            ``"tiny-llama"``, a Hugging Face id or a local folder.
        device: where to put the model (default: CUDA if available, else CPU).
        dtype: weight dtype; float32 keeps edits and reverts exact.
        device_map: multi-device placement passed through to accelerate
            (``"auto"``, ``"balanced"``, a dict); excludes ``device``.

    Returns:
        A :class:`Model`.

    Raises:
        UnknownModelError: the name is not built in, not a folder, and not reachable.

    Example:
        >>> model = load_model("tiny-gemma3")
        >>> model.roles.family
        'gemma3_text'
    """
    if device is not None and device_map is not None:
        raise WorkbenchError("give either device or device_map, not both")
    from transformer_lens.model_bridge import TransformerBridge

    start = time.perf_counter()
    hf_model, tokenizer, source = load_hf(name, dtype=dtype, device_map=device_map)
    if not getattr(hf_model.config, "architectures", None):
        hf_model.config.architectures = [type(hf_model).__name__]
    if device is None and device_map is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device is not None:
        hf_model.to(device)
    fingerprint = _fingerprint(name, hf_model)
    _say_it_adds_bos(tokenizer)
    # TransformerLens logs a deprecation line per boot; keep notebooks clean.
    logging.getLogger("transformer_lens").setLevel(logging.ERROR)
    bridge = TransformerBridge.boot_transformers(
        source, hf_model=hf_model, tokenizer=tokenizer, dtype=dtype,
        **({"device": device} if device is not None else {}),
    )
    bridge.eval()
    roles = roles_for(hf_model.config.model_type, bridge)
    check_roles(bridge, roles)
    _pass_kv_cache_to_attention(bridge)
    for param in bridge.parameters():
        # Edits write weights under no_grad; gradients are switched on per call when needed.
        param.requires_grad_(False)
    return Model(
        name=name, bridge=bridge, tokenizer=tokenizer, roles=roles,
        fingerprint=fingerprint, load_seconds=time.perf_counter() - start, device_map=device_map,
    )
